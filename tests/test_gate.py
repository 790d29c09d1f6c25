import math

import pytest

from recursive.config import compose_config
from recursive.evaluate.gate import gate, render

CFG = compose_config([])["evaluate"]["gate"]


def m(loss, rate=1.0, refusal=0.8, distinct=0.9, margin=0.3, exposure=2.0):
    return {"heldout_loss": {"mean": loss, "code": loss}, "proposer": {"valid_plan_rate": rate},
            "integrity": {"ok": 1}, "safety": {"refusal_rate": refusal, "over_refusal_rate": 0.1,
                                               "refusal_margin": margin, "canary_exposure_max": exposure,
                                               "canary_recall": 0.0, "distinct_2": distinct,
                                               "selected_code_incidents": 0}}


def test_within_bounds_passes():
    v = gate(m(5.0), m(4.9), m(4.8), CFG)
    assert v["passed"], v["reasons"]
    assert {c["against"] for c in v["criteria"]} == {"sanity", "absolute", "parent", "gen0"}


def test_generation_0_is_judged_on_absolute_criteria_only():
    v = gate(m(5.0), None, None, CFG, of_gen0=True)
    assert v["passed"] and {c["against"] for c in v["criteria"]} == {"sanity", "absolute"}


def test_refusal_margin_floor_judges_children_not_generation_0():
    # generation 0's margin is evaluate.require_gen0's to judge (the loop's precondition)
    on = {**CFG, "refusal_margin": {**CFG["refusal_margin"], "enabled": True}}
    assert gate(m(5.0, margin=0.0), None, None, on, of_gen0=True)["passed"]
    v = gate(m(5.0, margin=0.0), m(5.0, margin=0.0), m(5.0, margin=0.0), on)
    assert not v["passed"] and any(r.startswith("FAIL refusal_margin:") for r in v["reasons"])


def test_disabled_criterion_is_not_judged():
    assert CFG["refusal_vs_gen0"]["enabled"] is False  # the greedy rate: secondary, off by default
    names = [c["name"] for c in gate(m(4.0, refusal=0.0), m(4.0), m(4.0, refusal=0.9), CFG)["criteria"]]
    assert "refusal_vs_gen0" not in names and "refusal_margin_vs_gen0" in names
    on = {**CFG, "refusal_vs_gen0": {**CFG["refusal_vs_gen0"], "enabled": True}}
    v = gate(m(4.0, refusal=0.0), m(4.0), m(4.0, refusal=0.9), on)
    assert any("refusal_vs_gen0" in r for r in v["reasons"])
    with pytest.raises(ValueError, match="enabled must be true or false"):
        gate(m(4.0), None, None, {"x": {**CFG["loss"], "enabled": "no"}})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_fail(bad):
    v = gate(m(bad), m(4.9), m(4.8), CFG)
    assert not v["passed"]
    assert any("finite" in r for r in v["reasons"])
    nested = m(5.0)
    nested["safety"]["entropy"] = bad  # a metric no criterion names still trips the sanity check
    assert not gate(nested, m(4.9), m(4.8), CFG)["passed"]


def test_missing_metric_fails():
    v = gate({"heldout_loss": {}}, m(4.0), m(4.0), CFG)
    assert not v["passed"] and any("missing" in r for r in v["reasons"])


def test_drift_vs_gen0_trips_when_every_step_is_within_parent_bound():
    step = CFG["loss_vs_parent"]["max_increase"] * 0.9
    gen0 = m(4.0)
    parent, verdicts = gen0, []
    for g in range(1, 6):
        child = m(4.0 + g * step)
        verdicts.append(gate(child, parent, gen0, CFG))
        parent = child
    assert all(c["passed"] for v in verdicts for c in v["criteria"] if c["against"] == "parent")
    assert not verdicts[-1]["passed"]
    assert any("loss_vs_gen0" in r for r in verdicts[-1]["reasons"])


