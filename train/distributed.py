"""Strategies: one process, DDP, DeepSpeed ZeRO-1/2/3, all behind one `Accelerator`.

Rank and world size come from the environment, whichever launcher set it: torchrun and
`accelerate launch` export RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; under
`srun` only SLURM_* exist, so `env_from_slurm` derives the torch variables from them. With
none of these, the process is a world of one: the same code path.

CPU notes (shared/notes/FACTS.md): gloo is the backend; DeepSpeed needs
InitProcessGroupKwargs(backend="gloo") and no optimizer in its config (that would compile
fused_adam): the trainer hands it torch's AdamW.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs

from recursive.train.protocol import STRATEGIES  # noqa: F401  (one list: the config check reads it too)


class StageConfigError(RuntimeError):
    """The training configuration (not the plan) cannot run: a stage failure, exit 1."""


def _scontrol(*args: str) -> str:
    try:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _node_addr(node: str) -> str:
    """The address Slurm itself reaches `node` at (its NodeAddr), else the name: node names
    need not resolve on the nodes (they do not on the local two-node cluster's host)."""
    m = re.search(r"\bNodeAddr=(\S+)", _scontrol("show", "node", "-o", node))
    return m.group(1) if m else node


def local_addr(toward: str) -> str | None:
    """This host's address on the route to `toward` (no packet is sent: a UDP connect only
    picks the source address), None if there is no route."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((socket.gethostbyname(toward), 9))
            return s.getsockname()[0]
    except OSError:
        return None


def _ifname_of(addr: str) -> str | None:
    """The network interface that holds IPv4 `addr` (SIOCGIFADDR on each interface)."""
    import fcntl
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                got = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                continue
            if socket.inet_ntoa(got[20:24]) == addr:
                return name
    return None


def env_from_slurm(environ: dict | None = None) -> dict:
    """Torch distributed variables for a task started by `srun`, unless a launcher already
    set them. Returns what it set (empty outside SLURM or for a one-task step).

    MASTER_ADDR is the first node's NodeAddr. Over several nodes, gloo is also told which
    interface to use (GLOO_SOCKET_IFNAME: the one on the route to the master) unless it was:
    left alone, gloo binds to the address the hostname resolves to, which is loopback on many
    hosts, and the other node's rank would then be sent to its own 127.0.0.1."""
    env = os.environ if environ is None else environ
    if "RANK" in env or "SLURM_PROCID" not in env or int(env.get("SLURM_NTASKS", "1")) <= 1:
        return {}
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
    master = "127.0.0.1"
    if nodelist and "MASTER_ADDR" not in env:
        hosts = _scontrol("show", "hostnames", nodelist).split()
        master = _node_addr(hosts[0]) if hosts else master
    job = int(env.get("SLURM_JOB_ID", "0"))
    new = {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_NTASKS"],
           "LOCAL_RANK": env.get("SLURM_LOCALID", "0"), "LOCAL_WORLD_SIZE": env.get("SLURM_NTASKS_PER_NODE", "1"),
           "MASTER_ADDR": env.get("MASTER_ADDR", master), "MASTER_PORT": env.get("MASTER_PORT", str(20000 + job % 20000))}
    nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or 1)
    if nodes > 1 and "GLOO_SOCKET_IFNAME" not in env:
        mine = local_addr(new["MASTER_ADDR"])
        ifname = _ifname_of(mine) if mine else None
        if ifname:
            new["GLOO_SOCKET_IFNAME"] = ifname
    env.update(new)
    return new


def rank_identity(rank: int) -> dict:
    """Where this rank runs: {"rank", "node" (Slurm's node name, else the hostname), "addr"
    (this host's address toward the master, the one the process group uses)}."""
    master = os.environ.get("MASTER_ADDR")
    return {"rank": rank, "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
            "addr": local_addr(master) if master else None}


def strategy_of(spec: dict) -> str:
    s = spec.get("strategy") or "single"
    if s not in STRATEGIES:
        raise StageConfigError(f"train strategy {s!r} is not one of {', '.join(STRATEGIES)}")
    return s


