"""The plan space a proposer samples from, as a JSON schema derived from the context.

The schema is narrower than `recursive.plan.Plan` on purpose. A constrained decoder can
only emit what the schema admits, so every key is enumerated and every number bounded
(an unbounded float lets xgrammar emit 200-digit numbers; shared/notes/FACTS.md), and the
bounds are chosen so that most samples also pass `recursive.validate`.

What xgrammar 0.2.8 honours (measured with GrammarMatcher.accept_string, see
tests/proposers/test_schema.py): minimum/maximum and exclusive bounds on integers and on
numbers (bounded numbers get at most 6 fractional digits and no exponent), enum and const
on integers and strings, anyOf of objects, string pattern (regex, with {m,n} counts),
string maxLength. Pattern on a number is ignored, and maxLength next to a pattern is
ignored (with a warning). So floats are bounded directly, with no scaled-integer
workaround. Strings are the trap: a maxLength string admits raw control characters
(tab, 0x01), which strict JSON parsers refuse ("Invalid control character"), and no
backslash escapes at all. So strings are a pattern, printable ASCII except quote and
backslash, {0,n} times: always valid JSON, still bounded, one line (no newlines: a toy
model cannot write a recipe module anyway, and the loop falls back to the parent's).

With `budget.trust_region` set (the default configs do), the space is a region around the
parent's plan rather than the whole budget: lr within lr_factor of the parent's, weight
decay, clipping and mixture weights within `factor`, the token count within
tokens_factor, the parent's optimiser. Architecture keeps at least min_param_ratio ** (1/3) of each
parent dimension (half when no min_param_ratio is set) either way.

Cross-field rules of the validator are expressed with anyOf, which xgrammar tracks
jointly while decoding (a branch is settled by the first field that differs):
  - num_kv_heads divides num_heads: one `model` branch per num_heads value;
  - the token budget: one whole-plan branch per context, and inside it one `hparams`
    branch per batch size (powers of two, 1..64) with
    steps <= max_train_tokens // (batch_size * context).
warmup_steps comes before steps, so warmup <= steps can only be made likely (warmup is
bounded by a tenth of the largest steps);
  - the parameter budget [min_param_ratio, param_ratio] x parent (and max_params): one
    `model` branch per architecture with the FFN widths that land inside it.
Measured on the random proposer (same space), about 4 in 5 samples pass the validator
with the token rule linked, 2 in 5 without.

With budget.equal_compute (`ctx.budget["equal_compute"]`, recursive/validate.py
ComputeTarget), the parameter band is narrowed to the generation's target (within 2%, the
same for every proposer) and the token count is exact: each batch-size branch has the one
`steps` that hits it, and contexts where no batch size does are left out.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .base import ProposalContext

HEAD_DIMS = (16, 32, 64, 128)
CONTEXTS = (64, 128, 256, 512, 1024, 2048, 4096)  # the Plan's Literal values
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
MAX_STEPS = 1_000_000  # Plan bound
MAX_WARMUP = 100_000  # Plan bound
TEXT_CHARS = r"[ -!#-\[\]-~]"  # printable ASCII (0x20-0x7e) minus '"' and '\'
# xgrammar 0.2.8 with its (default) compile cache fails on a regex count above 128
# ("per_rule_fsm_hashes ... has_value() is false"), so long bounds are written as a run
# of {0,<=128} pieces: same language, and it compiles.
TEXT_CHUNK = 128


def _int(lo: int, hi: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": int(lo), "maximum": int(max(lo, hi))}


def _num(lo: float, hi: float) -> dict[str, Any]:
    return {"type": "number", "minimum": lo, "maximum": hi}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def text_schema(max_chars: int) -> dict[str, Any]:
    """A one-line string of printable ASCII without '"' and '\\', at most max_chars long."""
    n, pieces = int(max_chars), []
    while n > 0:
        pieces.append(f"{TEXT_CHARS}{{0,{min(n, TEXT_CHUNK)}}}")
        n -= TEXT_CHUNK
    return {"type": "string", "pattern": "^" + "".join(pieces or [f"{TEXT_CHARS}{{0,0}}"]) + "$"}


def text_max_chars(schema: dict[str, Any]) -> int:
    """The length bound of a `text_schema` (or of a plain maxLength string)."""
    if "pattern" in schema:
        return sum(int(c) for c in re.findall(r"\{0,(\d+)\}", schema["pattern"]))
    return int(schema.get("maxLength", 32))


def _contexts(parent: dict[str, Any]) -> list[int]:
    return [c for c in CONTEXTS if c <= int(parent["context"])] or [CONTEXTS[0]]


def _model_schema(parent: dict[str, Any], contexts: list[int], floor: float = 0.5,
                  band: tuple[int, int] | None = None, vocab_size: int | None = None,
                  base: dict[str, Any] | None = None, pinned: bool = False) -> dict[str, Any]:
    # A successor is a step down, not a leap: each of depth, heads, head width and FFN width
    # keeps at least `floor` of the parent's. With floor = min_param_ratio ** (1/3) the
    # product of the three main factors stays near the budget's [min_param_ratio,
    # param_ratio] band instead of collapsing to a few thousand parameters.
    #
    # With `band` = (lo, hi) parameters and the vocabulary size, the budget is exact: one
    # branch per (num_heads, num_kv_heads, num_layers, head_dim, tie_embeddings), and in it
    # the FFN width range whose parameter count lands in [lo, hi] (the count is linear in
    # the FFN width; recursive.plan.count_params). Branches with no such width are dropped,
    # so every sample has a legal size and a young proposer cannot miss the budget.
    # The lineage's family (train/families.py) fixes what it cannot express: no GQA on
    # GPT-2/GPT-NeoX (num_kv_heads = num_heads), GPT-2's tied head; and `init: prune` is
    # offered only where the child can be cut from the parent (same head width, no
    # dimension larger, whole key/value groups) in a family pruning is implemented for.
    from recursive.train import families
    fam = families.family(base)
    ties = [bool(parent["tie_embeddings"])] if fam.fixed_tie else [False, True]

    def init(n_layers: int, h: int, kv: int, hd: int, ffn_hi: int, tie: bool) -> dict[str, Any]:
        child = {"num_layers": n_layers, "num_heads": h, "num_kv_heads": kv, "head_dim": hd,
                 "intermediate_size": ffn_hi, "tie_embeddings": tie}
        ok = fam.prune and families.prune_refusal(child, {**parent, "num_kv_heads": p_kv}) is None
        return {"enum": ["scratch", "prune"]} if ok else {"const": "scratch"}

    def count(m: dict[str, Any], ffn: int) -> int:
        return _count(m, vocab_size, ffn, base)

    p_layers = min(int(parent["num_layers"]), 48)
    p_heads = min(int(parent["num_heads"]), 64)
    p_kv = max(1, min(int(parent["num_kv_heads"]), p_heads))
    p_ffn = min(int(parent["intermediate_size"]), 32768)
    p_hd = int(parent["head_dim"])
    exact = band is not None and vocab_size is not None
    if exact:
        # the band bounds the total, so each dimension may shrink further (a 3-head parent
        # can have a 2-head child) down to the budget's min_param_ratio of the parent's
        floor = min(floor, max(0.125, float(band[0]) / max(1, count(parent, int(parent["intermediate_size"])))))
    head_dims = [d for d in HEAD_DIMS if floor * p_hd <= d <= p_hd] or [min(HEAD_DIMS, key=lambda d: abs(d - p_hd))]
    layers = _spread(range(max(1, math.ceil(floor * p_layers)), p_layers + 1), 8)
    ffn_lo, ffn_hi = max(16, int(floor * p_ffn)), p_ffn
    if pinned and exact:
        # budget.equal_compute pins the total: the FFN width is what lands an architecture on
        # it, so it may shrink past the floor (else a parent at the top of its band, with one
        # head fewer too small and its own head count needing an FFN under the floor, has no
        # architecture at all)
        ffn_lo = 16
    branches = []
    heads = range(max(1, math.ceil(floor * p_heads)), p_heads + 1)
    for h in (_spread(heads, 8) if exact else heads):
        kvs = [d for d in range(1, min(h, p_kv) + 1) if h % d == 0] if fam.gqa else [h]
        if band is None or vocab_size is None:
            branches.append(_obj({
                "num_layers": _int(min(layers), max(layers)),
                "num_heads": {"const": h},
                "num_kv_heads": {"enum": kvs},
                "head_dim": {"enum": head_dims},
                "intermediate_size": _int(ffn_lo, ffn_hi),
                "context": {"enum": contexts},
                "tie_embeddings": {"const": ties[0]} if len(ties) == 1 else {"type": "boolean"},
                "init": {"const": "scratch"},
            }))
            continue
        for kv in kvs:
            for n_layers in layers:
                for hd in head_dims:
                    for tie in ties:
                        f_range = _ffn_range(n_layers, h, kv, hd, tie, vocab_size, band, base)
                        if f_range is None:
                            continue
                        lo, hi = max(ffn_lo, f_range[0]), min(ffn_hi, f_range[1])
                        if lo > hi:
                            continue
                        branches.append(_obj({
                            "num_layers": {"const": n_layers},
                            "num_heads": {"const": h},
                            "num_kv_heads": {"const": kv},
                            "head_dim": {"const": hd},
                            "intermediate_size": _int(lo, hi),
                            "context": {"enum": contexts},
                            "tie_embeddings": {"const": tie},
                            "init": init(n_layers, h, kv, hd, hi, tie),
                        }))
    if not branches:  # no architecture of the trust region fits the budget: the budget's validator says why
        return _model_schema(parent, contexts, floor, base=base)
    return _any(branches)


def _spread(values: range, n: int) -> list[int]:
    """At most n values of `values`, evenly spread, ends included: keeps the number of exact
    branches bounded for big parents (48 layers x 64 heads would be tens of thousands)."""
    v = list(values)
    if len(v) <= n:
        return v
    return sorted({v[round(i * (len(v) - 1) / (n - 1))] for i in range(n)})


def _count(m: dict[str, Any], vocab: int, ffn: int, base: dict[str, Any] | None = None) -> int:
    if base is not None:
        from recursive.train.families import count
        return count(base, {**m, "intermediate_size": ffn})
    d = int(m["num_heads"]) * int(m["head_dim"])
    kvd = int(m["num_kv_heads"]) * int(m["head_dim"])
    return (int(m["num_layers"]) * (2 * d * d + 2 * d * kvd + 3 * d * ffn + 2 * d)
            + vocab * d * (1 if m["tie_embeddings"] else 2) + d)


def _ffn_range(layers: int, heads: int, kv: int, head_dim: int, tie: bool, vocab: int,
               band: tuple[int, int], base: dict[str, Any] | None = None) -> tuple[int, int] | None:
    """FFN widths whose model has between band[0] and band[1] parameters (count_params):
    the count is linear in the FFN width in every family (train/families.coefficients)."""
    if base is not None:
        from recursive.train.families import base_key, coefficients
        a, b, c = coefficients(base_key(base), heads, kv, head_dim, tie)
        fixed, per_ffn = a + layers * b, layers * c
    else:
        d = heads * head_dim
        fixed = layers * (2 * d * d + 2 * d * kv * head_dim + 2 * d) + vocab * d * (1 if tie else 2) + d
        per_ffn = 3 * d * layers
    lo = max(0, -(-(band[0] - fixed) // per_ffn))
    hi = (band[1] - fixed) // per_ffn
    return (lo, hi) if hi >= lo else None


def _around(value: float, factor: float, lo: float, hi: float) -> tuple[float, float]:
    """[value / factor, value * factor] clipped to [lo, hi] (the trust region of one number)."""
    a, b = max(lo, value / factor), min(hi, value * factor)
    return (a, b) if a <= b else (lo, hi)


def exact_token_shapes(tokens: int, context: int, batch_multiple: int = 1) -> list[tuple[int, int]]:
    """(batch_size, steps) pairs with steps x batch_size x context == tokens exactly, batch
    sizes of BATCH_SIZES that are multiples of batch_multiple (budget.equal_compute)."""
    return [(b, tokens // (b * context)) for b in BATCH_SIZES
            if b % batch_multiple == 0 and tokens % (b * context) == 0 and 1 <= tokens // (b * context) <= MAX_STEPS]


def _hparams_schema(max_tokens: int, context: int, min_tokens: int = 0,
                    parent: dict[str, Any] | None = None, region: dict[str, float] | None = None,
                    parent_tokens: int = 0, batch_multiple: int = 1,
                    exact_tokens: int | None = None) -> dict[str, Any] | None:
    """One branch per batch size. With exact_tokens (budget.equal_compute), only the batch
    sizes whose steps hit the token count exactly, steps a constant; None when no batch size
    does at this context."""
    budget = (max_tokens, min_tokens)
    branches = []
    lr, wd, clip = (0.0001, 0.01), (0.0, 0.3), (0.0, 2.0)
    optimizers = ["adamw", "sgd"]
    if parent is not None and region:
        # trust region around the parent's plan (PBT's "explore" step): a young proposer
        # then mutates a recipe known to work instead of sampling the whole space
        lr = _around(float(parent["lr"]), region["lr_factor"], 1e-5, 0.05)
        wd = _around(float(parent["weight_decay"]), region["factor"], 0.0, 0.3) if parent["weight_decay"] else (0.0, 0.0)
        clip = _around(float(parent["grad_clip"]), region["factor"], 0.0, 2.0) if parent["grad_clip"] else (0.0, 0.0)
        optimizers = [parent["optimizer"]]
        min_tokens = max(min_tokens, int(parent_tokens / region["tokens_factor"]))
        max_tokens = min(max_tokens, int(parent_tokens * region["tokens_factor"]))
    if exact_tokens is not None:  # the trust region's token range gives way to the fixed count
        shapes = exact_token_shapes(exact_tokens, context, batch_multiple)
        return _any([_obj({
            "optimizer": {"enum": optimizers}, "lr": _num(*lr),
            "warmup_steps": _int(0, min(MAX_WARMUP, steps // 10)),
            "batch_size": {"const": b}, "steps": {"const": steps},
            "weight_decay": _num(*wd), "grad_clip": _num(*clip), "seed": _int(0, 1_000_000),
            "distill_weight": _num(0, 1), "distill_temperature": _num(1, 4),
        }) for b, steps in shapes]) if shapes else None
    # every rank gets the same micro-batch: batch_size is a multiple of ranks x grad_accum
    for b in [b for b in BATCH_SIZES if b % batch_multiple == 0] or [batch_multiple]:
        steps_max = max(1, min(MAX_STEPS, max_tokens // (b * context)))
        steps_min = max(1, -(-min_tokens // (b * context)))  # ceil: the budget's min_train_tokens
        if steps_min > steps_max:
            continue
        branches.append(_obj({
            "optimizer": {"enum": optimizers},
            "lr": _num(*lr),
            # warmup precedes steps, so it cannot be bounded by the steps drawn; bounding it
            # by the smallest steps of this branch keeps warmup <= steps (a validator rule)
            "warmup_steps": _int(0, min(MAX_WARMUP, steps_min, steps_max // 10)),
            "batch_size": {"const": b},
            "steps": _int(steps_min, steps_max),
            "weight_decay": _num(*wd),
            "grad_clip": _num(*clip),
            "seed": _int(0, 1_000_000),
            "distill_weight": _num(0, 1),
            "distill_temperature": _num(1, 4),
        }))
    if not branches and parent is not None:  # trust region and budget do not meet: the budget wins
        return _hparams_schema(*budget[:1], context, budget[1], batch_multiple=batch_multiple)
    return _any(branches)


def _any(branches: list[dict[str, Any]]) -> dict[str, Any]:
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def sort_schema_keys(schema: Any) -> Any:
    """The same schema with every object's properties in sorted order (a constrained
    decoder emits properties in schema order)."""
    if isinstance(schema, list):
        return [sort_schema_keys(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: sort_schema_keys(v) for k, v in schema.items()}
    if isinstance(schema.get("properties"), dict) and schema.get("type") == "object":
        out["properties"] = {k: out["properties"][k] for k in sorted(out["properties"])}
        out["required"] = sorted(schema["required"])
    return out


def proposal_schema(ctx: ProposalContext, *, code_max_chars: int = 200, rationale_max_chars: int = 120,
                    sort_keys: bool = False, link_context: bool = True) -> dict[str, Any]:
    """JSON schema of the candidate plans for `ctx`: bounded, every key enumerated, field
    order = the Plan's (or sorted with sort_keys=True), `additionalProperties: false`
    everywhere. Everything it admits is within the Plan's pydantic bounds.

    link_context=True (default) makes the root an anyOf with one whole-plan branch per
    context, so steps * batch_size * context <= max_train_tokens holds for every sample.
    link_context=False gives a single root object (for APIs that refuse a root anyOf,
    such as OpenAI structured outputs) bounding steps by the smallest context only."""
    parent = ctx.parent["model"]
    floor = float(ctx.budget.get("min_param_ratio") or 0.125) ** (1 / 3)
    max_tokens = int(ctx.budget["max_train_tokens"])
    min_tokens = int(ctx.budget.get("min_train_tokens", 0))
    region = ctx.budget.get("trust_region") or None
    parent_mix = {k: float(v) for k, v in ctx.parent_plan.get("data", {}).get("mixture", {}).items()}
    total = sum(parent_mix.values()) or 1.0

    def weight(name: str) -> dict[str, Any]:
        if not region:
            return _num(0, 1)
        w = parent_mix.get(name, 0.0) / total
        return _num(round(w / region["factor"], 6), round(min(1.0, max(w * region["factor"], 0.05)), 6))

    mixture = _obj({name: weight(name) for name in sorted(ctx.sources)})
    parent_h = ctx.parent_plan.get("hparams") if region else None
    parent_tokens = 0
    if parent_h:
        parent_tokens = int(parent_h["steps"]) * int(parent_h["batch_size"]) * int(ctx.parent_plan["model"]["context"])

    band = None
    vocab = ctx.budget.get("vocab_size")
    if ctx.parent.get("params") and vocab:
        pp = int(ctx.parent["params"])
        hi = min(int(ctx.budget["max_params"]), math.floor(float(ctx.budget["param_ratio"]) * pp))
        lo = math.ceil(float(ctx.budget.get("min_param_ratio") or 0.0) * pp)
        band = (lo, hi) if lo <= hi else None
    # budget.equal_compute: the generation's target (set by generation 0 and the budget, the
    # same for every proposer) narrows the band, and the token count is fixed
    target = ctx.budget.get("equal_compute") or None
    exact = None
    if target:
        exact = int(target["tokens"])
        if band is not None:
            lo, hi = max(band[0], int(target["lo"])), min(band[1], int(target["hi"]))
            band = (lo, hi) if lo <= hi else None

    def plan(contexts: list[int], hparams: dict[str, Any]) -> dict[str, Any]:
        return _obj({
            "schema_version": {"const": 1},
            "model": _model_schema(parent, contexts, floor, band, int(vocab) if vocab else None, ctx.base,
                                   pinned=bool(target)),
            "data": _obj({"mixture": mixture}),
            "hparams": hparams,
            "code": text_schema(code_max_chars),
            "rationale": text_schema(rationale_max_chars),
        })

    contexts = _contexts(parent)
    mult = int(ctx.budget.get("batch_multiple") or 1)

    def hp(c: int) -> dict[str, Any] | None:  # reads `exact` when called
        return _hparams_schema(max_tokens, c, min_tokens, parent_h, region, parent_tokens, mult, exact)

    if exact is not None:
        # only contexts at which some batch size hits the token count (none: the validator says why)
        contexts = [c for c in contexts if hp(c) is not None] or contexts
        if hp(contexts[0]) is None:
            exact = None
        elif not link_context:  # steps are then fixed for one context: the largest that fits
            contexts = contexts[-1:]
    if link_context:
        schema = _any([plan([c], hp(c)) for c in contexts])
    else:
        schema = plan(contexts, hp(min(contexts)))
    return sort_schema_keys(schema) if sort_keys else schema
