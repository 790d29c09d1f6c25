"""Structured pruning of a parent into a child's architecture (`model.init: prune`).

Minitron's recipe (Muralidharan et al. 2024, "Compact Language Models via Pruning and
Knowledge Distillation"; Sreenivas et al. 2024, "LLM Pruning and Distillation in
Practice"): run the parent on a calibration batch of the plan's training mixture, score
every prunable unit by its activations, keep the most important ones, and train the result
(with the plan's distillation weight, the parent as teacher). Scores, all activation-based:

  depth      block importance: 1 - cos(input, output) of each decoder layer, mean over
             tokens (a layer that barely changes its input is the cheapest to drop);
  heads      mean L2 norm of each query head's attention output (the input of o_proj);
             a key/value group scores the sum of its query heads, whole groups are kept;
  FFN        mean |activation| of each channel entering down_proj;
  hidden     mean |activation| of each embedding channel after every RMSNorm, summed
             over layers.

Kept units stay in their original order, so a child with the parent's own dimensions is
the parent, logit for logit (tests/train/test_prune.py). Implemented for the Llama-like
families (Llama, Mistral, Qwen2, Qwen3: same module layout); train/families.py refuses
`prune` elsewhere with the reason.
"""

from __future__ import annotations

import torch


def _layers(model):
    return model.model.layers


@torch.no_grad()
def importance(model, input_ids: torch.Tensor) -> dict:
    """Activation statistics of `model` on a calibration batch (batch, seq)."""
    cfg = model.config
    n_layers, heads = cfg.num_hidden_layers, cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    head_score = torch.zeros(n_layers, heads)
    ffn_score = [None] * n_layers
    hidden_score = torch.zeros(cfg.hidden_size)
    block = torch.zeros(n_layers)
    hooks = []

    def on_o_proj(i):
        def hook(mod, args):
            x = args[0].float()  # (b, s, heads * hd)
            head_score[i] += x.reshape(*x.shape[:-1], heads, hd).norm(dim=-1).mean(dim=(0, 1)).cpu()
        return hook

    def on_down(i):
        def hook(mod, args):
            ffn_score[i] = args[0].float().abs().mean(dim=(0, 1)).cpu()
        return hook

    def on_norm(mod, args, out):
        hidden_score.add_(out.float().abs().mean(dim=(0, 1)).cpu())

    def on_layer(i):
        def hook(mod, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            y = out[0] if isinstance(out, tuple) else out
            block[i] = 1 - torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1).mean().cpu()
        return hook

    for i, layer in enumerate(_layers(model)):
        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(on_o_proj(i)))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(on_down(i)))
        hooks.append(layer.input_layernorm.register_forward_hook(on_norm))
        hooks.append(layer.post_attention_layernorm.register_forward_hook(on_norm))
        hooks.append(layer.register_forward_hook(on_layer(i), with_kwargs=True))
    was = model.training
    model.eval()
    try:
        model(input_ids=input_ids)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {"heads": head_score, "ffn": torch.stack(ffn_score), "hidden": hidden_score, "block": block}


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in their original order (ties: the earlier wins)."""
    k = int(k)
    if k >= scores.numel():
        return torch.arange(scores.numel())
    order = torch.argsort(-scores, stable=True)[:k]
    return torch.sort(order).values


def select(scores: dict, parent: dict, child: dict, hidden: int | None = None) -> dict:
    """Which layers, key/value groups, query heads, FFN channels and hidden channels to keep
    (`hidden`: the child's embedding width, when it is not num_heads x head_dim)."""
    layers = _top(scores["block"], child["num_layers"])
    g_p = parent["num_heads"] // parent["num_kv_heads"]
    g_c = child["num_heads"] // child["num_kv_heads"]
    keep = []
    for i in layers.tolist():
        hs = scores["heads"][i].reshape(parent["num_kv_heads"], g_p)
        groups = _top(hs.sum(-1), child["num_kv_heads"])
        q = [int(g) * g_p + int(j) for g in groups.tolist() for j in _top(hs[g], g_c).tolist()]
        keep.append({"layer": i, "kv": groups, "q": torch.tensor(q),
                     "ffn": _top(scores["ffn"][i], child["intermediate_size"])})
    hidden = _top(scores["hidden"], hidden if hidden is not None else child["num_heads"] * child["head_dim"])
    return {"layers": keep, "hidden": hidden}


def _rows(w: torch.Tensor, heads: torch.Tensor, hd: int) -> torch.Tensor:
    idx = (heads[:, None] * hd + torch.arange(hd)[None, :]).reshape(-1)
    return w.index_select(0, idx)


def prune_state(parent, parent_spec: dict, child_spec: dict, chosen: dict) -> dict:
    """The child's state dict, cut from the parent's."""
    sd = parent.state_dict()
    hd = parent_spec["head_dim"]
    hid = chosen["hidden"]
    out = {"model.embed_tokens.weight": sd["model.embed_tokens.weight"][:, hid],
           "model.norm.weight": sd["model.norm.weight"][hid]}
    head = sd["model.embed_tokens.weight"] if child_spec["tie_embeddings"] else sd.get("lm_head.weight", sd["model.embed_tokens.weight"])
    out["lm_head.weight"] = head[:, hid]  # a tied child's is the same tensor as its embedding
    for new, k in enumerate(chosen["layers"]):
        p, q = f"model.layers.{k['layer']}.", f"model.layers.{new}."
        for name, w in sd.items():
            if not name.startswith(p):
                continue
            rest = name[len(p):]
            if rest in ("input_layernorm.weight", "post_attention_layernorm.weight"):
                v = w[hid]
            elif rest.startswith("self_attn.q_proj."):
                v = _rows(w, k["q"], hd)
                v = v[:, hid] if rest.endswith("weight") else v
            elif rest.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
                v = _rows(w, k["kv"], hd)
                v = v[:, hid] if rest.endswith("weight") else v
            elif rest == "self_attn.o_proj.weight":
                v = w[hid][:, (k["q"][:, None] * hd + torch.arange(hd)[None, :]).reshape(-1)]
            elif rest.startswith(("mlp.gate_proj.", "mlp.up_proj.")):
                v = w[k["ffn"]]
                v = v[:, hid] if rest.endswith("weight") else v
            elif rest == "mlp.down_proj.weight":
                v = w[hid][:, k["ffn"]]
            elif rest.startswith(("self_attn.q_norm.", "self_attn.k_norm.")):
                v = w  # per head_dim (Qwen3): head_dim is kept
            else:
                raise ValueError(f"prune: unexpected parameter {name} (not a Llama-like layer)")
            out[q + rest] = v.clone()
    return out


def prune(parent, parent_spec: dict, child, child_spec: dict, calibration: torch.Tensor) -> dict:
    """Load into `child` (already built with child_spec's architecture) the parent's most
    important units; returns what was kept (layers, and the share of each kind)."""
    scores = importance(parent, calibration)
    chosen = select(scores, parent_spec, child_spec, hidden=int(child.config.hidden_size))
    child.load_state_dict(prune_state(parent, parent_spec, child_spec, chosen), strict=True)
    if child_spec["tie_embeddings"]:
        child.tie_weights()
    return {"layers_kept": [k["layer"] for k in chosen["layers"]],
            "hidden_kept": int(chosen["hidden"].numel()), "calibration_tokens": int(calibration.numel())}
