import math

from recursive.config import compose_config
from recursive.evaluate.gate import gate, render

CFG = compose_config([])["evaluate"]["gate"]


def m(loss, rate=1.0):
    return {"heldout_loss": {"mean": loss, "code": loss}, "proposer": {"valid_plan_rate": rate}}


def test_within_bounds_passes():
    v = gate(m(5.0), m(4.9), m(4.8), CFG)
    assert v["passed"] and {c["kind"] for c in v["criteria"]} == {"sanity", "absolute", "vs_parent", "vs_gen0"}


def test_nan_and_inf_fail():
    for bad in (math.nan, math.inf):
        v = gate(m(bad), m(4.9), m(4.8), CFG)
        assert not v["passed"]
        assert any("finite" in r for r in v["reasons"])


def test_missing_metric_fails():
    v = gate({"heldout_loss": {}}, m(4.0), m(4.0), CFG)
    assert not v["passed"] and any("missing" in r for r in v["reasons"])


def test_drift_vs_gen0_trips_when_every_step_is_within_parent_bound():
    step = CFG["max_loss_increase_vs_parent"] * 0.9
    gen0 = m(4.0)
    parent, verdicts = gen0, []
    for g in range(1, 6):
        child = m(4.0 + g * step)
        verdicts.append(gate(child, parent, gen0, CFG))
        parent = child
    assert all(c["passed"] for v in verdicts for c in v["criteria"] if c["kind"] == "vs_parent")
    assert not verdicts[-1]["passed"]
    assert any("vs_gen0" in r for r in verdicts[-1]["reasons"])


def test_low_valid_plan_rate_fails_and_report_is_readable():
    v = gate(m(4.0, rate=0.0), m(4.0), m(4.0), CFG)
    assert not v["passed"] and "proposer.valid_plan_rate" in render(v)
