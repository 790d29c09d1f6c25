"""The promotion gate: every criterion with its value, its bound and pass/fail.

Criteria come from config (configs/evaluate/*.yaml, `gate:`), of three kinds: absolute,
relative to the parent, and relative to generation 0. The last exists because per-step
tolerances compound: 0.1% lost per generation is 5% after 50 generations, and every
single step would pass a parent-only check. A missing or non-finite metric fails its
criterion (a NaN compares False to everything, so a naive `value > bound` would pass it),
and any non-finite number anywhere in the metrics fails the `all metrics finite` check.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

BOUND_KEYS = {"max": ("<=", 1), "min": (">=", 1), "max_increase": ("<=", 1), "max_decrease": (">=", -1)}


@dataclass
class Criterion:
    name: str
    metric: str
    against: str         # absolute | parent | gen0 | sanity
    value: float | None
    bound: float | None
    op: str              # "<=" or ">="
    passed: bool

    def reason(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        return (f"{verdict} {self.name}: {self.metric} = {_fmt(self.value)} "
                f"(bound {self.op} {_fmt(self.bound)}, {self.against})")


def _fmt(x: Any) -> str:
    return "missing" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))


def get_metric(metrics: dict | None, path: str) -> float | None:
    node: Any = metrics
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _nonfinite(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _nonfinite(v, f"{prefix}{k}.")]
    if isinstance(tree, float) and not math.isfinite(tree):
        return [prefix.rstrip(".")]
    return []


OPTION_KEYS = ("enabled", "gen0")  # on/off; whether it judges generation 0 (default true)


def _criterion(name: str, spec: dict, metrics: dict, refs: dict[str, dict | None], of_gen0: bool) -> Criterion | None:
    for key in OPTION_KEYS:
        if not isinstance(spec.get(key, True), bool):
            raise ValueError(f"gate criterion {name!r}: {key} must be true or false, got {spec[key]!r}")
    if not spec.get("enabled", True) or (of_gen0 and not spec.get("gen0", True)):
        return None
    keys = [k for k in BOUND_KEYS if k in spec]
    against = spec.get("against", "absolute")
    if len(keys) != 1 or against not in ("absolute", "parent", "gen0"):
        raise ValueError(f"gate criterion {name!r}: needs against in absolute|parent|gen0 and exactly one of "
                         f"{sorted(BOUND_KEYS)}, got {spec}")
    key = keys[0]
    if (against == "absolute") != (key in ("max", "min")):
        raise ValueError(f"gate criterion {name!r}: {key} does not go with against={against}")
    op, sign = BOUND_KEYS[key]
    value = get_metric(metrics, spec["metric"])
    if against == "absolute":
        bound = float(spec[key])
    else:
        if refs[against] is None:
            return None  # no parent (generation 0) or no generation 0 yet: not applicable
        ref = get_metric(refs[against], spec["metric"])
        bound = None if ref is None else ref + sign * float(spec[key])
    ok = (value is not None and bound is not None and math.isfinite(value) and math.isfinite(bound)
          and (value <= bound if op == "<=" else value >= bound))
    return Criterion(name, spec["metric"], against, value, bound, op, ok)


def gate(metrics: dict, parent: dict | None, gen0: dict | None, criteria: dict, *, of_gen0: bool = False) -> dict:
    """Verdict for a child with `metrics`; `parent`/`gen0` are their metrics (None when absent).
    `of_gen0`: the candidate is generation 0 itself, so criteria with `gen0: false` (those
    a precondition of the loop checks instead) do not apply."""
    bad = _nonfinite(metrics)
    crit = [Criterion("finite", ", ".join(bad) or "all metrics", "sanity", float(len(bad)), 0.0, "<=", not bad)]
    refs = {"parent": parent, "gen0": gen0}
    crit += [c for name, spec in criteria.items() if (c := _criterion(name, spec, metrics, refs, of_gen0)) is not None]
    passed = all(c.passed for c in crit)
    return {"passed": passed, "reasons": [c.reason() for c in crit if not c.passed] or ["all criteria passed"],
            "criteria": [asdict(c) for c in crit]}


def render(verdict: dict) -> str:
    lines = [f"gate: {'PASSED' if verdict['passed'] else 'REJECTED'}"]
    lines += ["  " + Criterion(**c).reason() for c in verdict["criteria"]]
    return "\n".join(lines)
