"""Capability evals on fixed, hashed eval splits.

The evaluator computes every number itself from the saved model and files the training
stage never saw; nothing the plan's recipe returned is trusted here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from recursive.data.shards import open_shard


def load_model(model_path: Path):
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    tok = AutoTokenizer.from_pretrained(model_path)
    return model, tok


@torch.no_grad()
def heldout_loss(model, shard_path: Path, context: int, windows: int) -> float:
    """Mean next-token loss over `windows` evenly spaced windows of the eval shard (fixed
    positions, so every generation is scored on the same tokens)."""
    data = open_shard(shard_path)
    n = len(data) - context - 1
    if n <= 0:
        raise ValueError(f"eval shard {shard_path} has {len(data)} tokens, fewer than context+1={context + 1}")
    starts = np.linspace(0, n, num=min(windows, n + 1), dtype=np.int64)
    batch = torch.from_numpy(np.stack([data[s:s + context + 1].astype(np.int64) for s in starts]))
    total, count = 0.0, 0
    for chunk in batch.split(32):
        logits = model(input_ids=chunk[:, :-1]).logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += chunk[:, 1:].numel()
    return total / count


@torch.no_grad()
def greedy_complete(model, tok, prompt: str, max_new_tokens: int) -> str:
    ids = tok(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def arithmetic_exact_match(model, tok, items: list[dict], n: int) -> dict:
    """Greedy exact match on held-out problems, overall and by operand digits."""
    by_digits: dict[str, list[int]] = {}
    hits = []
    for item in items[:n]:
        completion = greedy_complete(model, tok, item["prompt"], max_new_tokens=8)
        answer = completion.split("\n")[0].strip()
        ok = int(answer == str(item["answer"]))
        hits.append(ok)
        digits = max(len(t) for t in item["prompt"].rstrip("=").replace("*", "+").replace("-", "+").split("+") if t)
        by_digits.setdefault(f"digits_{digits}", []).append(ok)
    out = {"exact_match": float(np.mean(hits)) if hits else 0.0, "problems": len(hits)}
    out.update({k: float(np.mean(v)) for k, v in sorted(by_digits.items())})
    return out


def run_suite(model_path: Path, parent_path: Path | None, run_dir: Path, manifest: dict, cfg: dict,
              proposal: dict) -> dict:
    """Every eval of the suite except proposer competence (the loop adds that) on the model
    at `model_path`; `parent_path` is the proposing model (None for generation 0)."""
    from recursive.evaluate import safety
    from recursive.evaluate.suite import load_items
    model, tok = load_model(model_path)
    ctx, windows = int(cfg["context"]), int(cfg["eval_windows_per_domain"])
    shards = {name: run_dir / e["path"] for name, e in sorted(manifest["eval"].items())}
    losses = {name: heldout_loss(model, path, ctx, windows) for name, path in shards.items()}
    losses["mean"] = float(np.mean(list(losses.values())))
    out = {"heldout_loss": losses, "params": sum(p.numel() for p in model.parameters())}
    out["arithmetic"] = arithmetic_exact_match(model, tok, load_items(run_dir, manifest, "arithmetic"),
                                               int(cfg["arithmetic_problems"]))
    text_shards = [shards[n] for n in sorted(shards) if manifest["eval"][n]["domain"] in ("code", "prose")]
    sfty = safety.refusal(model, tok, load_items(run_dir, manifest, "safety"), int(cfg["refusal_items"]))
    sfty.update(safety.canary_recall(model, tok, load_items(run_dir, manifest, "canary")))
    sfty.update(safety.collapse(model, text_shards or list(shards.values()), ctx, int(cfg["collapse_samples"]),
                                int(cfg["collapse_tokens"]), seed=0))
    sfty.update(safety.code_incidents(proposal))
    out["safety"] = sfty
    if parent_path is not None:
        parent, _ = load_model(parent_path)
        out["fidelity"] = {"kl_to_parent": safety.kl_to_parent(model, parent, list(shards.values()), ctx,
                                                                max(1, windows // 2))}
    harness = cfg.get("lm_eval") or {}
    if harness.get("tasks"):  # optional extra: imported only when tasks are configured
        model = parent = None  # the harness loads its own copy from model_path
        from recursive.evaluate.lm_harness import run_lm_eval
        out["lm_eval"] = run_lm_eval(model_path, list(harness["tasks"]), harness.get("include_path"),
                                     harness.get("limit"), harness.get("batch_size", 8),
                                     device="cuda" if torch.cuda.is_available() else "cpu")
    return out


def all_finite(tree) -> bool:
    if isinstance(tree, dict):
        return all(all_finite(v) for v in tree.values())
    if isinstance(tree, (int, float)):
        return math.isfinite(tree)
    return True
