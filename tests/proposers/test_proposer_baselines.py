"""Random and fixed baselines, and the factory."""

from __future__ import annotations

import json

import pytest

from recursive.plan import ModelSpec, Plan, count_params
from recursive.proposers import PROPOSERS, make_proposer, proposal_schema
from recursive.proposers.fixed import shrink_to_budget


def test_random_within_schema_and_deterministic(make_ctx, check_schema):
    ctx = make_ctx()
    rand = make_proposer("random")
    a, b, c = rand.propose(ctx, 50, seed=3), rand.propose(ctx, 50, seed=3), rand.propose(ctx, 50, seed=4)
    schema = proposal_schema(ctx, code_max_chars=0, rationale_max_chars=0)
    for cand in a:
        plan = dict(cand.plan)
        assert plan["code"] == ctx.parent_plan["code"] and plan["rationale"] == "random search"
        assert not check_schema({**plan, "code": "", "rationale": ""}, schema)
        assert json.loads(cand.text) == plan and cand.logprob == 0.0
        Plan.model_validate(plan)
    assert [x.plan for x in a] == [x.plan for x in b]
    assert [x.plan for x in a] != [x.plan for x in c]
    assert len({json.dumps(x.plan) for x in a}) == 50


def test_random_covers_the_space(make_ctx):
    plans = [c.plan for c in make_proposer("random").propose(make_ctx(), 400, seed=0)]
    # no min_param_ratio in this budget: every head count that fits param_ratio x parent
    # (the parent here has 4 heads) is reachable, and every sample fits it
    assert {p["model"]["num_heads"] for p in plans} == {1, 2, 3, 4}
    ctx = make_ctx()
    assert all(count_params(ModelSpec.model_validate(p["model"]), ctx.budget["vocab_size"])
               <= ctx.budget["param_ratio"] * ctx.parent["params"] for p in plans)
    assert {p["hparams"]["optimizer"] for p in plans} == {"adamw", "sgd"}
    assert {p["model"]["tie_embeddings"] for p in plans} == {True, False}
    lrs = [p["hparams"]["lr"] for p in plans]
    assert 1e-4 <= min(lrs) < 1e-3 and 9e-3 < max(lrs) <= 1e-2


def _spec(layers, heads, kv, head_dim, ffn, context, tie):
    return dict(num_layers=layers, num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
                intermediate_size=ffn, context=context, tie_embeddings=tie)


PARENTS = [_spec(4, 4, 2, 64, 688, 256, False), _spec(12, 12, 4, 64, 2048, 1024, True),
           _spec(2, 2, 1, 32, 128, 128, False)]


@pytest.mark.parametrize("parent", PARENTS)
@pytest.mark.parametrize("ratio", [0.9, 0.5, 0.25, 0.1])
def test_fixed_fits_the_budget(make_ctx, parent, ratio):
    ctx = make_ctx(parent_model=parent, param_ratio=ratio)
    cands = make_proposer("fixed").propose(ctx, 3, seed=0)
    assert len(cands) == 3 and all(c.plan == cands[0].plan for c in cands)
    plan = Plan.model_validate(cands[0].plan)
    assert count_params(plan.model, ctx.budget["vocab_size"]) <= ratio * ctx.parent["params"]
    assert plan.model.num_heads % plan.model.num_kv_heads == 0
    assert plan.model.context == parent["context"]
    seed = ctx.seed_plan
    assert cands[0].plan["data"] == seed["data"]
    # the seed's hyperparameters; its steps cut only where the child's context would overrun the token budget
    same = {k: v for k, v in seed["hparams"].items() if k not in ("steps", "warmup_steps")}
    assert {k: cands[0].plan["hparams"][k] for k in same} == same
    assert plan.train_tokens() <= ctx.budget["max_train_tokens"]
    if seed["hparams"]["steps"] * seed["hparams"]["batch_size"] * parent["context"] <= ctx.budget["max_train_tokens"]:
        assert cands[0].plan["hparams"] == seed["hparams"]
    assert plan.code == seed["code"] and plan.rationale == "fixed seed recipe"


def test_fixed_shrinks_gently(make_ctx):
    # a mild ratio keeps depth: the FFN and then heads/layers give way first
    parent = PARENTS[1]
    params = count_params(ModelSpec.model_validate(parent), 1024)
    spec = shrink_to_budget(parent, int(0.5 * params), 1024)
    assert spec["num_layers"] >= parent["num_layers"] // 2
    assert shrink_to_budget(parent, params, 1024) == parent  # already fits: unchanged


def test_factory_names():
    assert set(PROPOSERS) >= {"self", "random", "fixed"}
    assert make_proposer("random").name == "random" and make_proposer("fixed").name == "fixed"
    with pytest.raises(ValueError, match="fixed, openai, random, replay, self"):
        make_proposer("oracle")


def test_trust_region_keeps_samples_near_the_parent_plan(make_ctx):
    ctx = make_ctx()
    ctx.budget["trust_region"] = {"lr_factor": 3.0, "factor": 2.0, "tokens_factor": 2.0}
    ph = ctx.parent_plan["hparams"]
    parent_tokens = ph["steps"] * ph["batch_size"] * ctx.parent_plan["model"]["context"]
    mix = ctx.parent_plan["data"]["mixture"]
    total = sum(mix.values())
    plans = [c.plan for c in make_proposer("random").propose(ctx, 200, seed=1)]
    for p in plans:
        h = p["hparams"]
        assert ph["lr"] / 3 - 1e-9 <= h["lr"] <= ph["lr"] * 3 + 1e-9
        assert h["optimizer"] == ph["optimizer"]
        tokens = h["steps"] * h["batch_size"] * p["model"]["context"]
        assert parent_tokens / 2 - 64 * h["batch_size"] <= tokens <= parent_tokens * 2
        assert h["warmup_steps"] <= h["steps"]
        for name, w in p["data"]["mixture"].items():
            assert w >= mix.get(name, 0) / total / 2 - 1e-6
    # still a search: the samples differ from each other
    assert len({p["hparams"]["lr"] for p in plans}) > 100
