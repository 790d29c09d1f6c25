"""The decode space: what xgrammar 0.2.8 enforces, and that the schema only admits plans."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recursive.plan import ModelSpec, Plan, count_params
from recursive.proposers import plan_text, proposal_schema
from recursive.proposers.base import SEPARATORS
from recursive.proposers.random_search import sample_schema
from recursive.proposers.schema import sort_schema_keys, text_schema

xgr = pytest.importorskip("xgrammar")


@pytest.fixture(scope="module")
def compiler(toy_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_model_dir)
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=1024, stop_token_ids=[tok.eos_token_id])
    return xgr.GrammarCompiler(info), tok.eos_token_id


def accepts(compiler, schema: dict, text: str) -> bool:
    comp, eos = compiler
    grammar = comp.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=SEPARATORS)
    m = xgr.GrammarMatcher(grammar)
    return m.accept_string(text) and m.accept_token(eos) and m.is_terminated()


# (property schema, accepted values, refused values): the keyword findings the schema relies on
KEYWORDS = [
    ({"type": "integer", "minimum": 1, "maximum": 10}, ["1", "10"], ["0", "11", "-1"]),
    ({"enum": [16, 32, 64]}, ["16", "64"], ["48", "128"]),
    ({"const": 1}, ["1"], ["2"]),
    ({"type": "number", "minimum": 0.0001, "maximum": 0.01}, ["0.0001", "0.009999", "0.01"],
     ["0.0000999", "0.0100001", "1e-3", "0.1"]),
    ({"type": "number", "minimum": 0, "maximum": 1}, ["0", "1", "0.5", "0.123456"],
     ["1.5", "-0.1", "0.1234567"]),  # at most 6 fractional digits
    ({"type": "string", "maxLength": 3}, ['"abc"', '"a\tb"'], ['"abcd"']),  # raw tab admitted!
    (text_schema(3), ['"abc"', '""'], ['"abcd"', '"a\tb"', '"\u00e9"', '"a\\\\"']),
]


@pytest.mark.parametrize("schema,good,bad", KEYWORDS)
def test_xgrammar_keywords(compiler, schema, good, bad):
    obj = {"type": "object", "properties": {"x": schema}, "required": ["x"], "additionalProperties": False}
    for v in good:
        assert accepts(compiler, obj, '{"x":' + v + "}"), v
    for v in bad:
        assert not accepts(compiler, obj, '{"x":' + v + "}"), v


def test_long_text_bound_compiles_and_is_exact(compiler):
    # a regex count > 128 crashes xgrammar 0.2.8's cached compile; text_schema chunks it
    obj = {"type": "object", "properties": {"x": text_schema(300)}, "required": ["x"], "additionalProperties": False}
    assert accepts(compiler, obj, '{"x":"' + "a" * 300 + '"}')
    assert not accepts(compiler, obj, '{"x":"' + "a" * 301 + '"}')


def _walk(schema, path="$"):
    yield path, schema
    for i, s in enumerate(schema.get("anyOf", [])):
        yield from _walk(s, f"{path}|{i}")
    for k, s in schema.get("properties", {}).items():
        yield from _walk(s, f"{path}.{k}")


@pytest.mark.parametrize("link_context", [True, False])
def test_schema_is_closed_and_bounded(make_ctx, link_context):
    ctx = make_ctx()
    schema = proposal_schema(ctx, link_context=link_context)
    # linked: one whole-plan branch per context <= the parent's 256; else one root object
    roots = schema["anyOf"] if link_context else [schema]
    assert len(roots) == (3 if link_context else 1)
    for root in roots:
        assert list(root["properties"]) == ["schema_version", "model", "data", "hparams", "code", "rationale"]
        assert list(root["properties"]["data"]["properties"]["mixture"]["properties"]) == sorted(ctx.sources)
    for path, s in _walk(schema):
        if s.get("type") == "object":
            assert s["additionalProperties"] is False and s["required"] == list(s["properties"]), path
        if s.get("type") in ("integer", "number"):
            assert "minimum" in s and "maximum" in s, path
        if s.get("type") == "string":
            assert "pattern" in s, path


def test_schema_samples_are_valid_plans(make_ctx, check_schema, seed_code):
    ctx = make_ctx()
    schema = proposal_schema(ctx)
    rng = np.random.default_rng(0)
    for _ in range(300):
        plan = sample_schema(schema, rng)
        assert not check_schema(plan, schema)
        m, hp = plan["model"], plan["hparams"]
        assert m["num_heads"] % m["num_kv_heads"] == 0
        assert m["num_layers"] <= 4 and m["num_heads"] <= 4 and m["num_kv_heads"] <= 2 and m["context"] <= 256
        assert hp["steps"] * hp["batch_size"] * m["context"] <= ctx.budget["max_train_tokens"]
        # the parameter budget holds for every sample, not just most
        params = count_params(ModelSpec.model_validate(m), ctx.budget["vocab_size"])
        assert params <= ctx.budget["param_ratio"] * ctx.parent["params"]
        Plan.model_validate({**plan, "code": seed_code})
    unlinked = proposal_schema(ctx, link_context=False)
    for _ in range(100):
        plan = sample_schema(unlinked, rng)
        assert plan["hparams"]["steps"] * plan["hparams"]["batch_size"] * 64 <= ctx.budget["max_train_tokens"]
        Plan.model_validate({**plan, "code": seed_code})


@pytest.mark.parametrize("sort_keys", [False, True])
def test_rendered_samples_are_in_the_grammar(compiler, make_ctx, sort_keys):
    # the random proposer's space and plan_text's layout are exactly the decoder's language
    schema = proposal_schema(make_ctx(), sort_keys=sort_keys)
    rng = np.random.default_rng(1)
    for _ in range(40):
        plan = sample_schema(schema, rng)
        assert accepts(compiler, schema, plan_text(plan, sort_keys=sort_keys))


def test_sort_keys_sorts_every_object(make_ctx):
    schema = proposal_schema(make_ctx(), sort_keys=True)
    for path, s in _walk(schema):
        if s.get("type") == "object":
            assert list(s["properties"]) == sorted(s["properties"]) == s["required"], path
    assert sort_schema_keys(schema) == schema


def test_schema_follows_parent_and_budget(make_ctx):
    small = dict(num_layers=2, num_heads=1, num_kv_heads=1, head_dim=32, intermediate_size=100,
                 context=128, tie_embeddings=True)
    schema = proposal_schema(make_ctx(parent_model=small, max_train_tokens=10_000))
    for root, context in zip(schema["anyOf"], [64, 128]):
        model = root["properties"]["model"]
        branches = model.get("anyOf", [model])  # one per architecture that fits the budget
        assert {b["properties"]["head_dim"]["const"] for b in branches} <= {16, 32}
        assert all(b["properties"]["num_heads"]["const"] == 1 for b in branches)
        assert all(b["properties"]["context"]["enum"] == [context] for b in branches)
        assert all(b["properties"]["intermediate_size"]["maximum"] <= 100 for b in branches)
        for branch in root["properties"]["hparams"]["anyOf"]:
            b = branch["properties"]["batch_size"]["const"]
            assert branch["properties"]["steps"]["maximum"] == max(1, 10_000 // (b * context))


def test_plan_text_layouts(make_ctx):
    plan = make_ctx().seed_plan
    assert plan_text(plan, sort_keys=True) == json.dumps(plan, sort_keys=True, separators=(",", ":"))
    text = plan_text({**plan, "hparams": {**plan["hparams"], "distill_weight": 0.000083}})
    assert list(json.loads(text)) == ["schema_version", "model", "data", "hparams", "code", "rationale"]
    assert '"distill_weight":0.000083' in text  # json.dumps would write 8.3e-05
