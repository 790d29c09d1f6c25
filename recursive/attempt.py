"""One generation attempt: its directory, every file in it, which stages are done, and the
record the lineage keeps of it.

An attempt lives in `<run_dir>/generations/gen_GGG/attempt_AA/`. Every stage reads and
writes files there and is done when its output exists (`Attempt.done`), so a re-run skips
it. This is the only module that spells an attempt's file names; the training process's
own files come from `recursive.train.protocol`, which both sides import.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from recursive.train import protocol

Status = Literal["promoted", "rejected", "failed"]
STATUSES: tuple[str, ...] = get_args(Status)


def attempt_id(generation: int, attempt: int) -> str:
    return f"gen_{generation:03d}/attempt_{attempt:02d}"


def parse_attempt_id(text: str) -> tuple[int, int]:
    """(generation, attempt) of "gen_GGG/attempt_AA" (also the tail of an attempt's path)."""
    g, a = Path(text).parts[-2:]
    return int(g.split("_")[1]), int(a.split("_")[1])


class Attempt:
    """The directory of generation `generation`, attempt `attempt` of the lineage in `run_dir`."""

    def __init__(self, run_dir: Path, generation: int, attempt: int):
        self.run_dir, self.generation, self.attempt = Path(run_dir), int(generation), int(attempt)
        self.dir = self.run_dir / "generations" / attempt_id(self.generation, self.attempt)

    @classmethod
    def from_dir(cls, d: Path) -> "Attempt":
        d = Path(d)
        return cls(d.parents[2], *parse_attempt_id(str(d)))  # RUN_DIR/generations/gen_GGG/attempt_AA

    @property
    def id(self) -> str:
        return attempt_id(self.generation, self.attempt)

    def __repr__(self) -> str:
        return f"Attempt({self.id} in {self.run_dir})"

    def rel(self, path: Path) -> str:
        """`path` relative to the run directory, as the lineage record stores it."""
        return str(Path(path).relative_to(self.run_dir))

    # ---------------------------------------------------------------- files
    def _f(name: str, doc: str) -> property:  # noqa: N805  (a property factory, used below)
        return property(lambda self: self.dir / name, doc=doc)

    config_yaml = _f("config.yaml", "the resolved config this attempt ran under")
    proposal = _f("proposal.json", "the proposal stage's summary (candidates, selection, code origin)")
    proposal_dir = _f("proposal", "prompt and candidates of the proposal stage")
    prompt = _f("proposal/prompt.txt", "the prompt the proposer saw")
    candidates = _f("proposal/candidates.json", "every candidate with its validation result")
    screen_dir = _f("proposal/screen", "the screening process's directory (protocol.SCREEN_*)")
    plan = _f(protocol.PLAN, "the selected plan")
    recipe = _f("recipe.py", "the selected plan's recipe code, as a file")
    data_dir = _f("data", "per-attempt shards (the research record as of this attempt)")
    train_spec = _f(protocol.TRAIN_SPEC, "what the training process needs besides the plan")
    train_log = _f("train.log", "the training process's output, appended across resumes")
    train_metrics = _f(protocol.TRAIN_METRICS, "training metrics, written when training finished")
    train_error = _f(protocol.TRAIN_ERROR, "the training process's account of a failure")
    train_requeue = _f(protocol.TRAIN_REQUEUE, "written when training was preempted")
    train_lock = _f(protocol.TRAIN_LOCK, "held by a live training process")
    checkpoints = _f(protocol.CHECKPOINTS, "step checkpoints of the training process")
    model = _f(protocol.MODEL, "the trained model (save_pretrained: model + tokenizer)")
    model_sha256 = _f("model.sha256", "digest of model/, taken once right after training")
    eval = _f("eval.json", "every metric of the eval suite")
    eval_suite = _f("eval_suite.json", "the suite's declarations and data hashes")
    gate_json = _f("gate.json", "the gate's verdict with every criterion")
    gate_txt = _f("gate.txt", "the verdict as text")
    timings = _f("timings.json", "seconds per stage")
    slurm_jobs = _f("slurm_jobs.json", "launcher=slurm: every job of this attempt")
    del _f

    def sbatch(self, stage: str) -> Path:
        return self.dir / f"{stage}.sbatch"

    def slurm_log(self, stage: str, job_id: str) -> Path:
        return self.dir / f"slurm-{stage}-{job_id}.out"

    def stage_input(self, stage: str) -> Path:
        """What a proposal/evaluation job needs from the orchestrator (records; recursive/stage_job.py)."""
        return self.dir / f"{stage}_job.json"

    def stage_error(self, stage: str) -> Path:
        """A proposal/evaluation job's account of a stage failure (recursive/stage_job.py)."""
        return self.dir / f"{stage}_error.json"

    def screen_plan(self, index: int) -> Path:
        return self.screen_dir / f"plan_{index}.json"

    def screen_data(self, index: int) -> Path:
        return self.screen_dir / f"data_{index}"

    # ---------------------------------------------------------------- stages
    def trained(self) -> bool:
        return (self.model / "config.json").exists() and self.train_metrics.exists()

    def done(self, stage: str) -> bool:
        """Whether `stage`'s output exists (the stage is then skipped on a re-run)."""
        return STAGES[stage](self)


# The stages the loop runs for every attempt, in order, each done when its output exists.
STAGES = {
    "propose": lambda a: a.proposal.exists(),
    "train": Attempt.trained,
    "evaluate": lambda a: a.eval.exists(),
    "gate": lambda a: a.gate_json.exists(),
}


@dataclass
class AttemptRecord:
    """What the lineage records of a decided attempt (one "attempt" event in lineage.jsonl).
    `lineage show`, the dashboard, the wandb mirror and the launchers read this, not the
    event's raw keys. Paths are relative to the run directory."""

    generation: int
    attempt: int
    status: Status
    parent: str | None = None            # attempt id of the model that proposed this plan
    proposer: str | None = None          # seed | self | random | fixed | openai
    code_origin: str | None = None       # seed | proposed | edited | inherited
    plan_path: str | None = None
    model_path: str | None = None
    model_sha256: str | None = None
    params: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=lambda: {"passed": False, "reasons": []})
    reason: str | None = None            # failed: why
    timings: dict[str, float] = field(default_factory=dict)
    time: str | None = None

    @property
    def id(self) -> str:
        return attempt_id(self.generation, self.attempt)

    @property
    def reasons(self) -> list[str]:
        """The gate's reasons, or a failed attempt's reason."""
        return list(self.gate.get("reasons") or ([self.reason] if self.reason else []))

    @property
    def parent_key(self) -> tuple[int, int] | None:
        return None if not self.parent else parse_attempt_id(self.parent)

    def where(self, run_dir: Path) -> Attempt:
        return Attempt(run_dir, self.generation, self.attempt)

    @classmethod
    def from_event(cls, event: dict) -> "AttemptRecord":
        """From a lineage.jsonl event (keys this version does not know are ignored).
        Raises ValueError, naming the field, for an event no reader could use (a hand-edited
        or damaged line): generation/attempt not non-negative ints, an unknown status, or a
        field of the wrong type."""
        if not isinstance(event, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in event.items() if k in known and v is not None}
        kw.setdefault("status", "failed")
        _check_event(kw)
        return cls(**kw)

    def to_event(self) -> dict:
        return {"event": "attempt", **dataclasses.asdict(self)}


