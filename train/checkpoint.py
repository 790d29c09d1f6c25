"""Step checkpoints: written atomically, last K kept, resumed exactly.

A checkpoint is `<root>/step_<k>/`: accelerate's `save_state` (model, optimizer, the
registered LR scheduler, every rank's python/numpy/torch RNG state; under DeepSpeed the
engine's own sharded checkpoint) plus `trainer_state.json` (steps done, tokens, seconds,
the loss curve so far, and a fingerprint of the plan and data). The data position needs no
state: the mixture sampler is a pure function of (seed, step).

All ranks write into `<root>/step_<k>.tmp/`; after a barrier rank 0 renames it to
`step_<k>/`. A directory named `step_<k>` is therefore always complete, and a crash while
writing leaves only a `.tmp` that the next save or resume removes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

from recursive.io import atomic_write_json, read_json

STATE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d{8})$")


def fingerprint(plan_json: str, spec: dict, strategy: str, world_size: int) -> str:
    """What a checkpoint must match to be resumed: the plan, its data, and the parts of the
    run that shape the saved optimizer state (ZeRO shards depend on the world size)."""
    keys = ("shards", "mixture", "teacher", "precision", "grad_accum")
    ident = {"plan": plan_json, "spec": {k: spec.get(k) for k in keys}, "strategy": strategy,
             "world": world_size if strategy.startswith("zero") else None}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def complete(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and (p / STATE).exists():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest(root: Path, fp: str) -> Path | None:
    """The newest complete checkpoint of this very run (same fingerprint), or None."""
    for _, p in reversed(complete(root)):
        if read_json(p / STATE).get("fingerprint") == fp:
            return p
    return None


def save(accelerator: Accelerator, root: Path, step: int, state: dict, keep: int) -> Path:
    """Collective: every rank calls it. Returns the final directory."""
    final = root / f"step_{step:08d}"
    tmp = root / f"step_{step:08d}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        for stale in root.glob("*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    # torch pickles rather than safetensors: tied embeddings round-trip without renaming
    accelerator.save_state(str(tmp), safe_serialization=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE, dict(state, step=step))
        if final.exists():  # the same step again (a resumed run finishing): replace it
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in complete(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(accelerator: Accelerator, path: Path) -> dict:
    """Collective: restores model, optimizer, registered objects and RNG states in place;
    returns the trainer state (step, tokens, seconds, curve)."""
    accelerator.load_state(str(path))
    return read_json(path / STATE)
