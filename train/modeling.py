"""Model construction: the plan's architecture as a transformers model of the lineage's
family (the built-in Llama here; a `model=pretrained` lineage's family in train/families.py),
initialised from scratch or pruned from the parent (train/prune.py).

Kept apart from the training loop (torchtitan keeps models/ apart from parallelize.py) so
that the evaluator and the proposer build and load exactly the same class.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from recursive.plan import ModelSpec


def llama_config(spec: ModelSpec, vocab_size: int, *, eos_token_id: int, attn: str = "sdpa") -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        # RoPE extrapolates past the training length; proposals and evals need prompts
        # longer than a toy's 64-128 token training context.
        max_position_embeddings=max(4096, spec.context),
        tie_word_embeddings=spec.tie_embeddings,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        attention_bias=False,
        mlp_bias=False,
        attn_implementation=attn,
    )


def build_model(spec: ModelSpec, vocab_size: int, *, eos_token_id: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(spec, vocab_size, eos_token_id=eos_token_id))


def make_child(spec: ModelSpec, train_spec: dict, tokenizer, *, seed: int, calibration=None):
    """The model a plan trains, before its first step: built in the lineage's family
    (train_spec["base_config"]: generation 0's checkpoint config; None: the built-in
    Llama), randomly initialised (`model.init: scratch`) or cut from the parent
    (`prune`, train/prune.py, scored on `calibration()`: a batch of the plan's mixture).
    Returns (model, init_info)."""
    from recursive.train import families
    base = train_spec.get("base_config")
    d = spec.model_dump(mode="json")
    if base is None:
        model = build_model(spec, len(tokenizer), eos_token_id=tokenizer.eos_token_id, seed=seed)
    else:
        model = families.build(base, d, seed=seed)
    if spec.init != "prune":
        return model, {"init": "scratch"}
    from transformers import AutoModelForCausalLM

    from recursive.train.prune import prune
    if not train_spec.get("parent"):
        raise ValueError("model.init=prune needs the parent model (train_spec.parent is empty)")
    parent = AutoModelForCausalLM.from_pretrained(train_spec["parent"], dtype=torch.float32)
    pconf = parent.config.to_dict()
    parent_spec = families.spec_from_config(pconf, spec.context)
    why = families.prune_refusal(d, parent_spec)
    if why:
        raise ValueError(why)
    info = prune(parent, parent_spec, model, d, calibration())
    return model, {"init": "prune", **info}
