"""Fixed baseline: the human seed recipe, applied to a smaller copy of the parent.

This answers "does the model beat simply re-running the seed recipe?". Its architecture
is the parent's, shrunk by a fixed rule until it fits the parameter budget; data,
hyperparameters and code are the seed plan's. With budget.equal_compute the FFN width is
then set so that the count lands on the generation's target, and steps so that the
tokens are the target's exactly.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from recursive.plan import ModelSpec, count_params
from recursive.train.families import hidden_size

from .base import Candidate, ProposalContext, plan_text

_HEAD_DIMS = (16, 32, 64, 128)


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def shrink_to_budget(parent: dict[str, Any], max_params: int, vocab_size: int,
                     base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Shrink the parent's ModelSpec dict deterministically until count_params <= max_params.

    One move per iteration, the first that applies: cut the FFN by a quarter (to a
    multiple of 16) down to 2x hidden; drop layers down to half the parent's; drop query
    heads down to half the parent's (kv heads follow so they still divide); then the same
    moves without the floors; halve head_dim; tie the embeddings. Depth and width shrink
    together instead of collapsing to a 1-layer model, roughly as a human would scale
    down. If nothing applies the smallest spec is returned and validation rejects it.
    """
    spec = dict(parent)
    p_layers, p_heads, p_kv = parent["num_layers"], parent["num_heads"], parent["num_kv_heads"]

    def size(s: dict[str, Any]) -> int:
        return count_params(ModelSpec.model_validate(s), vocab_size, base)

    def heads_down(s: dict[str, Any]) -> None:
        s["num_heads"] -= 1
        s["num_kv_heads"] = _largest_divisor(s["num_heads"], min(s["num_kv_heads"], p_kv))

    while size(spec) > max_params:
        hidden = hidden_size(base, spec)
        ffn_cut = max(16, (spec["intermediate_size"] * 3 // 4) // 16 * 16)
        if spec["intermediate_size"] > 2 * hidden:
            spec["intermediate_size"] = max(ffn_cut, 2 * hidden)
        elif spec["num_layers"] > max(1, p_layers // 2):
            spec["num_layers"] -= 1
        elif spec["num_heads"] > max(1, p_heads // 2):
            heads_down(spec)
        elif spec["intermediate_size"] > 16:
            spec["intermediate_size"] = ffn_cut if ffn_cut < spec["intermediate_size"] else 16
        elif spec["num_layers"] > 1:
            spec["num_layers"] -= 1
        elif spec["num_heads"] > 1:
            heads_down(spec)
        elif spec["head_dim"] > _HEAD_DIMS[0]:
            spec["head_dim"] = max(d for d in _HEAD_DIMS if d < spec["head_dim"])
        elif not spec["tie_embeddings"]:
            spec["tie_embeddings"] = True
        else:
            break
    return spec


def fit_to_target(spec: dict[str, Any], target: dict[str, Any], vocab_size: int,
                  base: dict[str, Any] | None = None) -> dict[str, Any]:
    """budget.equal_compute: the FFN width of `spec` (already shrunk to at most target["hi"])
    that puts its parameter count nearest target["params"] inside [lo, hi] (the count is
    linear in the FFN width); `spec` unchanged when no width lands there (validation says so)."""
    from .schema import _ffn_range
    spec = dict(spec)
    args = (spec["num_layers"], spec["num_heads"], spec["num_kv_heads"], spec["head_dim"], spec["tie_embeddings"],
            vocab_size)
    band = _ffn_range(*args, (int(target["lo"]), int(target["hi"])), base)
    if band is None or max(16, band[0]) > min(32768, band[1]):
        return spec
    lo, hi = max(16, band[0]), min(32768, band[1])
    best = _ffn_range(*args, (int(target["params"]), 2**62), base)  # smallest width at or over the target
    spec["intermediate_size"] = min(hi, max(lo, best[0] if best else lo))
    return spec


def _exact_steps(hparams: dict[str, Any], context: int, tokens: int, batch_multiple: int = 1) -> dict[str, Any]:
    """The seed hyperparameters with steps (and, only if it must, batch size) hitting `tokens`."""
    from .schema import exact_token_shapes
    h = dict(hparams)
    shapes = exact_token_shapes(tokens, context, batch_multiple)
    if shapes:
        b, steps = min(shapes, key=lambda s: (s[0] != h["batch_size"], abs(s[0] - h["batch_size"])))
        h["batch_size"], h["steps"] = b, steps
        h["warmup_steps"] = min(h["warmup_steps"], steps)
    return h


class FixedProposer:
    """The seed plan's data, hparams and code with the parent's architecture shrunk to the
    budget. Returns k identical candidates (indices 0..k-1), so callers that expect k get
    k; picking any of them is the same."""

    name = "fixed"

    def propose(self, ctx: ProposalContext, k: int, seed: int) -> list[Candidate]:
        """k copies of the fixed plan; `seed` is ignored (the plan is deterministic)."""
        t0 = time.perf_counter()
        vocab = int(ctx.budget["vocab_size"])
        parent_params = int(ctx.parent.get("params") or count_params(
            ModelSpec.model_validate(ctx.parent["model"]), vocab, ctx.base))
        limit = int(ctx.budget["param_ratio"] * parent_params)
        if ctx.budget.get("max_params"):
            limit = min(limit, int(ctx.budget["max_params"]))
        target = ctx.budget.get("equal_compute") or None
        if target:  # budget.equal_compute: the generation's parameter count, whatever the parent's
            limit = min(limit, int(target["hi"]))
        model = shrink_to_budget(ctx.parent["model"], limit, vocab, ctx.base)
        if target:
            model = fit_to_target(model, target, vocab, ctx.base)
        seed_plan = ctx.seed_plan
        plan = {
            "schema_version": 1,
            # the seed recipe trains from scratch
            "model": {**model, "init": "scratch"},
            "data": copy.deepcopy(seed_plan["data"]),
            "hparams": copy.deepcopy(seed_plan["hparams"]),
            "code": seed_plan["code"],
            "rationale": "fixed seed recipe",
        }
        # the seed's steps at the child's context may exceed the token budget (a checkpoint's
        # context is not the seed plan's): fewer steps, the same recipe
        h, per_step = plan["hparams"], plan["hparams"]["batch_size"] * plan["model"]["context"]
        if target:  # the seed recipe's tokens, exactly, at the child's context
            plan["hparams"] = _exact_steps(h, plan["model"]["context"], int(target["tokens"]),
                                           int(ctx.budget.get("batch_multiple") or 1))
        elif ctx.budget.get("max_train_tokens") and h["steps"] * per_step > int(ctx.budget["max_train_tokens"]):
            h["steps"] = max(1, int(ctx.budget["max_train_tokens"]) // per_step)
            h["warmup_steps"] = min(h["warmup_steps"], h["steps"])
        text, secs = plan_text(plan), time.perf_counter() - t0
        return [Candidate(index=i, text=text, plan=copy.deepcopy(plan), logprob=0.0,
                          n_tokens=0, seconds=secs) for i in range(k)]
