"""Capability evals on fixed, hashed eval splits: loading a saved model, held-out loss,
greedy completion and arithmetic exact match (suite.py's `run_suite` runs them).

The evaluator computes every number itself from the saved model and files the training
stage never saw; nothing the plan's recipe returned is trusted here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from recursive.data.shards import open_shard


def eval_device() -> torch.device:
    """The GPU when there is one (every eval moves its inputs to the model's device)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(model_path: Path, device: torch.device | None = None):
    model = AutoModelForCausalLM.from_pretrained(model_path).eval().to(device or eval_device())
    tok = AutoTokenizer.from_pretrained(model_path)
    return model, tok


def _dev(model) -> torch.device:
    return next(model.parameters()).device


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
        chunk = chunk.to(_dev(model))
        logits = model(input_ids=chunk[:, :-1]).logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += chunk[:, 1:].numel()
    return total / count


@torch.no_grad()
def greedy_complete(model, tok, prompt: str, max_new_tokens: int) -> str:
    ids = tok(prompt, return_tensors="pt").input_ids.to(_dev(model))
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
