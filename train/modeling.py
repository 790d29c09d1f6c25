"""Model construction: the plan's architecture as a transformers Llama.

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
