"""Types shared by every proposer: what a proposer is told, and what it hands back.

A proposer only proposes. Validation (budget, allowlist, code policy) is the lead's
`recursive.validate`, run afterwards on every candidate, whichever backend wrote it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

# xgrammar's any_whitespace=False layout with these separators is compact JSON, the same
# layout json.dumps(..., separators=SEPARATORS) writes.
SEPARATORS = (",", ":")

# Plan field order. The constrained decoder emits keys in this order, and `plan_text`
# renders stored plans the same way, so a successor trained on the research record sees
# plans in exactly the form it will later be asked to write.
PLAN_KEYS = ("schema_version", "model", "data", "hparams", "code", "rationale")
MODEL_KEYS = ("num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size", "context", "tie_embeddings", "init")
HPARAM_KEYS = (
    "optimizer", "lr", "warmup_steps", "batch_size", "steps",
    "weight_decay", "grad_clip", "seed", "distill_weight", "distill_temperature",
)


@dataclass
class ProposalContext:
    """Everything a proposer may know when it writes the plan of generation `generation`."""

    generation: int  # the generation being proposed (the child), >= 1
    attempt: int  # 1-based attempt within that generation
    parent: dict[str, Any]  # {"generation", "params", "model": ModelSpec dict, "metrics": nested dict}
    seed_plan: dict[str, Any]  # the human seed plan, Plan.model_dump(mode="json")
    parent_plan: dict[str, Any]  # the parent's plan, same shape
    sources: dict[str, str]  # registered data source -> one-line description
    budget: dict[str, Any]  # {"param_ratio", "max_params", "max_train_tokens", "vocab_size"}
    memory: list[dict[str, Any]] = field(default_factory=list)  # earlier attempts, oldest first
    feedback: list[str] = field(default_factory=list)  # gate reasons of the last failed attempt
    recipe_api: str = ""  # one paragraph on the recipe functions
    base: dict[str, Any] | None = None  # the lineage's family config (model=pretrained); None: built-in Llama
    outcome_request: str | None = None  # "OUTCOME: <this>" before "PLAN: " (prompt.BEST_OUTCOME); None: off
    memory_order: str = "worst_to_best"  # memory lines worst to best (OPRO) | "chronological"


@dataclass
class Candidate:
    """One proposed plan as the proposer produced it (not yet validated)."""

    index: int
    text: str  # raw decoded text (JSON for self/openai)
    plan: dict[str, Any] | None  # json.loads(text), or None when it did not parse (see error)
    logprob: float  # sum of log-probs of the sampled tokens under the proposer (0.0 for random/fixed)
    n_tokens: int
    seconds: float
    error: str | None = None


@runtime_checkable
class Proposer(Protocol):
    name: str

    def propose(self, ctx: ProposalContext, k: int, seed: int) -> list[Candidate]:
        """Return k candidates (index 0..k-1); same ctx and seed -> same candidates."""
        ...


def ordered_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """Return `plan` with keys in schema order (mixture keys sorted); unknown keys are kept
    at the end so that nothing is silently dropped."""

    def order(d: Any, keys: tuple[str, ...]) -> Any:
        if not isinstance(d, dict):
            return d
        out = {k: d[k] for k in keys if k in d}
        out.update({k: v for k, v in d.items() if k not in out})
        return out

    out = order(plan, PLAN_KEYS)
    if isinstance(out.get("model"), dict):
        out["model"] = order(out["model"], MODEL_KEYS)
    if isinstance(out.get("hparams"), dict):
        out["hparams"] = order(out["hparams"], HPARAM_KEYS)
    data = out.get("data")
    if isinstance(data, dict) and isinstance(data.get("mixture"), dict):
        out["data"] = {**data, "mixture": dict(sorted(data["mixture"].items()))}
    return out


def _sort_all(x: Any) -> Any:
    return {k: _sort_all(x[k]) for k in sorted(x)} if isinstance(x, dict) else x


def _render(x: Any) -> str:
    if isinstance(x, dict):
        return "{" + SEPARATORS[0].join(json.dumps(str(k), ensure_ascii=False) + SEPARATORS[1] + _render(v)
                                        for k, v in x.items()) + "}"
    if isinstance(x, list):
        return "[" + SEPARATORS[0].join(_render(v) for v in x) + "]"
    if isinstance(x, float) and math.isfinite(x) and "e" in repr(x):
        # json.dumps writes 1e-05; the grammar of a bounded number has no exponent
        return format(Decimal(repr(x)), "f")
    return json.dumps(x, ensure_ascii=False)


def plan_text(plan: dict[str, Any], *, sort_keys: bool = False) -> str:
    """A plan in the constrained decoder's layout: compact separators, floats without
    exponent, keys in schema order (or all sorted, matching a decoder built with
    sort_keys=True). With sort_keys=True it equals json.dumps(plan, sort_keys=True,
    separators=(",", ":")) except for floats below 1e-4 and non-ASCII text. The research
    record should render plans this way after "PLAN: ", so the successor learns the
    layout it has to emit (a multi-line `code` comes out with \n escapes, which the
    decoder's one-line code field cannot produce)."""
    return _render(_sort_all(plan) if sort_keys else ordered_plan(plan))
