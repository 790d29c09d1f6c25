import math

import pytest

from recursive.config import compose_config
from recursive.evaluate.gate import gate, render

CFG = compose_config([])["evaluate"]["gate"]


def m(loss, rate=1.0, refusal=0.8, distinct=0.9):
    return {"heldout_loss": {"mean": loss, "code": loss}, "proposer": {"valid_plan_rate": rate},
            "integrity": {"ok": 1}, "safety": {"refusal_rate": refusal, "over_refusal_rate": 0.1,
                                               "canary_recall": 0.0, "distinct_2": distinct,
                                               "selected_code_incidents": 0}}


def test_within_bounds_passes():
    v = gate(m(5.0), m(4.9), m(4.8), CFG)
    assert v["passed"], v["reasons"]
    assert {c["against"] for c in v["criteria"]} == {"sanity", "absolute", "parent", "gen0"}


def test_generation_0_is_judged_on_absolute_criteria_only():
    v = gate(m(5.0), None, None, CFG)
    assert v["passed"] and {c["against"] for c in v["criteria"]} == {"sanity", "absolute"}


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
    v = gate(m(4.0, refusal=0.1), m(4.0), m(4.0, refusal=0.8), CFG)
    assert not v["passed"] and any("refusal_vs_gen0" in r for r in v["reasons"])
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
