"""The plan: everything generation N decides about generation N+1, as one typed object.

A plan is untrusted input (a model wrote it), so every field is bounded and unknown keys
are refused. Bounds matter twice: they reject nonsense, and the JSON schema derived from
them constrains the proposer's decoder (an unbounded float lets a constrained decoder emit
200-digit numbers; see shared/notes/FACTS.md).

Cross-field rules that a JSON schema cannot express (kv heads dividing heads, the
parameter budget, registered data sources, the recipe code policy) live in
`recursive.validate`, which is the single place both the loop and `recursive check-plan`
call.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelSpec(_Strict):
    """The successor's architecture, family-neutral: the lineage's family (the built-in
    Llama, or generation 0's checkpoint's; train/families.py) maps these onto its own
    config class. The vocabulary is not part of the plan: the whole lineage shares one
    tokenizer."""

    num_layers: int = Field(ge=1, le=48, description="Transformer blocks.")
    num_heads: int = Field(ge=1, le=64, description="Query heads; hidden size = num_heads * head_dim.")
    num_kv_heads: int = Field(ge=1, le=64, description="Key/value heads (GQA); must divide num_heads.")
    head_dim: Literal[16, 32, 64, 128] = Field(description="Width of one attention head.")
    intermediate_size: int = Field(ge=16, le=32768, description="SwiGLU hidden width.")
    context: Literal[64, 128, 256, 512, 1024, 2048, 4096] = Field(description="Training sequence length in tokens.")
    tie_embeddings: bool = Field(description="Share the input embedding and the output head.")
    init: Literal["scratch", "prune"] = Field(
        default="scratch", description="scratch: random initialisation; prune: cut from the parent by "
                                       "structured pruning (train/prune.py), then trained.")

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim


class DataSpec(_Strict):
    """The training mixture: relative weights over registered data sources only. Weights
    are normalised by their sum; a source left out gets weight 0."""

    mixture: dict[str, float] = Field(description="source name -> relative weight in [0, 1].")


class HParams(_Strict):
    """Optimisation. The token budget of a plan is steps * batch_size * model.context."""

    optimizer: Literal["adamw", "sgd"] = Field(description="Optimiser family.")
    lr: float = Field(ge=1e-6, le=0.1, description="Peak learning rate.")
    warmup_steps: int = Field(ge=0, le=100_000, description="Warmup steps, passed to the recipe's schedule.")
    batch_size: int = Field(ge=1, le=4096, description="Sequences per optimiser step (global).")
    steps: int = Field(ge=1, le=1_000_000, description="Optimiser steps.")
    weight_decay: float = Field(ge=0.0, le=1.0, description="Decoupled weight decay.")
    grad_clip: float = Field(ge=0.0, le=100.0, description="Global grad-norm clip; 0 disables.")
    seed: int = Field(ge=0, le=2**31 - 1, description="Seed of init, data order and dropout.")
    distill_weight: float = Field(ge=0.0, le=1.0, description="Weight of the KL-to-parent term; 0 = no teacher.")
    distill_temperature: float = Field(ge=0.5, le=10.0, description="Softmax temperature of the distillation term.")


class Plan(_Strict):
    """One generation's plan: architecture, data, hyperparameters, recipe code, rationale."""

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Plan schema version.")
    model: ModelSpec
    data: DataSpec
    hparams: HParams
    code: str = Field(max_length=20_000, description="Python source of the recipe module (see recursive/recipes/seed.py).")
    rationale: str = Field(max_length=2_000, description="The proposer's reasons, kept in the lineage.")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Plan":
        return cls.model_validate_json(text)

    def train_tokens(self) -> int:
        return self.hparams.steps * self.hparams.batch_size * self.model.context

    def normalized_mixture(self) -> dict[str, float]:
        total = sum(self.data.mixture.values())
        return {k: v / total for k, v in sorted(self.data.mixture.items()) if v > 0}


def count_params(spec: ModelSpec, vocab_size: int, base: dict | None = None) -> int:
    """Exact parameter count of the model the training stage builds from `spec`: with
    `base` (a `model=pretrained` lineage's family config) counted on the instantiated
    model (recursive.train.families.count); without, the built-in LlamaForCausalLM of
    `train.modeling` (no biases, RMSNorm weights, SwiGLU MLP), tested against the module."""
    if base is not None:
        from recursive.train.families import count
        return count(base, spec.model_dump(mode="json"))
    h, kv = spec.hidden_size, spec.num_kv_heads * spec.head_dim
    attn = h * h * 2 + h * kv * 2  # q, o; k, v
    mlp = 3 * h * spec.intermediate_size
    block = attn + mlp + 2 * h  # two RMSNorms
    embed = vocab_size * h
    head = 0 if spec.tie_embeddings else vocab_size * h
    return spec.num_layers * block + embed + head + h  # final norm
