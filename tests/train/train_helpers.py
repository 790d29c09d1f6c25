"""Helpers of the training-stage tests: a tiny plan, an attempt directory, the real stage
as a subprocess (one process, or real ranks under torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from recursive.io import atomic_write_json, atomic_write_text
from recursive.plan import Plan

TINY = dict(num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128, context=64,
            tie_embeddings=True)


def tiny_plan(base: Plan, **hparams) -> Plan:
    from recursive.plan import HParams, ModelSpec
    h = base.hparams.model_dump() | {"batch_size": 8, "steps": 12, "warmup_steps": 2, "lr": 3e-3} | hparams
    return base.model_copy(update={"model": ModelSpec(**TINY), "hparams": HParams(**h)})


def write_attempt(d: Path, prepared, plan: Plan, **spec) -> Path:
    _, run_dir, manifest, _ = prepared
    atomic_write_text(d / "plan.json", plan.to_json())
    shards = {n: str(run_dir / e["path"]) for n, e in manifest["train"].items()}
    full = {"tokenizer": str(run_dir / manifest["tokenizer"]), "shards": shards,
            "mixture": {n: 1 / len(shards) for n in shards}, "teacher": None, "threads": 1,
            "precision": "fp32", "log_every": 1} | spec
    atomic_write_json(d / "train_spec.json", full)
    return d


def stage_cmd(d: Path, nproc: int = 1) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "recursive.train", str(d)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "recursive.train", str(d)]


def stage_env(tmp: Path) -> dict:
    # DeepSpeed's CPU ops are compiled on first use: keep any build inside the test's tmp
    return dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                TORCH_EXTENSIONS_DIR=str(tmp / "torch_extensions"))


def run_stage(d: Path, nproc: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(stage_cmd(d, nproc), capture_output=True, text=True, timeout=timeout,
                          env=stage_env(d.parent))


def metrics(d: Path) -> dict:
    return json.loads((d / "train_metrics.json").read_text())
