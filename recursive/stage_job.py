"""`python -m recursive.stage_job STAGE ATTEMPT_DIR`: one attempt's proposal or evaluation in
a process of its own, as a Slurm job runs it (launcher.stages, slurm/stage.sbatch).

It does what the orchestrator does in-process (`recursive.stages.propose` / `evaluate`, the
same functions) on the run directory as the orchestrator left it: the stored config.json,
the data manifest, the lineage's family config. The orchestrator wrote what only it knows
into ATTEMPT_DIR/<stage>_job.json (the parent's record, the attempt's record so far) before
submitting, and reads the stage's files when the job has ended, so it needs no GPU itself.

Exit codes: 0 the stage's output was written; 2 the stage failed for a reason a rerun would
not change (ATTEMPT_DIR/<stage>_error.json holds the error's type and its one line, which
the orchestrator raises as if the stage had run in-process); 143 terminated (scancel,
preemption, the time limit: nothing half-written counts, a resubmission starts over);
anything else is a crash (its traceback is in the job's log; retried like a failed job).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from recursive.attempt import Attempt, AttemptRecord
from recursive.errors import ConfigError, Requeue, StageError
from recursive.io import atomic_write_json, read_json

STAGES = ("propose", "evaluate")
EXIT_STAGE_FAILED = 2  # = protocol.EXIT_PLAN_FAILED: the launchers treat it alike (no retry)
ERRORS = {"ConfigError": ConfigError, "StageError": StageError, "Requeue": Requeue}


def attach(run_dir: Path):
    """The orchestrator's RunDir as a stage needs it, without taking the run directory: the
    orchestrator holds orchestrator.lock and waits for this job. Data is read, never built."""
    from recursive.launch.local import LocalLauncher
    from recursive.rundir import RunDir, log, read_stored_config
    from recursive.run_config import RunConfig
    tree = {**read_stored_config(run_dir / "config.json"), "run_dir": str(run_dir)}
    rd = RunDir(RunConfig.from_dict(tree), tree)
    manifest = run_dir / "data" / "manifest.json"
    if not manifest.exists():
        raise StageError(f"{manifest} is missing: the orchestrator prepares data before any stage job")
    rd.manifest = read_json(manifest)
    rd.vocab_size = int(rd.manifest["vocab_size"])
    rd.base = rd._base()  # written by the orchestrator at the lineage's start (model=pretrained)
    rd.launcher = LocalLauncher(rd.cfg, log)  # screening runs inside this job's allocation
    return rd


def run(stage: str, attempt_dir: Path) -> None:
    from recursive import stages
    at = Attempt.from_dir(attempt_dir.resolve())
    given = read_json(at.stage_input(stage))
    rd = attach(at.run_dir)
    if stage == "propose":
        parent = given.get("parent")
        stages.propose(rd, at, None if parent is None else AttemptRecord(**parent))
    else:
        stages.evaluate(rd, at, AttemptRecord(**given["record"]))


def _terminated(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in STAGES or not Path(argv[1]).is_dir():
        print(f"usage: python -m recursive.stage_job {{{','.join(STAGES)}}} ATTEMPT_DIR (got {' '.join(argv)!r})",
              file=sys.stderr)
        return 64
    stage, attempt_dir = argv[0], Path(argv[1])
    # Slurm's SIGTERM (scancel, preemption, time limit) ends the stage as a termination, not
    # as a stage failure: a screening process it kills would otherwise read as one
    signal.signal(signal.SIGTERM, _terminated)
    try:
        run(stage, attempt_dir)
    except tuple(ERRORS.values()) as e:
        at = Attempt.from_dir(attempt_dir.resolve())
        atomic_write_json(at.stage_error(stage), {"type": type(e).__name__, "error": str(e)})
        print(f"{stage} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_STAGE_FAILED
    return 0


def raise_recorded(at: Attempt, stage: str) -> None:
    """In the orchestrator: raise the error a stage job recorded, as the stage would have."""
    path = at.stage_error(stage)
    try:
        err = read_json(path)
        cls, text = ERRORS.get(err.get("type"), StageError), str(err["error"])
    except (OSError, ValueError, KeyError, AttributeError):
        raise StageError(f"the {stage} job of {at.dir} failed and {path} is missing or unreadable") from None
    raise cls(text)


if __name__ == "__main__":
    sys.exit(main())
