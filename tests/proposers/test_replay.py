"""proposer=replay: the given plan files, one per generation or per attempt, validated like
any other proposal."""

import json

import pytest

from recursive.config import compose_config
from recursive.plan import ModelSpec, count_params
from recursive.propose import judge
from recursive.proposers import make_proposer
from recursive.proposers.replay import plan_file, problems
from recursive.run_config import seed_plan
from recursive.validate import Limits


def limits():
    cfg = compose_config(["experiment=smoke"])
    seed = seed_plan(cfg).model_dump(mode="json")
    return Limits.from_config(cfg, 1024, count_params(ModelSpec(**seed["model"]), 1024)), seed


def test_replay_proposes_exactly_the_given_files(tmp_path, make_ctx, child_plan):
    a, b, c = tmp_path / "g1a1.json", tmp_path / "g1a2.json", tmp_path / "g2.json"
    for i, p in enumerate((a, b, c)):
        p.write_text(json.dumps({**child_plan, "rationale": f"plan {i}"}))
    plans = [[str(a), str(b)], str(c)]
    assert problems(plans) == []
    proposer = make_proposer("replay", plans=plans)
    ctx = make_ctx()
    got = {}
    for g, att in ((1, 1), (1, 2), (1, 3), (2, 1), (2, 5)):
        ctx.generation, ctx.attempt = g, att
        (cand,) = proposer.propose(ctx, 1, seed=0)
        got[(g, att)] = cand.plan["rationale"]
    assert got == {(1, 1): "plan 0", (1, 2): "plan 1", (1, 3): "plan 1", (2, 1): "plan 2", (2, 5): "plan 2"}
    assert plan_file(plans, 1, 2) == (str(b), "proposer.plans[0][1]")
    with pytest.raises(ValueError, match="no plan for generation 3"):
        plan_file(plans, 3, 1)


def test_replay_of_an_invalid_plan_fails_with_the_field_named(tmp_path, make_ctx, child_plan):
    lim, seed = limits()
    big = {**child_plan, "model": {**seed["model"], "num_layers": 8}}  # larger than its parent
    path = tmp_path / "big.json"
    path.write_text(json.dumps(big))
    (res,) = judge(make_proposer("replay", plans=[str(path)]).propose(make_ctx(), 1, seed=0), seed["code"], lim)
    assert not res["valid"] and any(p.startswith("model") for p in res["problems"]), res["problems"]
    path.write_text("{not json")
    (res,) = judge(make_proposer("replay", plans=[str(path)]).propose(make_ctx(), 1, seed=0), seed["code"], lim)
    assert not res["valid"] and res["problems"][0].startswith("<output>: proposer.plans[0]")
    assert "is not JSON" in res["problems"][0]


def test_replay_config_errors_name_the_entry(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    assert problems([]) and "non-empty list" in problems([])[0]
    (msg,) = problems([str(tmp_path / "ok.json")])
    assert msg.startswith("config value proposer.plans[0]: cannot read plan file")
    (msg,) = problems([[str(tmp_path / "list.json")]])
    assert msg.startswith("config value proposer.plans[0][0]:") and "expected a plan object" in msg
