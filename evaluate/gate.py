"""The promotion gate: every criterion with its value, its bound and pass/fail.

Three kinds of bounds: absolute, relative to the parent, and relative to generation 0.
The last exists because per-step tolerances compound: 0.1% lost per generation is 5%
after 50 generations, and every single step would pass a parent-only check.
A missing or non-finite metric fails its criterion (a NaN compares False to everything,
so a naive `value > bound` check would pass it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Criterion:
    name: str
    kind: str            # absolute | vs_parent | vs_gen0 | sanity
    value: float | None
    bound: float | None
    op: str              # "<=" or ">="
    passed: bool

    def reason(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        return f"{verdict} {self.name} = {_fmt(self.value)} (bound {self.op} {_fmt(self.bound)}, {self.kind})"


def _fmt(x: Any) -> str:
    return "missing" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))


def _get(metrics: dict | None, path: str) -> float | None:
    node: Any = metrics
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _check(name: str, kind: str, value: float | None, bound: float | None, op: str) -> Criterion:
    ok = (value is not None and bound is not None and math.isfinite(value) and math.isfinite(bound)
          and (value <= bound if op == "<=" else value >= bound))
    return Criterion(name, kind, value, bound, op, ok)


def _nonfinite(tree: Any, prefix: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _nonfinite(v, f"{prefix}{k}.")]
    if isinstance(tree, float) and not math.isfinite(tree):
        return [prefix.rstrip(".")]
    return []


def gate(metrics: dict, parent: dict | None, gen0: dict | None, cfg: dict) -> dict:
    """Verdict for a child with `metrics`; `parent`/`gen0` are their metrics (None for gen 0)."""
    crit: list[Criterion] = []
    bad = _nonfinite(metrics)
    crit.append(Criterion("all metrics finite", "sanity", float(len(bad)), 0.0, "<=", not bad))
    loss = _get(metrics, "heldout_loss.mean")
    crit.append(_check("heldout_loss.mean", "absolute", loss, cfg["max_heldout_loss"], "<="))
    # every promoted model proposes the next generation, generation 0 included
    crit.append(_check("proposer.valid_plan_rate", "absolute",
                       _get(metrics, "proposer.valid_plan_rate"), cfg["min_valid_plan_rate"], ">="))
    if parent is not None:
        p = _get(parent, "heldout_loss.mean")
        crit.append(_check("heldout_loss.mean", "vs_parent", loss,
                           None if p is None else p + cfg["max_loss_increase_vs_parent"], "<="))
    if gen0 is not None and parent is not None:
        g = _get(gen0, "heldout_loss.mean")
        crit.append(_check("heldout_loss.mean", "vs_gen0", loss,
                           None if g is None else g + cfg["max_loss_increase_vs_gen0"], "<="))
    passed = all(c.passed for c in crit)
    return {"passed": passed, "reasons": [c.reason() for c in crit if not c.passed] or ["all criteria passed"],
            "criteria": [asdict(c) for c in crit]}


def render(verdict: dict) -> str:
    lines = [f"gate: {'PASSED' if verdict['passed'] else 'REJECTED'}"]
    for c in verdict["criteria"]:
        lines.append("  " + Criterion(**c).reason())
    return "\n".join(lines)
