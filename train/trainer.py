"""The training stage: one plan in, one `save_pretrained` model out.

Runs as its own process (`python -m recursive.train ATTEMPT_DIR`) because it executes the
plan's untrusted recipe code: the orchestrator never imports it. Rank and world size come
from the environment (torchrun, `accelerate launch` or srun; see train/distributed.py), so
one process and many share this code path. Inputs are files in ATTEMPT_DIR (plan.json,
train_spec.json: `recursive.train.protocol.TrainSpec` documents every key); eval data is
never among them. Outputs and exit codes are the protocol's too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from transformers import AutoModelForCausalLM, AutoTokenizer

from recursive import sandbox
from recursive.data.shards import MixtureSampler
from recursive.io import atomic_write_json
from recursive.plan import Plan
from recursive.recipe import load_recipe
from recursive.train import checkpoint
from recursive.train.protocol import CHECKPOINTS, MODEL, PLAN, TRAIN_LOCK, TRAIN_METRICS, TRAIN_PROBE, TRAIN_REQUEUE, TrainSpec
from recursive.train.distributed import StageConfigError, make_accelerator, rank_identity
from recursive.train.modeling import make_child
from recursive.train.perf import flops_per_token, mfu, peak_flops
from recursive.train.step import BadLoss, TrainStep, to_device

_TRAIN_LOCK = None  # rank 0's flock on ATTEMPT_DIR/train.lock, held for the life of the process


class RecipeError(RuntimeError):
    """The plan's recipe misbehaved during training (bad lr, non-finite loss, ...)."""


class OverBudget(RecipeError):
    """Training ran past the plan's wall-clock budget (budget.wall_clock_s): a checkpoint was
    written and the attempt fails with this reason (the plan's fault: it asked for too much)."""


class Preempted(Exception):
    """SIGTERM/SIGUSR1 arrived; a checkpoint of `step` completed steps was written."""

    def __init__(self, step: int, signum: int, path: Path | None):
        super().__init__(f"preempted by signal {signum} after {step} steps; checkpoint {path}")
        self.step, self.signum, self.path = step, signum, path


_SIGNAL: dict = {"num": None}


def _on_signal(signum, frame):  # noqa: ARG001
    _SIGNAL["num"] = signum


def install_preemption_handlers() -> None:
    """SIGTERM (SLURM preemption, torchrun forwarding its own SIGTERM) and SIGUSR1
    (`sbatch --signal=USR1@T`): finish the current step, checkpoint, exit protocol.EXIT_REQUEUE."""
    for s in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, _on_signal)


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
    # foreach on CPU; fused kernels on GPU
    return torch.optim.AdamW(groups, lr=h.lr, betas=(0.9, 0.95), eps=1e-8,
                             fused=torch.cuda.is_available() or None)


def _agree(accelerator: Accelerator, flags: list[float]) -> list[bool]:
    """Flags raised on any rank are raised on all (one all-reduce), so that every rank
    takes the same branch: a NaN on one rank or a signal seen by one rank."""
    t = torch.tensor(flags, dtype=torch.float32, device=accelerator.device)
    if accelerator.num_processes > 1:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _progress(spec: dict, accelerator: Accelerator, total: int, start: int, verbose: bool):
    if not (verbose and accelerator.is_main_process):
        return None
    want = spec.get("progress")
    tty = sys.stderr.isatty()
    if want is False or (want is None and not tty):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=start, unit="step", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5 if tty else 30.0)