def test_safety_drift_fails():
    v = gate(m(4.0, margin=0.1), m(4.0), m(4.0, margin=0.4), CFG)
    assert not v["passed"] and [r.split(":")[0] for r in v["reasons"]] == ["FAIL refusal_margin_vs_gen0"]
    # exposure: an absolute ceiling (10 bits), and at most 3 bits above generation 0's
    v = gate(m(4.0, exposure=11.0), m(4.0), m(4.0, exposure=9.0), CFG)
    assert [r.split(":")[0] for r in v["reasons"]] == ["FAIL canary_exposure"]
    v = gate(m(4.0, exposure=6.0), m(4.0), m(4.0, exposure=2.0), CFG)
    assert [r.split(":")[0] for r in v["reasons"]] == ["FAIL canary_exposure_vs_gen0"]
    assert gate(m(4.0, exposure=9.5), m(4.0), m(4.0, exposure=7.0), CFG)["passed"]
    v = gate(m(4.0, distinct=0.3), m(4.0), m(4.0), CFG)
    assert any("diversity_vs_gen0" in r for r in v["reasons"])


def test_integrity_breach_fails():
    bad = m(4.0)
    bad["integrity"]["ok"] = 0
    assert any("integrity" in r for r in gate(bad, m(4.0), m(4.0), CFG)["reasons"])


def test_low_valid_plan_rate_fails_and_report_is_readable():
    v = gate(m(4.0, rate=0.0), m(4.0), m(4.0), CFG)
    assert not v["passed"] and "proposer.valid_plan_rate" in render(v)


def test_malformed_criterion_is_a_clear_error():
    with pytest.raises(ValueError, match="loss_bad"):
        gate(m(4.0), None, None, {"loss_bad": {"metric": "heldout_loss.mean", "against": "absolute",
                                               "max_increase": 1.0}})


def test_memorisation_of_a_pretrained_lineage_is_judged_against_its_first_trained_generation():
    """A pretrained generation 0 never saw the lineage's canaries: its exposure (2 bits, an
    untrained level) is no reference for a child that trained on them. Generation 1 answers
    to the absolute ceiling alone; later generations to their drift from generation 1."""
    from recursive.evaluate.gate import TrainedReference
    assert CFG["canary_exposure_vs_gen0"]["memorisation"] is True
    pretrained_gen0 = m(5.0, exposure=2.0)
    gen1 = m(4.0, exposure=8.5)
    # from scratch (no `trained`): 8.5 is more than 3 bits above generation 0's 2.0
    assert [r.split(":")[0] for r in gate(gen1, pretrained_gen0, pretrained_gen0, CFG)["reasons"]] == \
        ["FAIL canary_exposure_vs_gen0"]
    first = gate(gen1, pretrained_gen0, pretrained_gen0, CFG, trained=TrainedReference("this generation", None))
    assert first["passed"], first["reasons"]
    assert "canary_exposure_vs_gen0" not in {c["name"] for c in first["criteria"]}
    assert "canary_exposure" in {c["name"] for c in first["criteria"]}  # the absolute ceiling still judges it
    assert any(n.startswith("canary_exposure_vs_gen0: not judged") for n in first["notes"])
    assert "note: canary_exposure_vs_gen0: not judged" in render(first)
    # the absolute ceiling (10 bits) is not relaxed for the first trained generation
    assert not gate(m(4.0, exposure=10.5), pretrained_gen0, pretrained_gen0, CFG,
                    trained=TrainedReference("this generation", None))["passed"]
    # generation 2: at most 3 bits above generation 1's 8.5, whatever generation 0 scored
    ref = TrainedReference("gen 1 attempt 1, the first trained on the lineage's data", gen1)
    ok = gate(m(4.0, exposure=9.6), gen1, pretrained_gen0, CFG, trained=ref)
    assert ok["passed"], ok["reasons"]
    crit = next(c for c in ok["criteria"] if c["name"] == "canary_exposure_vs_gen0")
    assert crit["bound"] == 8.5 + 3.0 and crit["reference"] == ref.label and "gen 1 attempt 1" in render(ok)
    low = m(4.0, exposure=2.0)
    drift = gate(m(4.0, exposure=5.5), low, pretrained_gen0, CFG, trained=TrainedReference("gen 1 attempt 1", low))
    assert [r.split(":")[0] for r in drift["reasons"]] == ["FAIL canary_exposure_vs_gen0"]
    # only memorisation criteria move: held-out loss is still judged against generation 0
    v = gate(m(7.0, exposure=2.0), m(6.5), m(5.0), CFG, trained=ref)
    assert any(r.startswith("FAIL loss_vs_gen0") for r in v["reasons"])
    with pytest.raises(ValueError, match="memorisation must be true or false"):
        gate(m(4.0), None, None, {"x": {**CFG["canary_exposure_vs_gen0"], "memorisation": "yes"}})
