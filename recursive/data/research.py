"""The research record as a data source: prompt, plan and outcome of every decided attempt
of this lineage so far (recursive/data/prepare.py tokenises it per generation)."""

from __future__ import annotations

from pathlib import Path

from recursive import lineage
from recursive.attempt import Attempt
from recursive.io import read_json
from recursive.plan import Plan
from recursive.proposers.grammar import canonical_recipe


def research_entries(run_dir: Path, seed: Plan) -> list[dict]:
    """Plans appear as the proposer wrote them, recipe included, so the record teaches code
    with what it led to: an edit as its SEARCH/REPLACE text, any other recipe (proposed,
    inherited, the human seed's) as the module that was trained, less its docstring and
    comment lines (`canonical_recipe`: for the seed and every grammar-decoded recipe, the
    exact text the recipe grammar decodes). Before generation 0 is recorded, the human seed
    plan is the one entry, so generation 0 already sees what a plan looks like."""
    out = []
    for e in lineage.attempts(run_dir):
        at = e.where(run_dir)
        if not at.plan.exists():
            continue
        plan = read_json(at.plan)
        edit = _edit_of(at) if e.code_origin == "edited" else None
        plan["code"] = edit or canonical_recipe(plan["code"]) or ""
        prompt = at.prompt.read_text() if at.prompt.exists() else ""
        out.append({"generation": e.generation, "attempt": e.attempt, "status": e.status, "prompt": prompt,
                    "plan": plan, "gate_reasons": e.gate.get("reasons", []), "metrics": _record_metrics(e.metrics)})
    if not any(e["generation"] == 0 for e in out):
        plan = seed.model_dump(mode="json")
        plan["code"] = canonical_recipe(plan["code"]) or ""
        out.insert(0, {"generation": 0, "attempt": 1, "status": "promoted", "prompt": "", "plan": plan,
                       "gate_reasons": ["human seed plan"], "metrics": {}})
    return out


def _edit_of(at: Attempt) -> str | None:
    """The search/replace edit the selected candidate was (proposal/candidates.json), if kept."""
    if not (at.proposal.exists() and at.candidates.exists()):
        return None
    selected = read_json(at.proposal).get("selected")
    for c in read_json(at.candidates):
        if c.get("index") == selected and not c.get("control") and isinstance(c.get("code_edit"), str):
            return c["code_edit"]
    return None


def _record_metrics(m: dict) -> dict:
    return {"heldout_loss": (m.get("heldout_loss") or {}).get("mean"),
            "valid_plan_rate": (m.get("proposer") or {}).get("valid_plan_rate")}
