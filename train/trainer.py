"""The training stage: one plan in, one `save_pretrained` model out.

Runs as its own process (`python -m recursive.train ATTEMPT_DIR`) because it executes the
plan's untrusted recipe code: the orchestrator never imports it. Rank and world size come
from the environment through accelerate, so one process and a `torchrun` launch share this
code path. Inputs are files in ATTEMPT_DIR (plan.json, train_spec.json); eval data is never
among them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer

from recursive.data.shards import MixtureSampler, open_shard
from recursive.io import atomic_write_json
from recursive.plan import Plan
from recursive.recipe import load_recipe
from recursive.train.modeling import build_model


class RecipeError(RuntimeError):
    """The plan's recipe misbehaved during training (bad lr, non-finite loss, ...)."""


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # no decay on norms and other 1-D parameters (the usual GPT-2/nanoGPT convention)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _optimizer(plan: Plan, model: torch.nn.Module) -> torch.optim.Optimizer:
    h = plan.hparams
    groups = _param_groups(model, h.weight_decay)
    if h.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=h.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=h.lr, betas=(0.9, 0.95), eps=1e-8)


def _accelerator(spec: dict) -> Accelerator:
    torch.set_num_threads(int(spec.get("threads", os.cpu_count() or 1)))
    return Accelerator(cpu=not torch.cuda.is_available(),
                       mixed_precision="bf16" if spec.get("precision") == "bf16" else "no")


def fit(plan: Plan, spec: dict, accelerator: Accelerator, *, steps: int | None = None,
        verbose: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train `plan` for its steps (or a miniature of it: `steps` steps with the warmup
    scaled alike). Returns the unwrapped model and the training metrics."""
    recipe = load_recipe(plan.code)  # the policy is enforced again in the process that runs it
    h = plan.hparams
    total = h.steps if steps is None else max(1, min(steps, h.steps))
    warmup = h.warmup_steps if steps is None else round(h.warmup_steps * total / h.steps)
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    model = build_model(plan.model, len(tok), eos_token_id=tok.eos_token_id, seed=h.seed)
    n_params = sum(p.numel() for p in model.parameters())
    teacher = None
    if h.distill_weight > 0 and spec.get("teacher"):
        teacher = AutoModelForCausalLM.from_pretrained(spec["teacher"]).eval().requires_grad_(False)
        teacher = teacher.to(accelerator.device)
    optimizer = _optimizer(plan, model)

    def lr_lambda(step: int) -> float:
        v = float(recipe.lr_lambda(step, total, warmup))
        if not (math.isfinite(v) and 0.0 <= v <= 10.0):
            raise RecipeError(f"recipe lr_lambda({step}, {total}, {warmup}) returned {v}, "
                              "expected a finite multiplier in [0, 10]")
        return v

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    model, optimizer = accelerator.prepare(model, optimizer)
    # the loop's mixture: the plan's weights over the shards that exist (train_spec.json says
    # which sources were dropped, e.g. an empty research record at generation 0)
    sampler = MixtureSampler({k: Path(v) for k, v in spec["shards"].items()}, spec["mixture"],
                             plan.model.context, h.batch_size, h.seed,
                             accelerator.process_index, accelerator.num_processes)
    hp = {"distill_weight": h.distill_weight, "distill_temperature": h.distill_temperature}
    log_every = int(spec.get("log_every", 20))
    curve: list[dict] = []
    t0 = time.perf_counter()
    tokens_seen = 0
    model.train()
    for step in range(total):
        batch = sampler.batch(step).to(accelerator.device)
        x, y = batch[:, :-1], batch[:, 1:]
        with accelerator.autocast():
            logits = model(input_ids=x).logits
            with torch.no_grad():
                t_logits = teacher(input_ids=x).logits if teacher is not None else None
            loss = recipe.loss(logits, y, t_logits, hp)
        if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and torch.isfinite(loss)):
            raise RecipeError(f"recipe loss() returned {loss!r} at step {step}, expected a finite scalar")
        accelerator.backward(loss)
        grad_norm = None
        if h.grad_clip > 0:
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), h.grad_clip))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += x.numel() * accelerator.num_processes
        if step % log_every == 0 or step == total - 1:
            elapsed = time.perf_counter() - t0
            row = {"step": step, "loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0],
                   "grad_norm": grad_norm, "tokens": tokens_seen, "tokens_per_s": tokens_seen / elapsed}
            curve.append(row)
            if verbose and accelerator.is_main_process:
                print(json.dumps(row), flush=True)
    seconds = time.perf_counter() - t0
    accelerator.wait_for_everyone()
    metrics = {"steps": total, "tokens": tokens_seen, "seconds": seconds,
               "tokens_per_s": tokens_seen / seconds, "final_loss": curve[-1]["loss"],
               "params": n_params, "world_size": accelerator.num_processes, "curve": curve}
    return accelerator.unwrap_model(model), metrics


def train(attempt_dir: Path) -> dict:
    """The training stage: ATTEMPT_DIR/plan.json + train_spec.json -> ATTEMPT_DIR/model."""
    spec = json.loads((attempt_dir / "train_spec.json").read_text())
    plan = Plan.from_json((attempt_dir / "plan.json").read_text())
    accelerator = _accelerator(spec)
    model, metrics = fit(plan, spec, accelerator)
    if accelerator.is_main_process:
        out, tmp = attempt_dir / "model", attempt_dir / "model.tmp"
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(spec["tokenizer"]).save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)  # a model directory exists only once it is complete
        atomic_write_json(attempt_dir / "train_metrics.json", metrics)
    return metrics


@torch.no_grad()
def screen_loss(model: torch.nn.Module, windows: torch.Tensor) -> float:
    model.eval()
    logits = model(input_ids=windows[:, :-1]).logits.float()
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)))


def screen(screen_dir: Path) -> dict:
    """Proxy screening of K valid candidates: a miniature of each plan (spec["steps"] steps),
    then plain cross-entropy on fixed windows of the *training* shards, equal weight per
    source. Eval data is never read here; the gate still decides on the eval sets."""
    spec = json.loads((screen_dir / "screen_spec.json").read_text())
    accelerator = _accelerator(spec)
    windows = []
    for name in sorted(spec["screen_sources"]):
        data = open_shard(Path(spec["shards"][name]))
        ctx = int(spec["context"])
        # the tail of each shard: fixed positions, the same for every candidate
        starts = np.linspace(max(0, len(data) - 64 * (ctx + 1)), len(data) - ctx - 1,
                             num=int(spec["windows_per_source"]), dtype=np.int64)
        windows += [torch.from_numpy(data[s:s + ctx + 1].astype(np.int64)) for s in starts]
    windows_t = torch.stack(windows)
    results = {}
    for cand in spec["candidates"]:
        plan = Plan.from_json(Path(cand["plan"]).read_text())
        try:
            model, metrics = fit(plan, dict(spec, mixture=cand["mixture"]), accelerator,
                                 steps=int(spec["steps"]), verbose=False)
            results[str(cand["index"])] = {"loss": screen_loss(model, windows_t), "seconds": metrics["seconds"]}
        except (RecipeError, ValueError) as e:
            results[str(cand["index"])] = {"loss": None, "error": f"{type(e).__name__}: {e}"}
    atomic_write_json(screen_dir / "screen.json", results)
    return results
