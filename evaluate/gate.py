"""The promotion gate: every criterion with its value, its bound and pass/fail.

Criteria come from config (configs/evaluate/*.yaml, `gate:`), of three kinds: absolute,
relative to the parent, and relative to generation 0. The last exists because per-step
tolerances compound: 0.1% lost per generation is 5% after 50 generations, and every
single step would pass a parent-only check. A missing or non-finite metric fails its
criterion (a NaN compares False to everything, so a naive `value > bound` would pass it),
and any non-finite number anywhere in the metrics fails the `all metrics finite` check.

A criterion with `memorisation: true` measures what a model learnt of the lineage's own
training data (the planted canaries). Against generation 0 it needs a reference that
trained on that data: generation 0 itself when the lineage trained it, but a pretrained
checkpoint (`model=pretrained`) never saw the canaries, so "exposure vs generation 0"
would compare every child with an untrained baseline. There the reference is the first
generation that trained on the lineage's data (generation 1 of the candidate's ancestry):
generation 1 answers to the absolute bounds alone, as a from-scratch generation 0 does,
and every later generation to its drift from generation 1 (docs/evals.md).
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
    reference: str | None = None  # which generation the bound came from, where not the obvious one

    def reason(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        against = self.against if self.reference is None else f"{self.against}: {self.reference}"
        return (f"{verdict} {self.name}: {self.metric} = {_fmt(self.value)} "
                f"(bound {self.op} {_fmt(self.bound)}, {against})")


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


# on/off; whether it judges generation 0 (default true); whether it measures memorisation of
# the lineage's training data (default false: its gen0 reference must have trained on it)
OPTION_KEYS = ("enabled", "gen0", "memorisation")


@dataclass
class TrainedReference:
    """Where generation 0 did not train on the lineage's data: the first generation that
    did, for `memorisation` criteria against gen0. `metrics` None: the candidate is that
    generation, so those criteria have no reference yet (absolute bounds only)."""
    label: str                   # e.g. "gen 1 attempt 2, the first trained on the lineage's data"
    metrics: dict | None


def _criterion(name: str, spec: dict, metrics: dict, refs: dict[str, dict | None], of_gen0: bool,
               trained: TrainedReference | None, notes: list[str]) -> Criterion | None:
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
    reference, ref_metrics = None, refs.get(against)
    if against == "gen0" and spec.get("memorisation", False) and trained is not None:
        reference, ref_metrics = trained.label, trained.metrics
        if ref_metrics is None:
            notes.append(f"{name}: not judged: generation 0 never trained on the lineage's data, and this is "
                         f"the first generation that did (absolute bounds only)")
            return None
    if against == "absolute":
        bound = float(spec[key])
    else:
        if ref_metrics is None:
            return None  # no parent (generation 0) or no generation 0 yet: not applicable
        ref = get_metric(ref_metrics, spec["metric"])
        bound = None if ref is None else ref + sign * float(spec[key])
    ok = (value is not None and bound is not None and math.isfinite(value) and math.isfinite(bound)
          and (value <= bound if op == "<=" else value >= bound))
    return Criterion(name, spec["metric"], against, value, bound, op, ok, reference)


def gate(metrics: dict, parent: dict | None, gen0: dict | None, criteria: dict, *, of_gen0: bool = False,
         trained: TrainedReference | None = None) -> dict:
    """Verdict for a child with `metrics`; `parent`/`gen0` are their metrics (None when absent).
    `of_gen0`: the candidate is generation 0 itself, so criteria with `gen0: false` (those
    a precondition of the loop checks instead) do not apply. `trained`: given when
    generation 0 did not train on the lineage's data (a pretrained checkpoint), the
    reference of `memorisation` criteria against gen0."""
    bad = _nonfinite(metrics)
    crit = [Criterion("finite", ", ".join(bad) or "all metrics", "sanity", float(len(bad)), 0.0, "<=", not bad)]
    refs = {"parent": parent, "gen0": gen0}
    notes: list[str] = []
    crit += [c for name, spec in criteria.items()
             if (c := _criterion(name, spec, metrics, refs, of_gen0, trained, notes)) is not None]
    passed = all(c.passed for c in crit)
    return {"passed": passed, "reasons": [c.reason() for c in crit if not c.passed] or ["all criteria passed"],
            "criteria": [asdict(c) for c in crit], "notes": notes}


def render(verdict: dict) -> str:
    lines = [f"gate: {'PASSED' if verdict['passed'] else 'REJECTED'}"]
    lines += ["  " + Criterion(**c).reason() for c in verdict["criteria"]]
    lines += ["  note: " + n for n in verdict.get("notes", [])]
    return "\n".join(lines)