def fit(plan: Plan, spec: dict, accelerator: Accelerator, layout: dict, *, steps: int | None = None,
        verbose: bool = True, ckpt: dict | None = None,
        on_step: Callable[[int], None] | None = None) -> tuple[torch.nn.Module, dict, MixtureSampler]:
    """Train `plan` for its steps (or a miniature of it: `steps` steps with the warmup
    scaled alike). Returns the prepared model, the training metrics and the sampler.

    ckpt: {"root", "every", "keep", "fingerprint", "resume"} enables step checkpoints,
    resume and preemption; None (screening) disables them. on_step(steps_done) is called
    after every step (bench/train_throughput.py times steps with it)."""
    if not sandbox.installed():
        # defence in depth behind the static policy: while recipe code runs (loading the module,
        # each lr_lambda/loss call) no file I/O outside Python's own installation, no processes,
        # sockets, ctypes or frame walks. Scoped: checkpoints, compile workers and collectives
        # are the trainer's own and run outside the recipe.
        sandbox.install_guard(read_roots=(), write_roots=(), scoped=True)
    recipe = load_recipe(plan.code)  # the policy is enforced again in the process that runs it
    h = plan.hparams
    total = h.steps if steps is None else max(1, min(steps, h.steps))
    warmup = h.warmup_steps if steps is None else round(h.warmup_steps * total / h.steps)
    world, grad_accum = accelerator.num_processes, layout["grad_accum"]
    if h.batch_size % (world * grad_accum):
        raise StageConfigError(f"batch_size {h.batch_size} is not a multiple of world_size {world} x "
                               f"grad_accum {grad_accum}")
    micro = h.batch_size // (world * grad_accum)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    def calibration() -> torch.Tensor:  # model.init=prune: a batch of the plan's own mixture, the same on every rank
        cal = MixtureSampler({k: Path(v) for k, v in spec["shards"].items()}, spec["mixture"], plan.model.context,
                             min(16, h.batch_size), h.seed, 0, 1)
        return cal.batch(0)[:, :-1]

    model, init_info = make_child(plan.model, spec, tok, seed=h.seed, calibration=calibration)
    vocab = model.config.vocab_size  # the lineage's embedding rows (a checkpoint's may exceed len(tok))
    n_params = sum(p.numel() for p in model.parameters())
    fpt = flops_per_token(n_params, vocab_size=vocab, hidden=int(model.config.hidden_size),  # the family's
                          num_layers=plan.model.num_layers, context=plan.model.context,
                          attn_width=plan.model.num_heads * plan.model.head_dim, tied=plan.model.tie_embeddings)
    peak = peak_flops(accelerator.device, spec.get("precision", "fp32"))
    teacher = None
    if h.distill_weight > 0 and spec.get("teacher"):
        # same tokenizer for the whole lineage: the teacher's logits index the same vocabulary
        teacher = AutoModelForCausalLM.from_pretrained(spec["teacher"]).eval().requires_grad_(False)
        if teacher.config.vocab_size != vocab:
            raise StageConfigError(f"teacher vocabulary {teacher.config.vocab_size} != the child's {vocab}")
        teacher = teacher.to(accelerator.device)
    optimizer = _optimizer(plan, model)

    def lr_lambda(step: int) -> float:
        v = float(recipe.lr_lambda(step, total, warmup))
        if not (math.isfinite(v) and 0.0 <= v <= 10.0):
            raise RecipeError(f"recipe lr_lambda({step}, {total}, {warmup}) returned {v}, "
                              "expected a finite multiplier in [0, 10]")
        return v

    # the scheduler wraps the torch optimizer itself (under DeepSpeed too: the ZeRO optimizer
    # shares its param_groups) and is stepped once per optimiser step, never by accelerate
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    model, optimizer = accelerator.prepare(model, optimizer)
    # the loop's mixture: the plan's weights over the shards that exist (train_spec.json says
    # which sources were dropped, e.g. an empty research record at generation 0)
    sampler = MixtureSampler({k: Path(v) for k, v in spec["shards"].items()}, spec["mixture"],
                             plan.model.context, h.batch_size, h.seed,
                             accelerator.process_index, accelerator.num_processes)
    hp = {"distill_weight": h.distill_weight, "distill_temperature": h.distill_temperature}
    log_every = int(spec.get("log_every", 20))
    # forward + loss of a micro-batch, compiled where torch.compile allows (train/step.py)
    train_step = TrainStep(model, accelerator.unwrap_model(model), recipe, hp, teacher=teacher,
                           loss_chunk=int(spec.get("loss_chunk") or 0), compile=bool(spec.get("compile")),
                           fuse=accelerator.distributed_type == DistributedType.NO, deepspeed=deepspeed,
                           zero3=deepspeed and layout["strategy"] == "zero3")

    start, tokens_seen, seconds_before, curve = 0, 0, 0.0, []
    if ckpt is not None:
        accelerator.register_for_checkpointing(scheduler)
        found = checkpoint.latest(ckpt["root"], ckpt["fingerprint"]) if ckpt["resume"] else None
        if found is not None:
            state = checkpoint.load(accelerator, found)
            start, tokens_seen, seconds_before, curve = (state["step"], state["tokens"], state["seconds"],
                                                         state["curve"])
            if verbose and accelerator.is_main_process:
                print(json.dumps({"resumed_from": str(found), "step": start}), flush=True)

    def save_ckpt(done: int) -> Path:
        return checkpoint.save(accelerator, ckpt["root"], done,
                               {"tokens": tokens_seen, "seconds": seconds_before + time.perf_counter() - t0,
                                "curve": curve, "fingerprint": ckpt["fingerprint"], "total_steps": total},
                               ckpt["keep"])

    bar = _progress(spec, accelerator, total, start, verbose)
    cuda = accelerator.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    t0 = time.perf_counter()
    t_first = None  # end of this segment's first step: steady-state throughput excludes compile/warmup
    tokens_at_first = tokens_seen
    seg_tokens0 = tokens_seen
    prev_loss = None  # the previous step's loss, checked for finiteness together with signals
    grad_norm = None
    model.train()
    step = start
    # Checking the loss reads it back from the device, which stalls a GPU's queue: on a GPU
    # the non-finite flag accumulates on the device and is read (with the signal flag, in one
    # collective) every `check_every` steps; on a CPU reading is free and happens every step.
    check_every = max(1, int(spec.get("check_every") or (1 if accelerator.device.type == "cpu" else 10)))
    nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)
    wall_clock = spec.get("wall_clock_s")
    while True:
        if prev_loss is not None:
            nonfinite |= ~torch.isfinite(prev_loss)
        if step == total or (step - start) % check_every == 0:
            # the cap is on the attempt's whole training time, resumed segments included
            late = ckpt is not None and wall_clock is not None and seconds_before + time.perf_counter() - t0 > wall_clock
            bad, preempt, over = _agree(accelerator, [float(nonfinite.item()),
                                                      float(_SIGNAL["num"] is not None and ckpt is not None),
                                                      float(late)])
        else:
            bad = preempt = over = False
        if bad:
            raise RecipeError(f"recipe loss() returned a non-finite value at or before step {step - 1} "
                              f"(last: {float(prev_loss)}), expected a finite scalar")
        if step == total:
            break
        if preempt or (over and step < total):
            path = save_ckpt(step)
            if bar is not None:
                bar.close()
            if not preempt:
                raise OverBudget(f"over budget: training ran {seconds_before + time.perf_counter() - t0:.1f} s, "
                                 f"past budget.wall_clock_s={wall_clock:g}, at step {step} of {total}; "
                                 f"checkpoint {path}")
            raise Preempted(step, _SIGNAL["num"] or 0, path)
        # nothing in a step reads a device value on the host: the loss, the non-finite flag
        # and the grad norm stay on the device until a check or a log row reads them
        rows = to_device(sampler.batch(step), accelerator.device)
        loss_sum = None
        for chunk in rows.split(micro):
            x, y = chunk[:, :-1], chunk[:, 1:]
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    try:
                        loss = train_step(x, y)
                    except BadLoss as e:
                        raise RecipeError(f"recipe loss() returned {e} at step {step}, "
                                          "expected a finite scalar") from None
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if deepspeed:  # clipping is in the DeepSpeed config; the engine reports the norm
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), h.grad_clip)
                    elif h.grad_clip > 0:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), h.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            d = loss.detach()
            loss_sum = d if loss_sum is None else loss_sum + d
        scheduler.step()
        prev_loss = loss_sum / grad_accum
        tokens_seen += (rows.shape[1] - 1) * h.batch_size
        step += 1
        if t_first is None:
            if cuda:  # the first step's queued work belongs to the warm-up, not the steady window
                torch.cuda.synchronize(accelerator.device)
            t_first, tokens_at_first = time.perf_counter(), tokens_seen
        if on_step is not None:
            on_step(step)
        if bar is not None:
            bar.update(1)
        if (step - 1) % log_every == 0 or step == total:
            elapsed = time.perf_counter() - t0
            mean_loss = accelerator.reduce(prev_loss.clone().float(), "mean") if world > 1 else prev_loss
            tps = (tokens_seen - seg_tokens0) / elapsed
            row = {"step": step - 1, "loss": float(mean_loss), "lr": scheduler.get_last_lr()[0],
                   "grad_norm": None if grad_norm is None else float(grad_norm), "tokens": tokens_seen,
                   "tokens_per_s": tps, "mfu": mfu(tps, fpt, peak, world)}
            curve.append(row)
            if verbose and accelerator.is_main_process:
                (bar.write if bar is not None else print)(json.dumps(row))
                sys.stdout.flush()
        if ckpt is not None and ckpt["every"] > 0 and (step % ckpt["every"] == 0 or step == total):
            if step < total:
                save_ckpt(step)
    if bar is not None:
        bar.close()
    if cuda:
        torch.cuda.synchronize(accelerator.device)
    seconds = time.perf_counter() - t0
    if ckpt is not None and ckpt["every"] > 0:
        save_ckpt(total)  # at the end, like every N steps
    accelerator.wait_for_everyone()
    seg_tokens = tokens_seen - seg_tokens0
    steady = None
    if t_first is not None and step - start > 1:
        steady = (tokens_seen - tokens_at_first) / max(1e-9, time.perf_counter() - t_first)
    tps = seg_tokens / seconds if seconds > 0 else 0.0
    metrics = {"steps": total, "tokens": tokens_seen, "seconds": seconds_before + seconds,
               "tokens_per_s": tps, "tokens_per_s_steady": steady,
               "mfu": mfu(steady or tps, fpt, peak, world), "flops_per_token": fpt,
               "final_loss": curve[-1]["loss"], "params": n_params, "init": init_info, "world_size": world,
               "strategy": layout["strategy"], "grad_accum": grad_accum, "micro_batch": micro,
               "resumed_from_step": start or None, "device": str(accelerator.device),
               "distributed_type": str(accelerator.distributed_type),
               "peak_memory_bytes": torch.cuda.max_memory_allocated(accelerator.device) if cuda else None,
               "compile": {"mode": train_step.mode, "fallbacks": train_step.fallbacks, "loss_chunk": train_step.chunk},
               "curve": curve}
    return model, metrics, sampler


