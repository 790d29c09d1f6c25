"""proposer.control_candidates: K random plans from the same schema screened beside the
proposer's K, never selected, and the win rate of the proposer's candidates against them
(recursive/propose.py::win_rate). The real screening process runs in the lineage tests;
here the screen is a function of the plan, so the expected rate can be computed."""

import json

import pytest

from recursive.attempt import Attempt
from recursive.config import compose_config
from recursive.propose import run_proposal, win_rate
from recursive.proposers.fixed import shrink_to_budget
from recursive.validate import Limits


def r(loss, valid=True):
    return {"valid": valid, "screen_loss": loss}


def test_win_rate_counts_pairs_ties_half_and_invalid_loses():
    assert win_rate([r(1.0)], [r(2.0)]) == 1.0
    assert win_rate([r(3.0)], [r(2.0)]) == 0.0
    assert win_rate([r(2.0)], [r(2.0)]) == 0.5
    # 2 own x 2 controls: (1<2 win, 1<3 win, 4>2 loss, 4>3 loss)
    assert win_rate([r(1.0), r(4.0)], [r(2.0), r(3.0)]) == 0.5
    # an invalid or unscreened candidate loses to a screened one and ties another such
    assert win_rate([r(None, valid=False)], [r(9.0)]) == 0.0
    assert win_rate([r(9.0)], [r(1.0, valid=False)]) == 1.0
    assert win_rate([r(None)], [r(None, valid=False)]) == 0.5
    assert win_rate([], [r(1.0)]) is None and win_rate([r(1.0)], []) is None


@pytest.fixture
def setup(tmp_path, make_ctx):
    ctx = make_ctx()
    plan = json.loads(json.dumps(ctx.seed_plan))
    plan["model"] = shrink_to_budget(ctx.parent["model"], int(0.5 * ctx.parent["params"]), ctx.budget["vocab_size"])
    plan["code"], plan["rationale"] = ctx.parent_plan["code"], "replayed"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    limits = Limits(sources=tuple(ctx.sources), vocab_size=ctx.budget["vocab_size"], parent_params=ctx.parent["params"],
                    param_ratio=0.5, max_params=50_000_000, max_train_tokens=2_000_000, smoke_test=False)
    return ctx, path, limits


def test_controls_are_screened_beside_the_proposals_and_never_selected(tmp_path, setup):
    ctx, path, limits = setup
    cfg = compose_config(["proposer=replay", f"proposer.plans=[{path}]", "proposer.candidates=3",
                          "proposer.screen_steps=5", "proposer.control_candidates=true"])
    screened = []

    def screen(cands):  # the controls screen better: the proposer loses to every screened one
        screened.append([i for i, _ in cands])
        return {str(i): {"loss": 1.0 if i < 3 else 0.5, "seconds": 0.1} for i, p in cands}

    at = Attempt(tmp_path, 1, 1)
    plan, summary = run_proposal(cfg, ctx, tmp_path / "unused", limits, seed=11, attempt=at, screen=screen)
    cands = summary["candidates"]
    own, ctrl = [c for c in cands if not c.get("control")], [c for c in cands if c.get("control")]
    assert [c["index"] for c in own] == [0, 1, 2] and [c["index"] for c in ctrl] == [3, 4, 5]
    assert all(c["rationale"] == "random search" for c in (json.loads(c["text"]) for c in ctrl))
    # every valid candidate, own and control, went through one screening
    assert screened == [[c["index"] for c in cands if c["valid"]]]
    # only the proposer's own are selectable, even though the screen says controls are better
    assert summary["selected"] in (0, 1, 2) and plan is not None and plan.rationale == "replayed"
    assert summary["control"]["k"] == 3 and summary["valid_plan_rate"] == 1.0
    n_valid_ctrl = sum(c["valid"] for c in ctrl)
    assert n_valid_ctrl >= 1  # the random controls of this seed include screened plans
    # own 1.0 loses to each screened control (0.5) and beats each invalid one (+inf)
    assert summary["win_rate_vs_random"] == pytest.approx((3 - n_valid_ctrl) / 3)
    assert json.loads(at.candidates.read_text()) == cands  # controls recorded with the rest


def test_off_by_default_and_never_for_random_search(tmp_path, setup):
    ctx, path, limits = setup
    calls = []
    screen = lambda cands: calls.append(cands) or {str(i): {"loss": 1.0} for i, _ in cands}  # noqa: E731
    cfg = compose_config(["proposer=replay", f"proposer.plans=[{path}]", "proposer.candidates=2",
                          "proposer.screen_steps=5"])
    _, summary = run_proposal(cfg, ctx, tmp_path / "unused", limits, seed=1, attempt=Attempt(tmp_path, 1, 1),
                              screen=screen)
    assert "win_rate_vs_random" not in summary and len(summary["candidates"]) == 2
    cfg = compose_config(["proposer=random", "proposer.candidates=2", "proposer.control_candidates=true"])
    _, summary = run_proposal(cfg, ctx, tmp_path / "unused", limits, seed=1, attempt=Attempt(tmp_path, 1, 2),
                              screen=screen)
    assert "win_rate_vs_random" not in summary and len(summary["candidates"]) == 2
