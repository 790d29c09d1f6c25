"""Random search: the baseline every model-proposed plan must beat.

It samples the same space the self proposer decodes from (`proposal_schema`), so a
comparison between the two measures the model's judgement, not a difference in space.
"""

from __future__ import annotations

import json
import string
import time
from typing import Any

import numpy as np

from .base import Candidate, ProposalContext, plan_text
from .schema import proposal_schema, text_max_chars

_CHARS = string.ascii_letters + string.digits + " _.,:;()=+-*/"


def sample_schema(schema: dict[str, Any], rng: np.random.Generator) -> Any:
    """Draw one value uniformly from the subset of JSON schema that `proposal_schema`
    emits: anyOf picks a branch uniformly, enums uniformly, integers uniform in
    [minimum, maximum], numbers uniform and rounded to the 6 fractional digits xgrammar
    allows for bounded numbers, booleans fair, strings random of uniform length."""
    if "anyOf" in schema:
        return sample_schema(schema["anyOf"][int(rng.integers(len(schema["anyOf"])))], rng)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][int(rng.integers(len(schema["enum"])))]
    kind = schema.get("type")
    if kind == "object":
        return {k: sample_schema(v, rng) for k, v in schema["properties"].items()}
    if kind == "integer":
        return int(rng.integers(schema["minimum"], schema["maximum"], endpoint=True))
    if kind == "number":
        lo, hi = float(schema["minimum"]), float(schema["maximum"])
        # bounds have <= 6 decimals, so rounding cannot leave [lo, hi]
        return min(hi, max(lo, round(float(rng.uniform(lo, hi)), 6)))
    if kind == "boolean":
        return bool(rng.integers(2))
    if kind == "string":
        n = int(rng.integers(0, text_max_chars(schema), endpoint=True))
        return "".join(_CHARS[i] for i in rng.integers(len(_CHARS), size=n))
    raise ValueError(f"sample_schema: unsupported schema {json.dumps(schema)[:80]}")


class RandomProposer:
    """Uniform samples from `proposal_schema(ctx)`. A random search cannot write code, so
    each candidate keeps the parent's recipe code; rationale "random search"."""

    name = "random"

    def propose(self, ctx: ProposalContext, k: int, seed: int) -> list[Candidate]:
        """k uniform samples; same seed -> same plans (numpy Generator seeded by `seed`)."""
        schema = proposal_schema(ctx, code_max_chars=0, rationale_max_chars=0)
        rng = np.random.default_rng(seed)
        out = []
        for i in range(k):
            t0 = time.perf_counter()
            plan = sample_schema(schema, rng)
            plan["code"] = ctx.parent_plan["code"]
            plan["rationale"] = "random search"
            out.append(Candidate(index=i, text=plan_text(plan), plan=plan, logprob=0.0,
                                 n_tokens=0, seconds=time.perf_counter() - t0))
        return out
