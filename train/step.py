"""One micro-batch's forward and loss: the model, the optional teacher and the plan's recipe loss.

`TrainStep(x, y)` returns the scalar to back-propagate; the loop (train/trainer.py) does the
backward, clipping and optimiser step. With `compile` on it is tried in this order:

  fused  one process: model forward, teacher forward and the recipe's loss as ONE
         torch.compile(fullgraph=True) graph
  split  DDP, DeepSpeed, or after the fused graph failed: the model compiled on its own
         (under DDP dynamo's DDPOptimizer cuts the graph at bucket boundaries; DeepSpeed:
         `engine.compile`), the loss compiled as its own fullgraph
  eager  the recipe's loss as the recipe loader wraps it (per-call deadline, recipe guard)

A compiled part that fails (any exception while tracing, compiling or running it, or
tracing for longer than COMPILE_SECONDS) is logged once with the reason and runs eagerly
from then on; the micro-batch is recomputed, nothing having been back-propagated yet.

Why the compiled loss runs outside the recipe guard (recursive/sandbox.py `recipe_scope`):
compiling writes caches and starts compile workers, which the guard refuses. What runs is
a graph of tensor ops: with fullgraph=True dynamo either captures the whole function or
fails, so no recipe Python runs natively, and tracing only interprets the recipe's
bytecode. The deadline stands in for the eager per-call one: dynamo unrolls Python loops.

Chunked loss (`loss_chunk` > 0): the final hidden states are projected through the output
head `loss_chunk` positions at a time, each chunk's logits go to the recipe's loss, and
`torch.utils.checkpoint` recomputes them in backward instead of keeping them, so the
(batch, seq, vocab) logits (fp32 in the recipe) never exist for the whole micro-batch. The
chunks are weighted by their share of the non-ignored labels: the sum equals the
whole-sequence loss exactly when the recipe's loss is a mean over non-ignored tokens (the
seed's cross-entropy and KL terms are); a loss with other reductions changes meaning.

No host-device synchronisation: nothing here reads a tensor's value on the host.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

COMPILE_SECONDS = 600.0  # one compiled call (tracing + compiling) past this falls back to eager
IGNORE = -100


class BadLoss(ValueError):
    """The recipe's loss is not a floating-point scalar tensor (the trainer adds the step)."""


class CompileTimeout(BaseException):
    """A BaseException: dynamo's own `except Exception` handlers must not swallow it."""


def checked(loss):
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.is_floating_point()):
        raise BadLoss(repr(loss))
    return loss


def chunked_loss(loss_fn: Callable, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, hp: dict,
                 chunk: int, teacher_hidden: torch.Tensor | None = None,
                 teacher_weight: torch.Tensor | None = None) -> torch.Tensor:
    """loss_fn(logits, labels, teacher_logits, hp) over sequence chunks of `chunk` positions,
    logits = hidden @ weight.T per chunk, never kept for backward. Each chunk counts by its
    share of the labels that are not IGNORE; a chunk without one contributes 0 (so does a
    micro-batch without one, where the whole-sequence mean would be NaN)."""
    valid = labels != IGNORE
    total = valid.sum().clamp(min=1)

    def part(h, y, th):
        t_logits = None if th is None else F.linear(th, teacher_weight)
        return checked(loss_fn(F.linear(h, weight), y, t_logits, hp))

    out = None
    for s in range(0, labels.shape[1], chunk):
        sl = slice(s, s + chunk)
        th = None if teacher_hidden is None else teacher_hidden[:, sl]
        # early_stop=False: the early stop raises inside the recipe's loss, whose guard would
        # report it as the recipe's own error
        value = checkpoint(part, hidden[:, sl], labels[:, sl], th, use_reentrant=False, early_stop=False)
        n = valid[:, sl].sum()
        # where, not a product: an empty chunk's mean is NaN and 0 * NaN is NaN
        term = torch.where(n > 0, value * (n / total), torch.zeros_like(value))
        out = term if out is None else out + term
    return out


