import json

import pytest

from recursive.config import compose_config
from recursive.run_config import seed_plan
from recursive.plan import count_params
from recursive.validate import Limits, validate_plan


@pytest.fixture(scope="module")
def cfg():
    return compose_config(["experiment=smoke"])


@pytest.fixture()
def seed(cfg):
    return seed_plan(cfg).model_dump(mode="json")


@pytest.fixture()
def limits(cfg, seed):
    from recursive.plan import ModelSpec
    return Limits.from_config(cfg, 1024, count_params(ModelSpec(**seed["model"]), 1024))


def fields(problems):
    return {p.field for p in problems}


def test_seed_plan_is_valid_against_no_parent(cfg, seed):
    plan, problems = validate_plan(seed, Limits.from_config(cfg, 1024, None))
    assert plan is not None and problems == []


def test_a_child_must_be_smaller(seed, limits):
    _, problems = validate_plan(seed, limits)  # same size as its parent
    assert "model" in fields(problems)
    assert any("at most 0.85 x parent" in p.message for p in problems)
    seed["model"]["intermediate_size"] = 64
    seed["model"]["num_layers"] = 1
    plan, problems = validate_plan(seed, limits)
    assert problems == [], problems


def test_unregistered_source_and_budget(seed, limits):
    seed["model"]["num_layers"] = 1
    seed["data"]["mixture"] = {"code": 1.0, "/etc/passwd": 0.5}
    seed["hparams"]["steps"] = 100000
    _, problems = validate_plan(seed, limits)
    assert {"data.mixture./etc/passwd", "hparams.steps"} <= fields(problems)


def test_kv_heads_must_divide_heads(seed, limits):
    seed["model"].update(num_layers=1, num_heads=3, num_kv_heads=2)
    _, problems = validate_plan(seed, limits)
    assert "model.num_kv_heads" in fields(problems)


def test_all_zero_mixture_refused(seed, limits):
    seed["model"]["num_layers"] = 1
    seed["data"]["mixture"] = {"code": 0.0}
    _, problems = validate_plan(seed, limits)
    assert "data.mixture" in fields(problems)


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"[1,2]", b"null", b"{\"model\": NaN}", b"{" * 100000,
                                 json.dumps({"model": 1}).encode()])
def test_garbage_gives_problems_not_exceptions(raw, limits):
    plan, problems = validate_plan(raw, limits)
    assert plan is None and problems and all(p.field and p.message for p in problems)


def test_hostile_code_is_a_code_problem(seed, limits):
    seed["model"]["num_layers"] = 1
    seed["code"] = seed["code"] + "\nimport os\n"
    _, problems = validate_plan(seed, limits)
    assert fields(problems) == {"code"}
    assert "import of 'os'" in problems[0].message


def test_a_child_may_not_collapse(cfg, seed, limits):
    seed["model"].update(num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=16)
    _, problems = validate_plan(seed, limits)
    assert any("at least 0.3 x parent" in p.message for p in problems)


def test_token_budget_floor(seed, limits):
    seed["model"]["num_layers"] = 1
    seed["hparams"]["steps"] = 1
    _, problems = validate_plan(seed, limits)
    assert any(p.field == "hparams.steps" and "min_train_tokens" in p.message for p in problems)


def test_batch_size_must_split_over_the_ranks(seed):
    # two DDP ranks with 2 accumulation steps: every batch must split into 4 equal micro-batches
    ddp = compose_config(["experiment=smoke", "train=ddp", "train.grad_accum=2"])
    lim = Limits.from_config(ddp, 1024, None)
    assert lim.batch_multiple == 4
    seed["hparams"]["batch_size"] = 2
    seed["hparams"]["steps"] = 1000
    _, problems = validate_plan(seed, lim)
    assert [p.field for p in problems] == ["hparams.batch_size"]
    assert "multiple of 4" in problems[0].message and "train.num_processes" in problems[0].message


def test_schema_offers_only_batch_sizes_the_ranks_can_split(seed):
    from recursive.proposers.base import ProposalContext
    from recursive.proposers.schema import proposal_schema
    ctx = ProposalContext(generation=1, attempt=1, parent={"generation": 0, "params": 524928, "model": seed["model"],
                                                           "metrics": {}},
                          seed_plan=seed, parent_plan=seed, sources={"code": "", "prose": ""},
                          budget={"param_ratio": 0.85, "max_params": 10**7, "max_train_tokens": 300000,
                                  "vocab_size": 1024, "batch_multiple": 4})
    schema = proposal_schema(ctx)
    sizes = {b["properties"]["batch_size"]["const"] for root in schema.get("anyOf", [schema])
             for b in root["properties"]["hparams"]["anyOf"]}
    assert sizes and all(s % 4 == 0 for s in sizes)
