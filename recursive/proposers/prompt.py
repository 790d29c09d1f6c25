"""The text a proposer model reads before it writes a plan.

Small models have short contexts, so the prompt is compact and fitted to `max_chars`:
the parent card, budget, data catalogue and recipe API come first, then as much of the
lineage's memory as fits (the best and the worst earlier outcomes are always kept), then
always the gate feedback of the last failed attempt, and finally the markers.

Outcome conditioning (decision transformers; BONET, Krishnamoorthy et al. 2022): every
earlier attempt has an outcome label (`outcome_label`: the gate's verdict and, for a
promoted child, its held-out-loss gain over its parent in bins), and the research record
the successor trains on puts that label *before* the plan. With `ctx.outcome_request` set
(`proposer.outcome_conditioning`), the prompt ends "\\nOUTCOME: <best bin>\\nPLAN: ": it
asks for a plan of the best outcome. Without it, it ends "\\nPLAN: " as before. Memory
lines are ordered worst to best with their scores (OPRO, Yang et al. 2023) or oldest
first (`proposer.memory_order`).

The prompt ends with PLAN_MARKER ("\\nPLAN: "), so a record document is the stored prompt
with its requested outcome replaced by the real one, then `base.plan_text(plan)`
(recursive/data/sources.py format_research_record; plan_text is the decoder's layout).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .base import ProposalContext

if TYPE_CHECKING:
    from recursive.attempt import AttemptRecord

PLAN_MARKER = "\nPLAN: "
OUTCOME_MARKER = "\nOUTCOME: "
GAIN_BINS = (0.10, 0.03, 0.0)
"""Held-out-loss gain of a promoted child over its parent, (parent - child) / parent, in
bins from the best down; below the last bin a promoted child is "no gain"."""
BEST_OUTCOME = f"promoted, gain >={GAIN_BINS[0]:.0%}"
MEMORY_ORDERS = ("worst_to_best", "chronological")


def outcome_label(status: str, loss: float | None, parent_loss: float | None, reasons: list | None = None) -> str:
    """The outcome bin of a decided attempt, as the record and the prompt write it:
    "promoted, gain >=10%" | "promoted, gain 3-10%" | "promoted, gain 0-3%" |
    "promoted, no gain" | "promoted" (no losses to compare) | "rejected: <gate reasons>" |
    "failed: <error>"."""
    if status != "promoted":
        why = "; ".join(str(r) for r in (reasons or []))[:160]
        return f"{status}: {why}" if why else status
    if loss is None or parent_loss is None or not (math.isfinite(loss) and math.isfinite(parent_loss)) \
            or parent_loss <= 0:
        return "promoted"
    gain = (parent_loss - loss) / parent_loss
    hi = None
    for lo in GAIN_BINS:
        if gain >= lo:
            return f"promoted, gain >={lo:.0%}" if hi is None else f"promoted, gain {lo * 100:.0f}-{hi:.0%}"
        hi = lo
    return "promoted, no gain"


def heldout(metrics: dict) -> float | None:
    """The promoted-model score outcomes are binned on: mean held-out loss, if finite."""
    v = (metrics.get("heldout_loss") or {}).get("mean")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def outcome_of(e: AttemptRecord, records: list[AttemptRecord]) -> str:
    """`prompt.outcome_label` of a decided attempt: its verdict, and for a promoted child
    the held-out gain over its parent (the promoted model of the generation before)."""
    parent = next((r for r in records if r.generation == e.generation - 1 and r.status == "promoted"), None)
    return outcome_label(e.status, heldout(e.metrics), None if parent is None else heldout(parent.metrics),
                         [] if e.status == "promoted" else e.reasons)


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics -> {"a.b": value}, numeric leaves only, keys sorted."""
    out: dict[str, float] = {}
    for key in sorted(metrics):
        value, name = metrics[key], f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_metrics(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _loss(metrics: dict[str, Any]) -> float | None:
    """Mean of every metric whose name mentions "loss" (lower is better), if any."""
    vals = [v for k, v in flatten_metrics(metrics or {}).items() if "loss" in k and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def outcome_score(entry: dict[str, Any]) -> tuple[int, float]:
    """Rank of an earlier attempt: promoted beats anything else, then lower mean loss."""
    loss = _loss(entry.get("metrics") or {})
    return (1 if entry.get("status") == "promoted" else 0, -loss if loss is not None else -math.inf)


def _arch(m: dict[str, Any]) -> str:
    # heads=q/kv; memory lines repeat this, so it is terse
    return (f"layers={m.get('num_layers')} heads={m.get('num_heads')}/{m.get('num_kv_heads')} "
            f"hd={m.get('head_dim')} ffn={m.get('intermediate_size')} ctx={m.get('context')}"
            + (" tied" if m.get("tie_embeddings") else ""))


_HP_SHORT = {"optimizer": "", "lr": "lr", "batch_size": "bs", "steps": "steps", "distill_weight": "distill"}


def _plan_summary(plan: dict[str, Any]) -> str:
    m, hp = plan.get("model") or {}, plan.get("hparams") or {}
    mix = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(((plan.get("data") or {}).get("mixture") or {}).items()))
    hps = " ".join((f"{short}=" if short else "") + (_fmt(hp[k]) if isinstance(hp[k], float) else str(hp[k]))
                   for k, short in _HP_SHORT.items() if k in hp)
    return f"{_arch(m)}; {mix}; {hps}"


def _memory_line(entry: dict[str, Any], tag: str) -> str:
    loss = _loss(entry.get("metrics") or {})
    outcome = entry.get("outcome")
    head = f"g{entry.get('generation')}.{entry.get('attempt')} {entry.get('status')}{tag}"
    if outcome and entry.get("status") == "promoted" and outcome != "promoted":
        head += outcome[len("promoted"):]  # ", gain 3-10%"
    if loss is not None:
        head += f" loss={_fmt(loss)}"
    reasons = "; ".join(entry.get("gate_reasons") or [])[:160]
    return f"- {head}: {_plan_summary(entry.get('plan') or {})}" + (f" | {reasons}" if reasons else "")


def _core(ctx: ProposalContext, recipe: int | None, desc: int | None, metrics: int | None) -> str:
    """Header, parent card, budget, catalogue, recipe API; None = untruncated, 0 = drop."""
    p, b = ctx.parent, ctx.budget
    mets = " ".join(f"{k}={_fmt(v)}" for k, v in flatten_metrics(p.get("metrics") or {}).items())
    lines = [
        f"Propose the training plan of generation {ctx.generation} (attempt {ctx.attempt}).",
        f"PARENT gen {p.get('generation')}: params={p.get('params')}; {_arch(p.get('model') or {})}",
    ]
    if mets and metrics != 0:
        lines.append(f"METRICS: {mets[:metrics] if metrics else mets}")
    limit = int(b["param_ratio"] * int(p.get("params") or 0))
    lines.append(f"BUDGET: params<={limit} ({b['param_ratio']}x parent, max {b.get('max_params')}); "
                 f"steps*batch*ctx<={b['max_train_tokens']} tokens; vocab={b.get('vocab_size')}")
    if desc == 0:
        lines.append("SOURCES: " + ", ".join(sorted(ctx.sources)))
    else:
        lines.append("SOURCES: " + "; ".join(
            f"{n}: {ctx.sources[n][:desc] if desc else ctx.sources[n]}" for n in sorted(ctx.sources)))
    if ctx.recipe_api and recipe != 0:
        lines.append(f"RECIPE: {ctx.recipe_api[:recipe] if recipe else ctx.recipe_api}")
    return "\n".join(lines)


# Ever shorter renderings of the fixed part, tried in order until the prompt fits.
_LEVELS = ((None, None, None), (300, 80, 300), (120, 40, 160), (0, 0, 80), (0, 0, 0))


def build_prompt(ctx: ProposalContext, max_chars: int = 1500) -> str:
    """The proposer's prompt for `ctx`, at most `max_chars` long, ending with "PLAN: "
    (after "OUTCOME: <requested>" when ctx.outcome_request is set).

    Deterministic. The parent's params, every source name, the feedback of the last failed
    attempt and the markers are always kept; the recipe text, source descriptions, metrics
    and then memory are shortened or dropped to fit (best and worst earlier outcome first,
    then the most recent others). The memory lines kept are printed worst to best
    (ctx.memory_order "worst_to_best") or oldest first ("chronological")."""
    feedback = ""
    if ctx.feedback:
        feedback = "\nFEEDBACK (last attempt failed):\n" + "\n".join(f"- {r[:200]}" for r in ctx.feedback)
    tail = feedback + (OUTCOME_MARKER + ctx.outcome_request if ctx.outcome_request else "") + PLAN_MARKER
    mem = list(enumerate(ctx.memory))
    ranked = sorted(mem, key=lambda ie: (outcome_score(ie[1]), ie[0]))
    tags: dict[int, str] = {}
    if ranked:
        tags[ranked[-1][0]] = " [best]"
        tags.setdefault(ranked[0][0], " [worst]")
    lines = {i: _memory_line(e, tags.get(i, "")) for i, e in mem}
    priority = list(tags) + [i for i, _ in reversed(mem) if i not in tags]
    must = sum(len(lines[i]) + 1 for i in tags)
    header = "\nMEMORY (worst to best):" if ctx.memory_order == "worst_to_best" else "\nMEMORY:"
    for level in _LEVELS:
        core = _core(ctx, *level)
        if len(core) + len(tail) + (len(header) + must if tags else 0) <= max_chars:
            break
    chosen: list[int] = []
    used = len(core) + len(tail) + len(header)
    for i in priority:
        room = max_chars - used - 1
        if len(lines[i]) > room and i in tags and room >= 60:
            lines[i] = lines[i][: room - 3] + "..."  # best/worst: a cut line beats none
        if len(lines[i]) <= room:
            chosen.append(i)
            used += len(lines[i]) + 1
    if ctx.memory_order == "worst_to_best":
        rank = {i: r for r, (i, _) in enumerate(ranked)}
        chosen.sort(key=rank.__getitem__)
    else:
        chosen.sort()
    body = core + (header + "".join("\n" + lines[i] for i in chosen) if chosen else "")
    text = body + tail
    if len(text) > max_chars:  # even the shortest core does not fit: cut it, keep the tail
        keep = max(0, max_chars - len(tail) - 4)
        text = (body[:keep] + " ..." + tail)[-max_chars:]
    return text