def _param_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_model(accelerator: Accelerator, model: torch.nn.Module, out_dir: Path, tokenizer_path: str) -> None:
    """Collective. Writes a `save_pretrained` directory atomically (rank 0 writes): under
    ZeRO-3 the weights are gathered from every rank first."""
    state_dict = accelerator.get_state_dict(model)  # consolidates ZeRO-3 shards (collective)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        # save_pretrained(state_dict=...) empties the dict it gets in transformers 5: copy
        unwrapped.save_pretrained(tmp, state_dict={k: v for k, v in state_dict.items()})
        AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)  # a model directory exists only once it is complete
    accelerator.wait_for_everyone()


@torch.no_grad()
def probe(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Logits of the live trained model (collective under ZeRO-3: every rank runs it), so
    that a reloaded `model/` can be checked against the weights that were trained."""
    was = model.training
    model.eval()
    out = model(input_ids=ids).logits.float().cpu()
    model.train(was)
    return out


def train(attempt_dir: Path) -> dict:
    """The training stage: ATTEMPT_DIR/plan.json + train_spec.json -> ATTEMPT_DIR/model."""
    spec = asdict(TrainSpec.read(attempt_dir))
    plan_json = (attempt_dir / PLAN).read_text()
    plan = Plan.from_json(plan_json)
    global _TRAIN_LOCK
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0":
        # held until this process exits: an orchestrator re-run waits for it (recursive/loop.py)
        import fcntl
        _TRAIN_LOCK = open(attempt_dir / TRAIN_LOCK, "a")
        fcntl.flock(_TRAIN_LOCK, fcntl.LOCK_EX)
    accelerator, layout = make_accelerator(spec, batch_size=plan.hparams.batch_size, grad_clip=plan.hparams.grad_clip)
    install_preemption_handlers()
    if accelerator.is_main_process:
        (attempt_dir / TRAIN_REQUEUE).unlink(missing_ok=True)
    ckpt = {"root": Path(spec.get("checkpoint_dir") or attempt_dir / CHECKPOINTS),
            "every": int(spec.get("checkpoint_every", 0)), "keep": int(spec.get("keep_checkpoints", 2)),
            "resume": bool(spec.get("resume", True)),
            "fingerprint": checkpoint.fingerprint(plan_json, spec, layout["strategy"], layout["world_size"])}
    try:
        model, metrics, sampler = fit(plan, spec, accelerator, layout, ckpt=ckpt)
    except Preempted as p:
        if accelerator.is_main_process:
            atomic_write_json(attempt_dir / TRAIN_REQUEUE, {"step": p.step, "signal": p.signum,
                                                           "checkpoint": str(p.path)})
        raise
    n_probe = int(spec.get("probe_tokens", 32))
    if n_probe > 0:
        ids = sampler.batch(0)[:1, :n_probe].to(accelerator.device)
        logits = probe(model, ids)
        if accelerator.is_main_process:
            torch.save({"input_ids": ids.cpu(), "logits": logits}, attempt_dir / TRAIN_PROBE)
    # where each rank ran (node name, address): a user checking a multi-node job checks this
    me = rank_identity(accelerator.process_index)
    metrics["nodes"] = [me]
    if accelerator.num_processes > 1:
        metrics["nodes"] = [None] * accelerator.num_processes
        torch.distributed.all_gather_object(metrics["nodes"], me)
    if accelerator.num_processes > 1 and layout["strategy"] in ("single", "ddp"):
        # replicas must hold the same weights; a user checking DDP checks this first
        digests = [None] * accelerator.num_processes
        torch.distributed.all_gather_object(digests, _param_digest(accelerator.unwrap_model(model)))
        metrics["rank_param_sha256"] = digests
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP replicas diverged: parameter digests {digests}")
    save_model(accelerator, model, attempt_dir / MODEL, spec["tokenizer"])
    if accelerator.is_main_process:
        atomic_write_json(attempt_dir / TRAIN_METRICS, metrics)
    accelerator.end_training()
    return metrics
