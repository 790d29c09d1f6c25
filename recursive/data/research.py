"""The research record as a data source: prompt, plan and outcome of every decided attempt
of this lineage so far and, with `screened`, of every candidate its proposals screened
(recursive/data/prepare.py tokenises it per generation; recursive/data/sources.py
format_research_record writes the documents, outcome first or last)."""

from __future__ import annotations

from pathlib import Path

import json
import math

from recursive import lineage
from recursive.attempt import Attempt
from recursive.io import read_json
from recursive.plan import Plan
from recursive.proposers.prompt import outcome_of
from recursive.proposers.grammar import canonical_recipe


def research_entries(run_dir: Path, seed: Plan, screened: bool = False) -> list[dict]:
    """Plans appear as the proposer wrote them, recipe included, so the record teaches code
    with what it led to: an edit as its SEARCH/REPLACE text, any other recipe (proposed,
    inherited, the human seed's) as the module that was trained, less its docstring and
    comment lines (`canonical_recipe`: for the seed and every grammar-decoded recipe, the
    exact text the recipe grammar decodes). Before generation 0 is recorded, the human seed
    plan is the one entry, so generation 0 already sees what a plan looks like.

    Every entry has an `outcome` (proposers/prompt.py outcome_of: the verdict and the held-out gain over
    the parent, binned). With `screened`, each attempt's screened candidates other than the
    one trained follow it as `status: "screened"` entries, outcome "screened r/n, loss X"
    (rank by screen loss among the attempt's screened candidates, control ones included)."""
    out = []
    records = lineage.attempts(run_dir)
    for e in records:
        at = e.where(run_dir)
        if not at.plan.exists():
            continue
        plan = read_json(at.plan)
        edit = _edit_of(at) if e.code_origin == "edited" else None
        plan["code"] = edit or canonical_recipe(plan["code"]) or ""
        prompt = at.prompt.read_text() if at.prompt.exists() else ""
        out.append({"generation": e.generation, "attempt": e.attempt, "status": e.status, "prompt": prompt,
                    "plan": plan, "gate_reasons": e.gate.get("reasons", []), "metrics": _record_metrics(e.metrics),
                    "outcome": outcome_of(e, records)})
        if screened:
            out += _screened(at, e.generation, e.attempt, prompt, _parent_code(run_dir, records, e.generation))
    if not any(e["generation"] == 0 for e in out):
        plan = seed.model_dump(mode="json")
        plan["code"] = canonical_recipe(plan["code"]) or ""
        out.insert(0, {"generation": 0, "attempt": 1, "status": "promoted", "prompt": "", "plan": plan,
                       "gate_reasons": ["human seed plan"], "metrics": {}})
    return out


def _screened(at: Attempt, generation: int, attempt: int, prompt: str, parent_code: str | None) -> list[dict]:
    """The attempt's screened candidates but the selected one, each with its rank and screen
    loss. A candidate's code is what was screened: its edit, its grammar module, or (code
    that failed the policy) the parent's recipe."""
    if not (at.proposal.exists() and at.candidates.exists()):
        return []
    selected = read_json(at.proposal).get("selected")
    scored = []
    for c in read_json(at.candidates):
        loss = c.get("screen_loss")
        if not (c.get("valid") and isinstance(loss, (int, float)) and math.isfinite(loss)):
            continue
        try:
            plan = json.loads(c.get("text") or "")
        except ValueError:
            continue
        if not isinstance(plan, dict):
            continue
        if isinstance(c.get("code_edit"), str):
            code = c["code_edit"]
        elif c.get("code_valid") and isinstance(plan.get("code"), str):
            code = canonical_recipe(plan["code"]) or ""
        else:
            code = canonical_recipe(parent_code or "") or ""
        scored.append((float(loss), bool(c.get("control")), c.get("index"), {**plan, "code": code}))
    scored.sort(key=lambda t: t[0])
    out = []
    for rank, (loss, control, index, plan) in enumerate(scored, 1):
        if index == selected and not control:
            continue
        out.append({"generation": generation, "attempt": attempt, "status": "screened", "prompt": prompt,
                    "plan": plan, "gate_reasons": [], "metrics": {"screen_loss": loss},
                    "outcome": f"screened {rank}/{len(scored)}, loss {loss:.3f}"})
    return out


def _parent_code(run_dir: Path, records: list, generation: int) -> str:
    """The recipe of generation - 1's promoted model (what a policy-failing candidate inherits)."""
    for r in records:
        if r.generation == generation - 1 and r.status == "promoted" and r.where(run_dir).plan.exists():
            return read_json(r.where(run_dir).plan).get("code") or ""
    return ""


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