@contextlib.contextmanager
def _deadline(seconds: float):
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return

    def on_alarm(signum, frame):  # noqa: ARG001
        raise CompileTimeout(f"tracing and compiling ran past {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _WithFallback:
    """A compiled callable and its eager twin: the first failure is logged with its reason
    (and kept in `fallbacks`) and the eager one runs from then on."""

    def __init__(self, part: str, compiled: Callable | None, eager: Callable, fallbacks: list):
        self.part, self.compiled, self.eager, self.fallbacks = part, compiled, eager, fallbacks

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                with _deadline(COMPILE_SECONDS):
                    return self.compiled(*args, **kwargs)
            except (Exception, CompileTimeout) as e:  # noqa: BLE001 (any failure: eager is the fallback)
                first = (str(e).strip().splitlines() or [""])[0][:300]
                reason = f"{type(e).__name__}: {first}"
                log.warning("train step: the %s does not compile, running it eagerly (%s)", self.part, reason)
                self.fallbacks.append({"part": self.part, "reason": reason})
                self.compiled = None
        return self.eager(*args, **kwargs)


def _head_weight(model: torch.nn.Module) -> torch.Tensor:
    return model.get_output_embeddings().weight


class TrainStep:
    """model: the prepared model (plain, DDP or a DeepSpeed engine); unwrapped: the model
    itself (its output head); recipe: recursive.recipe.Recipe; hp: the recipe's hp dict.
    fuse: the model may be traced into one graph with the loss (one process, no wrapper).
    backend: torch.compile's ("inductor"; the tests also use "eager", which only traces)."""

    def __init__(self, model, unwrapped, recipe, hp: dict, *, teacher=None, loss_chunk: int = 0,
                 compile: bool = False, fuse: bool = False, deepspeed: bool = False, zero3: bool = False,
                 backend: str = "inductor"):
        if loss_chunk < 0:
            raise ValueError(f"train.loss_chunk must be >= 0 (0: off), got {loss_chunk}")
        self.model, self.teacher, self.hp = model, teacher, hp
        self.fallbacks: list[dict] = []
        if loss_chunk and zero3:
            # ZeRO-3 gathers the head's weight only inside the engine's forward
            self.fallbacks.append({"part": "loss_chunk", "reason": "ZeRO-3 partitions the output head; "
                                   "the loss runs on whole logits"})
            log.warning("train step: loss_chunk is off under ZeRO-3 (the output head is partitioned)")
            loss_chunk = 0
        self.chunk = loss_chunk
        self.head_weight = _head_weight(unwrapped) if loss_chunk else None
        self.teacher_weight = _head_weight(teacher) if loss_chunk and teacher is not None else None
        raw, guarded = getattr(recipe.module, "loss", None), recipe.loss
        compile = compile and raw is not None
        if compile:  # dynamo imports an inlined function's module by name to read its globals
            sys.modules.setdefault(recipe.module.__name__, recipe.module)
        # fuse: no wrapper, so the model is called directly (its base model when chunked:
        # output_hidden_states installs hooks on first use, under a lock dynamo cannot trace)
        target = unwrapped if fuse else model
        self._fused = None
        if compile and fuse:
            self._fused = _WithFallback("model and loss graph", torch.compile(
                functools.partial(self._forward, target, raw), fullgraph=True, backend=backend),
                self._split, self.fallbacks)
        body = functools.partial(self._run, target, fuse)
        compiled_body = None
        if compile and deepspeed:
            model.compile(backend=backend)  # the engine compiles its module in place; no eager twin
        elif compile:
            compiled_body = torch.compile(body, backend=backend)
        self._body = _WithFallback("model", compiled_body, body, self.fallbacks)
        self._head = _WithFallback("recipe loss", torch.compile(functools.partial(self._loss, raw), fullgraph=True,
                                                                backend=backend) if compile else None,
                                   functools.partial(self._loss, guarded), self.fallbacks)

    @property
    def mode(self) -> str:
        """fused | split | eager: how the next call runs."""
        if self._fused is not None and self._fused.compiled is not None:
            return "fused"
        return "split" if self._head.compiled is not None or self._body.compiled is not None else "eager"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._fused is not None:
            return self._fused(x, y)
        return self._split(x, y)

    def _split(self, x, y):
        return self._head(self._body(x), self._teacher_out(x), y)

    def _run(self, model, direct: bool, x):
        """The logits, or when chunked the normed last hidden state (no logits)."""
        if not self.chunk:
            return model(input_ids=x).logits
        if direct:
            return model.base_model(input_ids=x).last_hidden_state
        # through a wrapper (DDP, DeepSpeed): its forward must run; an empty index keeps no logits
        return model(input_ids=x, logits_to_keep=x.new_empty(0), output_hidden_states=True).hidden_states[-1]

    def _teacher_out(self, x):
        if self.teacher is None:
            return None
        with torch.no_grad():
            return self._run(self.teacher, True, x)

    def _loss(self, loss_fn, out, t_out, y):
        if not self.chunk:
            return checked(loss_fn(out, y, t_out, self.hp))
        return chunked_loss(loss_fn, out, self.head_weight, y, self.hp, self.chunk, t_out, self.teacher_weight)

    def _forward(self, model, loss_fn, x, y):
        return self._loss(loss_fn, self._run(model, True, x), self._teacher_out(x), y)


def to_device(rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A step's rows on the device: through pinned memory, so that the copy is asynchronous
    (from pageable memory a non-blocking copy still waits for the host side)."""
    if device.type != "cuda":
        return rows.to(device)
    return rows.pin_memory().to(device, non_blocking=True)