def _check_event(kw: dict) -> None:
    """The checks of `AttemptRecord.from_event` (on the event's known, non-null keys)."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def j(v: Any) -> str:  # a value as the line spells it
        return json.dumps(v, default=str)[:60]

    for k in ("generation", "attempt"):
        if k not in kw:
            raise ValueError(f"no {k}")
        if not is_int(kw[k]) or kw[k] < 0:
            raise ValueError(f"{k} {j(kw[k])} is not a non-negative integer")
    if kw["status"] not in STATUSES:
        raise ValueError(f"status {j(kw['status'])} is not one of {', '.join(STATUSES)}")
    for k in ("parent", "proposer", "code_origin", "plan_path", "model_path", "model_sha256", "reason", "time"):
        if k in kw and not isinstance(kw[k], str):
            raise ValueError(f"{k} {j(kw[k])} is not a string")
    if "parent" in kw:
        try:
            parse_attempt_id(kw["parent"])
        except (ValueError, IndexError):
            raise ValueError(f"parent {j(kw['parent'])} is not an attempt id (gen_GGG/attempt_AA)") from None
    if "params" in kw and not is_int(kw["params"]):
        raise ValueError(f"params {j(kw['params'])} is not an integer")
    for k in ("metrics", "gate", "timings"):
        if k in kw and not isinstance(kw[k], dict):
            raise ValueError(f"{k} is not a JSON object")
    gate = kw.get("gate") or {}
    if not isinstance(gate.get("reasons") or [], list) or not all(isinstance(r, str) for r in gate.get("reasons") or []):
        raise ValueError("gate.reasons is not a list of strings")
    if not isinstance(gate.get("criteria") or [], list) or not all(isinstance(c, dict) for c in gate.get("criteria") or []):
        raise ValueError("gate.criteria is not a list of objects")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (kw.get("timings") or {}).values()):
        raise ValueError("timings holds a value that is not a number")
