"""The text a proposer model reads before it writes a plan.

Small models have short contexts, so the prompt is compact and fitted to `max_chars`:
the parent card, budget, data catalogue and recipe API come first, then as much of the
lineage's memory as fits (the best and the worst earlier outcomes before the rest), then
always the gate feedback of the last failed attempt, and finally the marker "PLAN: ".

The prompt already ends with PLAN_MARKER ("\\nPLAN: "), so a research-record document
that should teach a successor to continue it is
    build_prompt(ctx) + base.plan_text(plan) + "\\nOUTCOME: ..."
(no second marker; plan_text is the decoder's layout).
"""

from __future__ import annotations

import math
from typing import Any

from .base import ProposalContext

PLAN_MARKER = "\nPLAN: "


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
    head = f"g{entry.get('generation')}.{entry.get('attempt')} {entry.get('status')}{tag}"
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
    """The proposer's prompt for `ctx`, at most `max_chars` long, ending with "PLAN: ".

    Deterministic. The parent's params, every source name, the feedback of the last failed
    attempt and the marker are always kept; the recipe text, source descriptions, metrics
    and then memory are shortened or dropped to fit (best and worst earlier outcome first,
    then the most recent others)."""
    feedback = ""
    if ctx.feedback:
        feedback = "\nFEEDBACK (last attempt failed):\n" + "\n".join(f"- {r[:200]}" for r in ctx.feedback)
    tail = feedback + PLAN_MARKER
    mem = list(enumerate(ctx.memory))
    ranked = sorted(mem, key=lambda ie: (outcome_score(ie[1]), ie[0]))
    tags: dict[int, str] = {}
    if ranked:
        tags[ranked[-1][0]] = " [best]"
        tags.setdefault(ranked[0][0], " [worst]")
    lines = {i: _memory_line(e, tags.get(i, "")) for i, e in mem}
    priority = list(tags) + [i for i, _ in reversed(mem) if i not in tags]
    must = sum(len(lines[i]) + 1 for i in tags)
    header = "\nMEMORY:"
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
    body = core + (header + "".join("\n" + lines[i] for i in sorted(chosen)) if chosen else "")
    text = body + tail
    if len(text) > max_chars:  # even the shortest core does not fit: cut it, keep the tail
        keep = max(0, max_chars - len(tail) - 4)
        text = (body[:keep] + " ..." + tail)[-max_chars:]
    return text
