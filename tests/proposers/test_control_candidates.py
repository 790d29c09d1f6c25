"""proposer.control_candidates: K random plans from the same schema screened beside the
proposer's K, never selected, and the win rate of the proposer's candidates against them
(recursive/propose.py::win_rate). The real screening process runs in the lineage tests;
here the screen is a function of the plan, so the expected rate can be computed."""

import json

import pytest

from recursive.attempt import Attempt
from recursive.config import compose_config
from recursive.propose import control_seed, run_proposal, win_rate
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


def screen_by_plan(cands):
    """A deterministic screen loss that depends on the plan alone (what the real miniature
    approximates): lr and steps decide it, so identical plans score identically."""
    return {str(i): {"loss": 10.0 - 100 * p.hparams.lr - p.hparams.steps / 1e4, "seconds": 0.1} for i, p in cands}


class Rigged:
    """A proposer that proposes what random search would: either the controls' own plans, or
    the best of many random plans by the screen above."""

    name = "rigged"

    def __init__(self, best_of=None):
        self.best_of = best_of

    def propose(self, ctx, k, seed):
        from recursive.plan import Plan
        from recursive.proposers.random_search import RandomProposer
        if self.best_of is None:  # exactly the control candidates run_proposal will draw
            return RandomProposer().propose(ctx, k, control_seed(seed))
        pool = RandomProposer().propose(ctx, self.best_of, seed + 1)
        pool.sort(key=lambda c: screen_by_plan([(0, Plan.model_validate(c.plan))])["0"]["loss"])
        for i, c in enumerate(pool[:k]):
            c.index = i
        return pool[:k]


@pytest.mark.parametrize("best_of, expected", [(None, 0.5), (200, 1.0)])
def test_win_rate_of_a_proposer_that_is_random_is_one_half_and_of_a_best_of_pool_near_one(
        tmp_path, setup, monkeypatch, best_of, expected):
    import recursive.propose as propose
    ctx, path, limits = setup
    monkeypatch.setattr(propose, "_proposer", lambda cfg, model_path: Rigged(best_of))
    cfg = compose_config(["proposer=self", "proposer.candidates=4", "proposer.screen_steps=5",
                          "proposer.control_candidates=true"])
    rates = []
    for seed in range(5):
        _, summary = run_proposal(cfg, ctx, tmp_path / "unused", limits, seed=seed,
                                  attempt=Attempt(tmp_path, 1, seed + 1), screen=screen_by_plan)
        rates.append(summary["win_rate_vs_random"])
    mean = sum(rates) / len(rates)
    assert mean == pytest.approx(expected, abs=0.1), rates