def deepspeed_config(stage: int, *, micro_batch: int, grad_accum: int, world_size: int, grad_clip: float,
                     bf16: bool, overlap_comm: bool = False) -> dict:
    """overlap_comm: reduce gradients on a side stream while backward goes on (GPU; on CPU
    there are no streams to overlap on)."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size,
        "gradient_clipping": float(grad_clip),
        "zero_optimization": {"stage": stage, "overlap_comm": bool(overlap_comm), "contiguous_gradients": True,
                              # ZeRO-3: gather the full 16-bit (here: training dtype) weights at save
                              "stage3_gather_16bit_weights_on_model_save": True},
        "bf16": {"enabled": bool(bf16)},
        "zero_allow_untested_optimizer": True,  # torch's AdamW, not DeepSpeed's (compiled) one
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
    }


def _skip_deepspeed_shm_comm() -> None:
    """DeepSpeed's CPU communication backend compiles its shared-memory all-reduce op
    (shm_comm, 30-140 s on 2 cores) on first use. Marked incompatible, DeepSpeed falls back
    to torch.distributed over gloo. DeepSpeed keeps this probe result in one module-level
    dict precisely so that edits to it persist (deepspeed/ops/__init__.py)."""
    import deepspeed.ops
    from deepspeed.ops.op_builder.all_ops import ALL_OPS

    names = [n for n, b in ALL_OPS.items() if type(b).__name__ == "ShareMemCommBuilder"] or ["deepspeed_shm_comm"]
    compatible = deepspeed.ops.__compatible_ops__
    for n in names:
        compatible[n] = False


def make_accelerator(spec: dict, *, batch_size: int, grad_clip: float) -> tuple[Accelerator, dict]:
    """The Accelerator for `spec["strategy"]`, and the run's layout:
    {"strategy", "world_size", "grad_accum", "micro_batch"}."""
    env_from_slurm()
    torch.set_num_threads(int(spec.get("threads", os.cpu_count() or 1)))
    strategy = strategy_of(spec)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    expected = spec.get("num_processes")
    if expected is not None and int(expected) != world:
        # `accelerate launch --cpu --num_processes 2` starts ONE process with no error (FACTS.md)
        raise StageConfigError(f"train_spec asks for {expected} processes but the launcher started "
                               f"{world} (WORLD_SIZE); use torchrun --nproc_per_node {expected} or srun")
    grad_accum = int(spec.get("grad_accum", 1))
    if grad_accum < 1 or batch_size % (world * grad_accum):
        raise StageConfigError(f"batch_size {batch_size} is not a multiple of world_size {world} x "
                               f"grad_accum {grad_accum}")
    micro = batch_size // (world * grad_accum)
    for key in ("loss_chunk", "ddp_bucket_cap_mb"):
        v = spec.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "loss_chunk" else 1)):
            raise StageConfigError(f"train.{key} must be an integer >= {0 if key == 'loss_chunk' else 1}, got {v!r}")
    bf16 = spec.get("precision") == "bf16"
    cpu = not torch.cuda.is_available()
    # cpu=True would silently turn the DeepSpeed plugin off (accelerate/state.py): under
    # DeepSpeed, accelerate picks the CPU by itself when there is no GPU. No dynamo backend:
    # train/step.py compiles (the model with the loss where it can, with a fallback)
    kwargs: dict = {"cpu": cpu and not strategy.startswith("zero"), "mixed_precision": "bf16" if bf16 else "no",
                    "gradient_accumulation_steps": grad_accum, "dynamo_backend": "no"}
    # DDP: static_graph skips the per-iteration graph bookkeeping (the step's graph is the same
    # every iteration); bucket_cap_mb trades overlap against all-reduce count (torch: 25)
    handlers: list = [DistributedDataParallelKwargs(static_graph=bool(spec.get("ddp_static_graph")),
                                                    bucket_cap_mb=spec.get("ddp_bucket_cap_mb") or 25)]
    if strategy.startswith("zero") or (world > 1 and cpu):
        handlers.append(InitProcessGroupKwargs(backend="gloo" if cpu else "nccl", timeout=timedelta(minutes=30)))
    if strategy.startswith("zero"):
        if cpu and not spec.get("deepspeed_shm_comm", False):
            _skip_deepspeed_shm_comm()
        stage = int(strategy[-1])
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=deepspeed_config(
            stage, micro_batch=micro, grad_accum=grad_accum, world_size=world, grad_clip=grad_clip, bf16=bf16,
            overlap_comm=not cpu))
    accelerator = Accelerator(kwargs_handlers=handlers, **kwargs)
    if strategy.startswith("zero") and accelerator.distributed_type != DistributedType.DEEPSPEED:
        raise StageConfigError(f"strategy {strategy} asked for DeepSpeed but accelerate runs "
                               f"{accelerator.distributed_type}")
    if accelerator.num_processes != world:
        raise StageConfigError(f"accelerate sees {accelerator.num_processes} processes, WORLD_SIZE is {world}")
    if cpu:
        torch.set_num_threads(int(spec.get("threads", os.cpu_count() or 1)))
    elif torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return accelerator, {"strategy": strategy, "world_size": world, "grad_accum": grad_accum, "micro_batch": micro}


def shutdown() -> None:
    """Tear the process group down before the interpreter exits: left to exit-time
    destructors, a gloo group under ZeRO-3 sometimes aborts the rank ("terminate called
    without an active exception") after all work is done, and the launcher reports failure."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            torch.distributed.barrier()
        finally:
            torch.distributed.destroy_process_group()
