"""The contract between the orchestrator and the training process, in one torch-free place.

The orchestrator writes a spec into the attempt (or screening) directory and starts
`python -m recursive.train DIR` (or `--screen DIR`) through a launcher; the process leaves
its outcome there as files and an exit code. Both sides import these names, so neither
re-declares the other's: the orchestrator imports this module without importing torch.

Exit codes: 0 trained; 2 the plan or its recipe failed (TRAIN_ERROR says why; the lineage
goes on); 75 preempted (SIGTERM/SIGUSR1): a checkpoint was written and TRAIN_REQUEUE says
where. torchrun exits 1 when its workers exit 75, so the requeue file, not the code alone,
is the signal. Anything else is a crash of the stage itself (TRAIN_ERROR may hold a traceback).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

EXIT_OK, EXIT_PLAN_FAILED, EXIT_REQUEUE, EXIT_USAGE = 0, 2, 75, 64  # 75 = EX_TEMPFAIL

# files of the training stage, relative to its directory
PLAN = "plan.json"
TRAIN_SPEC = "train_spec.json"
TRAIN_METRICS = "train_metrics.json"
TRAIN_ERROR = "train_error.json"
TRAIN_REQUEUE = "train_requeue.json"
TRAIN_LOCK = "train.lock"          # rank 0 holds a flock on it while the process lives
TRAIN_PROBE = "train_probe.pt"     # logits of the live model, to check the saved one against
MODEL = "model"                    # save_pretrained output (model + tokenizer)
CHECKPOINTS = "checkpoints"
# files of the screening stage, relative to the screening directory
SCREEN_SPEC = "screen_spec.json"
SCREEN_RESULT = "screen.json"

STRATEGIES = ("single", "ddp", "zero1", "zero2", "zero3")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainSpec:
    """train_spec.json: what the training process needs besides the plan. Eval data is
    never in it. Keys the orchestrator copies from the `train` config are documented on
    recursive.run_config.TrainConfig."""

    tokenizer: str                       # save_pretrained tokenizer directory shared by the lineage
    shards: dict[str, str]               # source -> pre-tokenised shard path
    mixture: dict[str, float]            # source -> normalised weight (the plan's, over existing shards)
    teacher: str | None = None           # the parent model when the plan distils from it
    parent: str | None = None            # the parent model (model.init=prune cuts the child from it)
    base_config: dict | None = None      # the lineage's family: generation 0's config.json (None: built-in Llama)
    dropped_sources: list[str] = field(default_factory=list)  # plan sources without a shard (reported)
    strategy: str = "single"
    num_processes: int | None = None     # None: not checked against the launcher's world size
    threads: int = 1
    precision: str = "fp32"
    log_every: int = 20
    grad_accum: int = 1
    compile: bool = False                # train/step.py: the model with the recipe's loss, fallback to eager
    loss_chunk: int = 0                  # 0: whole logits; N: the loss over sequence chunks of N positions
    ddp_static_graph: bool = False       # DDP's static_graph
    ddp_bucket_cap_mb: int | None = None # DDP's bucket size (None: torch's 25 MB)
    checkpoint_every: int = 0            # 0: only at preemption
    keep_checkpoints: int = 2
    checkpoint_dir: str | None = None    # None: DIR/checkpoints
    resume: bool = True
    probe_tokens: int = 32
    progress: bool | None = None         # None: a progress bar only on a terminal
    check_every: int | None = None       # None: every step on CPU, every 10 on GPU
    wall_clock_s: float | None = None    # cap on the attempt's training seconds (resumes summed); None: none

    def write(self, directory: Path) -> None:
        from recursive.io import atomic_write_json
        atomic_write_json(Path(directory) / TRAIN_SPEC, asdict(self))

    @classmethod
    def read(cls, directory: Path) -> "TrainSpec":
        return cls.from_dict(json.loads((Path(directory) / TRAIN_SPEC).read_text()))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})  # keys of older specs are ignored


@dataclass
class ScreenCandidate:
    index: int
    plan: str                            # path of the candidate's plan.json
    mixture: dict[str, float]


@dataclass
class ScreenSpec:
    """screen_spec.json: K valid candidates, each trained as a `steps`-step miniature and
    scored on fixed windows of the training shards of `screen_sources` (never eval data)."""

    tokenizer: str
    shards: dict[str, str]
    candidates: list[ScreenCandidate]
    steps: int
    screen_sources: list[str]
    context: int
    teacher: str | None = None
    parent: str | None = None
    base_config: dict | None = None
    windows_per_source: int = 16
    threads: int = 1
    precision: str = "fp32"
    log_every: int = 10**9

    def write(self, directory: Path) -> None:
        from recursive.io import atomic_write_json
        atomic_write_json(Path(directory) / SCREEN_SPEC, asdict(self))

    @classmethod
    def read(cls, directory: Path) -> "ScreenSpec":
        d = json.loads((Path(directory) / SCREEN_SPEC).read_text())
        d["candidates"] = [ScreenCandidate(**c) for c in d["candidates"]]
        return cls(**d)


@dataclass(frozen=True)
class Outcome:
    """How one run of the training process ended, read from its exit code and files."""

    kind: Literal["trained", "plan_failed", "preempted", "crashed"]
    exit_code: int | None
    error: str | None = None             # plan_failed / crashed: the process's one-line account
    step: int | None = None              # preempted: completed steps in the checkpoint
    checkpoint: str | None = None


def read_outcome(directory: Path, exit_code: int | None) -> Outcome:
    """The outcome of the training process that ran in `directory` and exited `exit_code`
    (None: the code is unknown, e.g. a Slurm job whose state says more than its code)."""
    d = Path(directory)
    error = _read(d / TRAIN_ERROR).get("error") if (d / TRAIN_ERROR).exists() else None
    if exit_code == EXIT_OK and (d / MODEL / "config.json").exists():
        return Outcome("trained", exit_code)
    if exit_code == EXIT_PLAN_FAILED and error is not None:
        return Outcome("plan_failed", exit_code, error)
    if exit_code == EXIT_REQUEUE or (d / TRAIN_REQUEUE).exists():
        info = _read(d / TRAIN_REQUEUE) if (d / TRAIN_REQUEUE).exists() else {}
        return Outcome("preempted", exit_code, step=info.get("step"), checkpoint=info.get("checkpoint"))
    return Outcome("crashed", exit_code, error)


def _read(path: Path) -> dict:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}
