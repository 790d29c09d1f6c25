"""SelfProposer on a random-init tiny Llama: the grammar alone must make every sample a plan."""

from __future__ import annotations

import math

import pytest
import torch

from recursive.plan import Plan
from recursive.proposers import make_proposer, proposal_schema
from recursive.proposers.self_model import SelfProposer

pytest.importorskip("xgrammar")

# the test tokenizer is tiny (about 1.6 chars per token in a plan), so leave room
MAX_NEW = 800


@pytest.fixture(scope="module")
def proposer(toy_model_dir) -> SelfProposer:
    return SelfProposer(str(toy_model_dir), max_new_tokens=MAX_NEW)


def test_sixteen_candidates_are_plans(proposer, make_ctx, check_schema, seed_code):
    ctx = make_ctx(feedback=["model: too many parameters"])
    cands = proposer.propose(ctx, 16, seed=0)
    schema = proposal_schema(ctx)
    assert [c.index for c in cands] == list(range(16))
    for c in cands:
        assert c.error is None and c.plan is not None, (c.error, c.text[-80:])
        assert not check_schema(c.plan, schema)
        Plan.model_validate({**c.plan, "code": seed_code})
        assert 0 < c.n_tokens <= MAX_NEW and math.isfinite(c.logprob) and c.logprob <= 0
        assert c.seconds > 0
    assert len({c.text for c in cands}) > 1


def test_same_seed_same_candidates_other_seed_differs(proposer, make_ctx):
    ctx = make_ctx()
    a = proposer.propose(ctx, 4, seed=7)
    b = proposer.propose(ctx, 4, seed=7)
    c = proposer.propose(ctx, 4, seed=8)
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.logprob for x in a] == [x.logprob for x in b]
    assert [x.text for x in a] != [x.text for x in c]


def test_batches_are_chunked_and_deterministic(toy_model_dir, make_ctx):
    p = SelfProposer(str(toy_model_dir), max_new_tokens=MAX_NEW, max_batch=3, code_max_chars=20)
    a, b = p.propose(make_ctx(), 5, seed=1), p.propose(make_ctx(), 5, seed=1)
    assert [c.index for c in a] == list(range(5))
    assert [c.text for c in a] == [c.text for c in b] and all(c.plan for c in a)


def test_truncation_is_reported(toy_model_dir, make_ctx):
    p = SelfProposer(str(toy_model_dir), max_new_tokens=10)
    for c in p.propose(make_ctx(), 2, seed=0):
        assert c.plan is None and c.error == "truncated" and c.n_tokens == 10


def test_unconstrained_and_greedy(toy_model_dir, make_ctx):
    free = SelfProposer(str(toy_model_dir), max_new_tokens=20, unconstrained=True)
    for c in free.propose(make_ctx(), 2, seed=0):
        assert c.n_tokens <= 20 and (c.plan is None) == (c.error is not None)
    greedy = SelfProposer(str(toy_model_dir), max_new_tokens=MAX_NEW, temperature=0, code_max_chars=10)
    a, b = greedy.propose(make_ctx(), 2, seed=0), greedy.propose(make_ctx(), 2, seed=5)
    assert a[0].text == a[1].text == b[0].text and a[0].plan is not None


def test_thread_count_is_restored(toy_model_dir, make_ctx):
    before = torch.get_num_threads()
    p = SelfProposer(str(toy_model_dir), max_new_tokens=MAX_NEW, code_max_chars=10, num_threads=1)
    p.propose(make_ctx(), 1, seed=0)
    assert torch.get_num_threads() == before


def test_factory_builds_self(toy_model_dir):
    p = make_proposer("self", model_path=str(toy_model_dir), temperature=0.7, prompt_chars=600)
    assert p.name == "self" and p.temperature == 0.7
