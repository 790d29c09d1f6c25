"""Code proposed as search/replace edits to the parent's recipe: applied, policy-checked and
smoke-tested like a whole module; recorded as code_origin "edited"; a bad edit falls back
to the parent's recipe and says why."""

from __future__ import annotations

import json

import pytest

from recursive.propose import judge
from recursive.proposers.base import Candidate
from recursive.proposers.fixed import shrink_to_budget
from recursive.recipe import apply_edits
from recursive.validate import Limits


def edit(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE"


WARMUP = "        return (step + 1) / (warmup_steps + 1)"
FLOOR = "    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))"


@pytest.fixture
def ctx(make_ctx):
    return make_ctx()


@pytest.fixture
def limits(ctx) -> Limits:  # smoke test on: edited code runs in the rlimited child like any module
    return Limits(sources=tuple(ctx.sources), vocab_size=ctx.budget["vocab_size"], parent_params=ctx.parent["params"],
                  param_ratio=0.5, max_params=50_000_000, max_train_tokens=2_000_000, smoke_test=True)


def candidate(ctx, code: str, index: int = 0) -> Candidate:
    plan = json.loads(json.dumps(ctx.seed_plan))
    plan["model"] = shrink_to_budget(ctx.parent["model"], int(0.5 * ctx.parent["params"]), ctx.budget["vocab_size"])
    plan["code"], plan["rationale"] = code, "edit"
    return Candidate(index=index, text=json.dumps(plan), plan=plan, logprob=0.0, n_tokens=1, seconds=0.0)


def test_edit_applies_to_the_parent_recipe(ctx, limits):
    parent = ctx.parent_plan["code"]
    new_floor = FLOOR.replace("0.1 + 0.9", "0.05 + 0.95")
    two = edit(FLOOR, new_floor) + "\n" + edit(WARMUP, WARMUP.replace("(step + 1)", "(step + 1.0)"))
    [res] = judge([candidate(ctx, two)], parent, limits)
    assert res["valid"] and res["code_valid"] and res["code_origin"] == "edited", res
    code = res["plan"].code
    assert new_floor in code and FLOOR not in code and "(step + 1.0)" in code
    assert code.replace(new_floor, FLOOR).replace("(step + 1.0)", "(step + 1)") == parent
    assert res["code_edit"] == two  # what the proposer wrote is kept next to the result


@pytest.mark.parametrize("code, why", [
    (edit("    return this_line_is_not_there", "    return 1.0"), "occurs 0 times"),
    (edit("", "import os"), "occurs 0 times"),
    ("<<<<<<< SEARCH\nonly a start", "no complete SEARCH"),
    (edit(FLOOR, FLOOR) + "\ntrailing words", "text outside the edit blocks"),
])
def test_malformed_edit_falls_back_to_the_parent(ctx, limits, code, why):
    [res] = judge([candidate(ctx, code)], ctx.parent_plan["code"], limits)
    assert res["code_origin"] == "inherited" and not res["code_valid"]
    assert any(why in p for p in res["code_problems"]), res["code_problems"]
    assert res["valid"] and res["plan"].code == ctx.parent_plan["code"]  # the rest of the plan still stands


def test_edit_that_breaks_the_policy_is_refused(ctx, limits):
    hostile = edit("import math", "import math\nimport os")
    [res] = judge([candidate(ctx, hostile)], ctx.parent_plan["code"], limits)
    assert res["code_origin"] == "inherited" and any("os" in p for p in res["code_problems"])


def test_edit_that_fails_the_smoke_test_is_refused(ctx, limits):
    nan_lr = edit(FLOOR, "    return float('nan')")
    [res] = judge([candidate(ctx, nan_lr)], ctx.parent_plan["code"], limits)
    assert res["code_origin"] == "inherited" and any("smoke test" in p for p in res["code_problems"])


def test_search_text_must_be_unique():
    code, problems = apply_edits("a = 1\na = 1\n", edit("a = 1", "a = 2"))
    assert code is None and "occurs 2 times" in problems[0]
