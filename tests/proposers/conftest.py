"""Fixtures for the proposer tests: a tiny tokenizer and random-init Llama trained/built
here (no dependency on recursive.data), a ProposalContext factory, a schema checker."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import pytest

import recursive
from recursive.plan import ModelSpec, Plan, count_params
from recursive.proposers import ProposalContext

SEED_CODE = (Path(recursive.__file__).parent / "recipes" / "seed.py").read_text()
VOCAB = 1024
PARENT = dict(num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64, intermediate_size=688,
              context=256, tie_embeddings=False)
SOURCES = {
    "stdlib_code": "Python standard library source files",
    "stdlib_prose": "docstrings and pydoc text",
    "arithmetic": "generated arithmetic problems",
    "requests": "templated requests with helpful answers and refusals",
    "record": "the lineage's research record: prompts, plans, outcomes",
}


def _stdlib_texts() -> list[str]:
    root = Path(os.__file__).parent
    files = sorted((root / "json").glob("*.py")) + sorted((root / "email").glob("*.py"))[:8]
    return [f.read_text(errors="replace") for f in files]


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ByteLevel BPE (vocab 1024, eos <|endoftext|>) + a random-init 2-layer Llama, saved."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("toy_model")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_stdlib_texts(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    eos = fast.eos_token_id
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def _seed_plan() -> dict[str, Any]:
    return Plan.model_validate(dict(
        model=PARENT,
        data={"mixture": {"stdlib_code": 0.5, "stdlib_prose": 0.3, "arithmetic": 0.2}},
        hparams=dict(optimizer="adamw", lr=3e-3, warmup_steps=50, batch_size=8, steps=600,
                     weight_decay=0.1, grad_clip=1.0, seed=0, distill_weight=0.0, distill_temperature=2.0),
        code=SEED_CODE, rationale="human seed")).model_dump(mode="json")


@pytest.fixture
def make_ctx() -> Callable[..., ProposalContext]:
    """Factory: make_ctx(memory=[...], feedback=[...], parent_model={...}, param_ratio=0.5)."""

    def make(memory: list | None = None, feedback: list | None = None, parent_model: dict | None = None,
             param_ratio: float = 0.5, max_train_tokens: int = 2_000_000) -> ProposalContext:
        model = dict(parent_model or PARENT)
        seed = _seed_plan()
        parent_plan = {**seed, "model": model}
        return ProposalContext(
            generation=1, attempt=2 if feedback else 1,
            parent={"generation": 0, "params": count_params(ModelSpec.model_validate(model), VOCAB),
                    "model": model, "metrics": {"heldout_loss": 2.75, "arithmetic_em": 0.2, "valid_plan_rate": None}},
            seed_plan=seed, parent_plan=parent_plan, sources=dict(SOURCES),
            budget={"param_ratio": param_ratio, "max_params": 50_000_000,
                    "max_train_tokens": max_train_tokens, "vocab_size": VOCAB},
            memory=list(memory or []), feedback=list(feedback or []),
            recipe_api="lr_lambda(step, total_steps, warmup_steps) -> lr multiplier; "
                       "loss(logits, labels, teacher_logits, hp) -> scalar; imports: math, torch only.")

    return make


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Independent check of `value` against the JSON-schema subset proposal_schema uses
    (object key order included: a constrained decoder emits properties in schema order)."""
    if "anyOf" in schema:
        if any(not schema_errors(value, s, path) for s in schema["anyOf"]):
            return []
        return [f"{path}: matches no anyOf branch"]
    if "const" in schema:
        return [] if value == schema["const"] and type(value) is type(schema["const"]) else [f"{path}: != const"]
    if "enum" in schema:
        return [] if value in schema["enum"] else [f"{path}: {value!r} not in enum"]
    kind = schema["type"]
    if kind == "object":
        if not isinstance(value, dict) or list(value) != list(schema["properties"]):
            return [f"{path}: keys {list(value) if isinstance(value, dict) else value!r}"]
        return [e for k, s in schema["properties"].items() for e in schema_errors(value[k], s, f"{path}.{k}")]
    if kind in ("integer", "number"):
        ok_type = isinstance(value, int) if kind == "integer" else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            return [f"{path}: not {kind}"]
        return [] if schema["minimum"] <= value <= schema["maximum"] else [f"{path}: {value} out of bounds"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: not boolean"]
    if kind == "string":
        ok = isinstance(value, str) and re.fullmatch(schema["pattern"].strip("^$"), value)
        return [] if ok else [f"{path}: string {value!r} does not match"]
    return [f"{path}: unknown schema type {kind}"]


@pytest.fixture
def seed_code() -> str:
    return SEED_CODE


@pytest.fixture
def check_schema() -> Callable[[Any, dict], list[str]]:
    return schema_errors
