"""`launcher=local`: each stage is a child process of the orchestrator, tied to its life.

A trainer whose orchestrator dies (even by kill -9) gets SIGTERM, checkpoints and exits;
it holds the attempt's train lock until then, and a re-run waits for that lock rather
than race it, then resumes from the checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from recursive.errors import StageError
from recursive.launch.base import Launcher


@dataclass
class LocalConfig:
    name: str = "local"
    """Heavy stages run as subprocesses on this machine."""


class LocalLauncher(Launcher):
    def __init__(self, cfg, log: Callable[[str], None]):
        self.train, self.log = cfg.train, log

    def env(self) -> dict:
        return dict(os.environ, OMP_NUM_THREADS=str(self.train.threads), TOKENIZERS_PARALLELISM="false")

    def run(self, attempt, stage: str) -> int:
        if stage == "screen":
            with open(attempt.screen_dir / "screen.log", "w") as logf:
                return run_child([sys.executable, "-m", "recursive.train", "--screen", str(attempt.screen_dir)],
                                 logf, self.env())
        cmd = train_command(self.train.num_processes, attempt.dir)
        # a trainer left by a killed orchestrator gets SIGTERM (see run_child), checkpoints and
        # exits; it holds train.lock until then: wait for it rather than race it
        wait_for_lock(attempt.train_lock, what=f"the previous training process of {attempt.dir.name}", log=self.log)
        attempt.train_error.unlink(missing_ok=True)
        # appended: a resumed run keeps the log of the segment before the preemption
        with open(attempt.train_log, "a") as logf:
            logf.write(f"=== {datetime.now(timezone.utc).isoformat(timespec='seconds')} {' '.join(cmd)}\n")
            logf.flush()
            return run_child(cmd, logf, self.env())


def train_command(num_processes: int, attempt_dir: Path) -> list[str]:
    if num_processes <= 1:
        return [sys.executable, "-m", "recursive.train", str(attempt_dir)]
    # one code path for 1 and N processes: accelerate reads rank/world size from torchrun's env
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}",
            "-m", "recursive.train", str(attempt_dir)]


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the orchestrator dies, even by kill -9, so
    no orphan trainer keeps writing into an attempt that a re-run will redo. SIGTERM makes
    the trainer checkpoint and exit 75, so the re-run resumes from that checkpoint."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child outlives a killed orchestrator
        pass


def run_child(cmd: list[str], logf, env: dict) -> int:
    """A stage process, its output in `logf`, tied to the orchestrator's life."""
    return subprocess.call(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                           preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def hold_lock(path: Path):
    """An exclusive flock on `path`, held while the returned file stays open (the kernel drops
    it when the process dies, even by kill -9); None if another process holds it."""
    import fcntl
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def wait_for_lock(path: Path, *, what: str, log: Callable[[str], None], timeout: float = 600.0) -> None:
    """Block until nobody holds the flock on `path` (then release it at once)."""
    deadline, said = time.monotonic() + timeout, False
    while (f := hold_lock(path)) is None:
        if not said:
            log(f"waiting for {what} to exit (it holds {path})")
            said = True
        if time.monotonic() > deadline:
            raise StageError(f"{what} still holds {path} after {timeout:.0f} s; stop it and run again")
        time.sleep(0.2)
    f.close()
