"""Model families a lineage can be made of, and the plan's family-neutral `model` section
mapped onto each.

A lineage is of one family: generation 0's (the built-in Llama of the seed plan, or the
`model=pretrained` checkpoint's), and every child is an instance of the parent's config
class with the plan's dimensions written into that family's own field names. Everything
else the checkpoint's config says (norm epsilon, RoPE, biases, activation, special token
ids, the embedding rows) is inherited unchanged, so a Qwen2 parent has Qwen2 children that
`AutoModelForCausalLM` loads like the parent.

`base` below is the lineage's base config: the plain `config.to_dict()` of generation 0's
checkpoint (None: the built-in Llama of train/modeling.py). Parameter counts come from the
instantiated model (on the meta device, so nothing is allocated), never from a formula
written for one family.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from typing import Any

# plan field -> the family's config attribute (a tuple: written to every name)
_LLAMA_FIELDS = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
                 "num_kv_heads": "num_key_value_heads", "head_dim": "head_dim",
                 "intermediate_size": "intermediate_size", "hidden": "hidden_size",
                 "tie_embeddings": "tie_word_embeddings"}


@dataclass(frozen=True)
class Family:
    model_type: str
    fields: dict          # plan field -> config attribute (hidden: see hidden_size below)
    gqa: bool             # num_kv_heads may be smaller than num_heads
    fixed_tie: bool       # tie_embeddings is the parent's (the family cannot change it)
    prune: bool           # model.init=prune is implemented (train/prune.py)
    why_no_prune: str = ""
    # config attribute of a hard position limit (learned absolute position embeddings: a
    # sequence past it has no embedding row); None: rotary positions, no such limit (a
    # RoPE checkpoint's max_position_embeddings is what it was trained at, not a wall)
    positions: str | None = None


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", _LLAMA_FIELDS, gqa=True, fixed_tie=False, prune=True),
    "mistral": Family("mistral", _LLAMA_FIELDS, gqa=True, fixed_tie=False, prune=True),
    "qwen2": Family("qwen2", _LLAMA_FIELDS, gqa=True, fixed_tie=False, prune=True),
    "qwen3": Family("qwen3", _LLAMA_FIELDS, gqa=True, fixed_tie=False, prune=True),
    "gpt2": Family("gpt2", {"num_layers": "n_layer", "num_heads": "n_head", "hidden": "n_embd",
                            "intermediate_size": "n_inner", "tie_embeddings": "tie_word_embeddings"},
                   gqa=False, fixed_tie=True, prune=False, positions="n_positions",
                   why_no_prune="structured pruning is implemented for the Llama-like families only "
                                "(llama, mistral, qwen2, qwen3); GPT-2's fused c_attn is not"),
    "gpt_neox": Family("gpt_neox", {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
                                    "hidden": "hidden_size", "intermediate_size": "intermediate_size",
                                    "tie_embeddings": "tie_word_embeddings"},
                       gqa=False, fixed_tie=False, prune=False,
                       why_no_prune="structured pruning is implemented for the Llama-like families only "
                                    "(llama, mistral, qwen2, qwen3); GPT-NeoX's fused query_key_value is not"),
}
SUPPORTED = tuple(FAMILIES)
BUILTIN = "llama"  # the seed plan's own model (train/modeling.py)


class FamilyError(ValueError):
    """A checkpoint the loop cannot start from: the message is one line for the user."""


def family(base: dict | None) -> Family:
    return FAMILIES[BUILTIN if base is None else base["model_type"]]


def position_limit(config: dict) -> int | None:
    """The most positions a model of this config can read (prompt and generated tokens
    together), or None when its family has no hard limit (rotary positions)."""
    fam = FAMILIES.get(config.get("model_type"))
    value = None if fam is None or fam.positions is None else config.get(fam.positions)
    return None if value is None else int(value)


def refusal(config: dict, source: str) -> str | None:
    """One line when `config` (a checkpoint's config.json) cannot start a lineage, else None."""
    mt = config.get("model_type")
    supported = ", ".join(SUPPORTED)
    if config.get("is_encoder_decoder") or mt not in FAMILIES:
        kind = "an encoder-decoder model" if config.get("is_encoder_decoder") else \
            f"architectures {config.get('architectures') or '?'}"
        return (f"model.name_or_path={source}: model_type {mt!r} ({kind}) is not a supported decoder-only "
                f"causal LM family; supported: {supported}")
    fam = FAMILIES[mt]
    heads, hidden, hd = _shape(config)
    if hd * heads != hidden and ("head_dim" not in fam.fields or hidden % heads):
        return (f"model.name_or_path={source}: hidden size {hidden} is neither num_heads {heads} x head_dim {hd} "
                f"nor a multiple of num_heads; the plan's model section cannot describe this checkpoint")
    if hd not in (16, 32, 64, 128):
        return f"model.name_or_path={source}: head_dim {hd} is not one the plan offers (16, 32, 64, 128)"
    return None


def _shape(config: dict) -> tuple[int, int, int]:
    """(num_heads, hidden, head_dim) of a supported checkpoint's config."""
    f = FAMILIES[config["model_type"]].fields
    heads, hidden = int(config[f["num_heads"]]), int(config[f["hidden"]])
    return heads, hidden, int(config.get("head_dim") or hidden // heads)


def hidden_per_head(base: dict | None) -> int | None:
    """A lineage's embedding width per query head when its generation 0 decouples the two
    (Qwen3-0.6B: hidden 1024, 16 heads of head_dim 128, so 64 per head), else None (hidden
    = num_heads x head_dim, the built-in Llama's and most checkpoints' rule). The plan has
    no hidden field: the ratio is the lineage's, and each child's hidden is its num_heads
    times it, so head_dim and hidden shrink independently, as they do across Qwen3 sizes."""
    if base is None:
        return None
    heads, hidden, hd = _shape(base)
    return None if hd * heads == hidden else hidden // heads


def hidden_size(base: dict | None, spec: dict) -> int:
    """The embedding width of the child `spec` describes in this lineage."""
    per_head = hidden_per_head(base) or int(spec["head_dim"])
    return int(spec["num_heads"]) * per_head


def spec_from_config(config: dict, context: int) -> dict:
    """The plan's `model` section that describes checkpoint `config` (ModelSpec dict)."""
    fam = FAMILIES[config["model_type"]]
    f = fam.fields
    heads, hidden, hd = _shape(config)
    ffn = config.get(f["intermediate_size"])
    if ffn is None and fam.model_type == "gpt2":
        ffn = 4 * hidden  # n_inner=None means 4 x n_embd
    kv = int(config.get(f["num_kv_heads"]) or heads) if "num_kv_heads" in f else heads
    return {"num_layers": int(config[f["num_layers"]]), "num_heads": heads, "num_kv_heads": kv,
            "head_dim": hd, "intermediate_size": int(ffn),
            "context": int(context), "tie_embeddings": bool(config.get("tie_word_embeddings", True))}


def fixed_fields(base: dict | None, parent_model: dict) -> dict[str, Any]:
    """Plan `model` fields this lineage's family cannot change, with their only value (the
    proposal schema fixes them; validation refuses other values)."""
    fam = family(base)
    out = {}
    if fam.fixed_tie:
        out["tie_embeddings"] = bool(parent_model["tie_embeddings"])
    return out


def family_problems(base: dict | None, spec: dict, parent_model: dict | None) -> list[tuple[str, str]]:
    """(field, message) for each plan model field this family cannot express."""
    fam = family(base)
    out = []
    if not fam.gqa and spec["num_kv_heads"] != spec["num_heads"]:
        out.append(("model.num_kv_heads", f"must equal num_heads={spec['num_heads']}: {fam.model_type} has no "
                                          f"grouped-query attention, got {spec['num_kv_heads']}"))
    if parent_model is not None:
        for k, v in fixed_fields(base, parent_model).items():
            if spec[k] != v:
                out.append((f"model.{k}", f"must be {v} in a {fam.model_type} lineage (the family fixes it), "
                                          f"got {spec[k]}"))
    if spec.get("init", "scratch") == "prune":
        if not fam.prune:
            out.append(("model.init", f"prune is not available for {fam.model_type}: {fam.why_no_prune}"))
        elif parent_model is None:
            out.append(("model.init", "prune needs a parent to cut from (generation 0 has none)"))
        else:
            why = prune_refusal(spec, parent_model)
            if why:
                out.append(("model.init", why))
    return out


def prune_refusal(spec: dict, parent: dict) -> str | None:
    """Why the child's dimensions cannot be cut from the parent's (None: they can)."""
    if spec["head_dim"] != parent["head_dim"]:
        return f"prune keeps the parent's head_dim {parent['head_dim']}, got {spec['head_dim']}"
    for k in ("num_layers", "num_heads", "num_kv_heads", "intermediate_size"):
        if spec[k] > parent[k]:
            return f"prune cuts dimensions: {k} {spec[k]} exceeds the parent's {parent[k]}"
    if spec["num_heads"] // spec["num_kv_heads"] > parent["num_heads"] // parent["num_kv_heads"]:
        return (f"prune keeps whole key/value groups: {spec['num_heads'] // spec['num_kv_heads']} query heads per kv "
                f"head exceeds the parent's {parent['num_heads'] // parent['num_kv_heads']}")
    if spec["tie_embeddings"] and not parent["tie_embeddings"]:
        return "prune keeps the parent's untied output head (tie_embeddings=false)"
    return None


def child_config(base: dict, spec: dict):
    """A config of the base's class with the plan's dimensions (everything else inherited)."""
    from transformers import AutoConfig
    fam = FAMILIES[base["model_type"]]
    d = copy.deepcopy(base)
    for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures"):
        d.pop(k, None)
    values = {**spec, "hidden": hidden_size(base, spec)}
    for field_, attr in fam.fields.items():
        d[attr] = values[field_]
    n = int(spec["num_layers"])
    if isinstance(d.get("layer_types"), list):  # per-layer attention kinds (Qwen2/3): the first n
        d["layer_types"] = (d["layer_types"] + d["layer_types"][-1:] * n)[:n]
    if "max_window_layers" in d:
        d["max_window_layers"] = min(int(d["max_window_layers"]), n)
    model_type = d.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **d)
    cfg.architectures = base.get("architectures")
    return cfg


def build(base: dict, spec: dict, *, seed: int):
    """A randomly initialised child of the base's family with the plan's dimensions (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(child_config(base, spec), dtype=torch.float32)


def base_key(base: dict) -> str:
    """A hashable key of a base config, for the lru_caches below."""
    return json.dumps(base, sort_keys=True, default=str)


@functools.lru_cache(maxsize=4096)
def _count(base_key: str, layers: int, heads: int, kv: int, head_dim: int, ffn: int, tie: bool) -> int:
    import torch
    from transformers import AutoModelForCausalLM
    spec = {"num_layers": layers, "num_heads": heads, "num_kv_heads": kv, "head_dim": head_dim,
            "intermediate_size": ffn, "context": 64, "tie_embeddings": tie}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(child_config(json.loads(base_key), spec))
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors are counted once


@functools.lru_cache(maxsize=4096)
def coefficients(base_key: str, heads: int, kv: int, head_dim: int, tie: bool) -> tuple[int, int, int]:
    """(A, B, C) with params(layers, ffn) = A + layers * (B + C * ffn) for this family and
    attention shape: every family here is linear in depth and in FFN width."""
    p11 = _count(base_key, 1, heads, kv, head_dim, 16, tie)
    p21 = _count(base_key, 2, heads, kv, head_dim, 16, tie)
    p12 = _count(base_key, 1, heads, kv, head_dim, 32, tie)
    per_layer = p21 - p11
    c = (p12 - p11) // 16
    b = per_layer - 16 * c
    return p11 - per_layer, b, c


def count(base: dict, spec: dict) -> int:
    """Exact parameter count of the child `build(base, spec)` makes."""
    a, b, c = coefficients(base_key(base), int(spec["num_heads"]), int(spec["num_kv_heads"]), int(spec["head_dim"]),
                           bool(spec["tie_embeddings"]))
    return a + int(spec["num_layers"]) * (b + c * int(spec["intermediate_size"]))
