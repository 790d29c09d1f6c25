"""Outcome-conditioned research record (issue 13 part 2): the outcome comes before the plan,
the prompt asks for the best outcome, the record holds screened candidates and BONET
trajectories, and the prompt's memory runs worst to best. Each part has its switch."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from recursive.attempt import Attempt, AttemptRecord
from recursive.data.research import research_entries
from recursive.data.sources import TRAJECTORY_HEADER, format_research_record
from recursive.io import atomic_write_json, atomic_write_text
from recursive.lineage import record
from recursive.plan import Plan
from recursive.proposers.base import plan_text
from recursive.proposers.prompt import BEST_OUTCOME, OUTCOME_MARKER, PLAN_MARKER, build_prompt, outcome_label


@pytest.mark.parametrize("loss, label", [(2.0, "promoted, gain >=10%"), (2.8, "promoted, gain 3-10%"),
                                         (2.95, "promoted, gain 0-3%"), (3.0, "promoted, gain 0-3%"),
                                         (3.1, "promoted, no gain"), (None, "promoted")])
def test_outcome_bins_are_the_gain_over_the_parent(loss, label):
    assert outcome_label("promoted", loss, 3.0) == label


def test_a_rejected_outcome_is_its_gate_reasons():
    assert outcome_label("rejected", 2.0, 3.0, ["refusal_vs_gen0: 0.4 < 0.6"]) == "rejected: refusal_vs_gen0: 0.4 < 0.6"
    assert outcome_label("failed", None, 3.0, []) == "failed"
    assert BEST_OUTCOME == "promoted, gain >=10%"


def test_the_prompt_ends_asking_for_the_best_outcome(make_ctx):
    ctx = dataclasses.replace(make_ctx(feedback=["gate: too big"]), outcome_request=BEST_OUTCOME)
    p = build_prompt(ctx, 1200)
    assert p.endswith(f"{OUTCOME_MARKER}{BEST_OUTCOME}{PLAN_MARKER}") and len(p) <= 1200
    assert "gate: too big" in p
    off = build_prompt(dataclasses.replace(ctx, outcome_request=None), 1200)
    assert off.endswith("gate: too big" + PLAN_MARKER) and "OUTCOME" not in off


def _mem(i: int, status: str, loss: float | None) -> dict:
    plan = {"model": {"num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "head_dim": 32,
                      "intermediate_size": 100 + i, "context": 128}, "data": {"mixture": {"code": 1.0}},
            "hparams": {"lr": 0.003, "steps": 100 + i}}
    return {"generation": 1, "attempt": i + 1, "status": status, "plan": plan, "gate_reasons": [],
            "metrics": {"heldout_loss": loss}, "outcome": outcome_label(status, loss, 3.0, [])}


def test_memory_runs_worst_to_best_with_scores(make_ctx):
    memory = [_mem(0, "promoted", 2.5), _mem(1, "rejected", 2.2), _mem(2, "promoted", 2.0), _mem(3, "promoted", 2.9)]
    ctx = make_ctx(memory=memory)
    p = build_prompt(dataclasses.replace(ctx, memory_order="worst_to_best"), 3000)
    order = re.findall(r"\n- g1\.(\d)", p)
    # rejected is worst whatever its loss, then promoted by falling loss; the best last
    assert order == ["2", "4", "1", "3"], p
    assert "MEMORY (worst to best):" in p and "g1.3 promoted [best], gain >=10% loss=2" in p
    chrono = build_prompt(dataclasses.replace(ctx, memory_order="chronological"), 3000)
    assert re.findall(r"\n- g1\.(\d)", chrono) == ["1", "2", "3", "4"]


def _plan(make_ctx) -> dict:
    return make_ctx().seed_plan


def test_outcome_first_documents_round_trip(make_ctx):
    ctx = dataclasses.replace(make_ctx(), outcome_request=BEST_OUTCOME)
    prompt = build_prompt(ctx, 1200)
    plan = _plan(make_ctx)
    entry = {"generation": 1, "attempt": 1, "status": "promoted", "prompt": prompt, "plan": plan,
             "gate_reasons": [], "metrics": {"heldout_loss": 2.6}, "outcome": "promoted, gain 3-10%"}
    [doc] = format_research_record([entry], outcome_first=True)
    body = prompt[: -len(OUTCOME_MARKER + BEST_OUTCOME + PLAN_MARKER)]
    assert doc.startswith(body + "\nOUTCOME: promoted, gain 3-10%\nPLAN: ")
    assert BEST_OUTCOME not in doc  # the request is replaced by what really happened
    written = doc[len(body + "\nOUTCOME: promoted, gain 3-10%\nPLAN: "):].split("\nMETRICS: ")
    assert json.loads(written[0]) == json.loads(plan_text(plan)) and json.loads(written[1]) == {"heldout_loss": 2.6}
    # the same doc is what a successor prompted for that outcome continues: prompt prefix, then the plan
    asked = build_prompt(dataclasses.replace(ctx, outcome_request="promoted, gain 3-10%"), 1200)
    assert doc.startswith(asked)
    # the switch off: plan first, outcome after (the format before conditioning)
    [old] = format_research_record([entry])
    assert old.startswith(body + PLAN_MARKER) and "\nOUTCOME: promoted" in old.split(PLAN_MARKER)[1]


def test_trajectories_are_sorted_worst_to_best_and_seeded(make_ctx):
    plan = _plan(make_ctx)
    entries = [{"generation": 1, "attempt": 1, "status": "screened", "prompt": "", "plan": {**plan, "rationale": f"c{i}"},
                "gate_reasons": [], "metrics": {"screen_loss": loss}, "outcome": f"screened {i}/6, loss {loss:.3f}"}
               for i, loss in enumerate([3.3, 3.1, 3.6, 2.9, 3.0, 3.4], 1)]
    entries.append({"generation": 1, "attempt": 1, "status": "rejected", "prompt": "", "plan": plan,
                    "gate_reasons": ["r"], "metrics": {"heldout_loss": 2.0}, "outcome": "rejected: r"})
    entries.append({"generation": 0, "attempt": 1, "status": "promoted", "prompt": "", "plan": plan,
                    "gate_reasons": [], "metrics": {"heldout_loss": 3.0}, "outcome": "promoted"})
    docs = format_research_record(entries, outcome_first=True, augment=12, seed=3)
    assert len(docs) == len(entries) + 12
    trajectories = docs[len(entries):]
    assert all(t.startswith(TRAJECTORY_HEADER) for t in trajectories)
    for t in trajectories:
        outcomes = re.findall(r"\nOUTCOME: ([^\n]*)", t)
        assert 2 <= len(outcomes) <= 4 and len(outcomes) == t.count(PLAN_MARKER)
        if outcomes[0].startswith("screened"):
            losses = [float(o.rsplit(" ", 1)[1]) for o in outcomes]
            assert losses == sorted(losses, reverse=True), t  # worst (highest loss) first
        else:  # the decided pool: rejected below promoted, whatever the loss
            assert outcomes == ["rejected: r", "promoted"]
    assert docs == format_research_record(entries, outcome_first=True, augment=12, seed=3)
    assert docs != format_research_record(entries, outcome_first=True, augment=12, seed=4)
    assert format_research_record(entries, outcome_first=True, augment=0) == docs[:len(entries)]


def test_the_record_holds_screened_candidates_with_their_losses(tmp_path):
    from recursive.config import compose_config
    from recursive.run_config import seed_plan
    seed: Plan = seed_plan(compose_config(["experiment=smoke"]))
    g0 = Attempt(tmp_path, 0, 1)
    atomic_write_text(g0.plan, seed.to_json())
    record(tmp_path, AttemptRecord(generation=0, attempt=1, status="promoted", plan_path=g0.rel(g0.plan),
                                   metrics={"heldout_loss": {"mean": 5.0}}))
    at = Attempt(tmp_path, 1, 1)
    child = seed.model_copy(update={"rationale": "selected"})
    atomic_write_text(at.plan, child.to_json())
    atomic_write_text(at.prompt, "Propose...\nOUTCOME: promoted, gain >=10%\nPLAN: ")

    def cand(i, loss, **kw):
        return {"index": i, "valid": True, "screen_loss": loss, "code_valid": True,
                "text": seed.model_copy(update={"rationale": f"c{i}"}).to_json(), **kw}
    atomic_write_json(at.proposal, {"selected": 1})
    atomic_write_json(at.candidates, [cand(0, 4.2), cand(1, 3.9), cand(2, float("nan")), {"index": 3, "valid": False},
                                      cand(0, 4.0, control=True), cand(1, 3.8, control=True, code_valid=False)])
    record(tmp_path, AttemptRecord(generation=1, attempt=1, status="promoted", code_origin="proposed",
                                   plan_path=at.rel(at.plan), metrics={"heldout_loss": {"mean": 4.4}}))
    entries = research_entries(tmp_path, seed, screened=True)
    assert [e["status"] for e in entries] == ["promoted", "promoted", "screened", "screened", "screened"]
    assert entries[1]["outcome"] == "promoted, gain >=10%"  # (5.0 - 4.4) / 5.0 = 12%
    screened = entries[2:]
    # ranks among the 4 finite screened candidates (the selected one, rank 2, is the attempt itself)
    assert [e["outcome"] for e in screened] == ["screened 1/4, loss 3.800", "screened 3/4, loss 4.000",
                                                "screened 4/4, loss 4.200"]
    assert [e["plan"]["rationale"] for e in screened] == ["c1", "c0", "c0"]
    # the control candidate whose code failed the policy was screened with the parent's recipe
    from recursive.proposers.grammar import canonical_recipe
    assert screened[0]["plan"]["code"] == canonical_recipe(seed.code)
    assert [e["status"] for e in research_entries(tmp_path, seed)] == ["promoted", "promoted"]  # switch off
    docs = format_research_record(entries, outcome_first=True)
    assert docs[2].startswith("Propose...\nOUTCOME: screened 1/4, loss 3.800\nPLAN: {")
