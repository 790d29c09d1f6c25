"""The research record as a data source: prompt, plan and outcome of every decided attempt
of this lineage so far (recursive/data/prepare.py tokenises it per generation)."""

from __future__ import annotations

from pathlib import Path

from recursive import lineage
from recursive.io import read_json
from recursive.plan import Plan


def research_entries(run_dir: Path, seed: Plan) -> list[dict]:
    """Plans appear as the proposer wrote them: an inherited recipe shows as code "" (the
    decoder's short code field cannot hold a module, and a whole module per entry would
    swamp the record). Before generation 0 is recorded, the human seed plan is the one
    entry, so generation 0 already sees what a plan looks like."""
    out = []
    for e in lineage.attempts(run_dir):
        at = e.where(run_dir)
        if not at.plan.exists():
            continue
        plan = read_json(at.plan)
        if e.code_origin not in ("proposed", "edited"):
            plan["code"] = ""
        prompt = at.prompt.read_text() if at.prompt.exists() else ""
        out.append({"generation": e.generation, "attempt": e.attempt, "status": e.status, "prompt": prompt,
                    "plan": plan, "gate_reasons": e.gate.get("reasons", []), "metrics": _record_metrics(e.metrics)})
    if not any(e["generation"] == 0 for e in out):
        plan = seed.model_dump(mode="json")
        plan["code"] = ""
        out.insert(0, {"generation": 0, "attempt": 1, "status": "promoted", "prompt": "", "plan": plan,
                       "gate_reasons": ["human seed plan"], "metrics": {}})
    return out


def _record_metrics(m: dict) -> dict:
    return {"heldout_loss": (m.get("heldout_loss") or {}).get("mean"),
            "valid_plan_rate": (m.get("proposer") or {}).get("valid_plan_rate")}
