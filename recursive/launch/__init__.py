"""Where the heavy stages of an attempt run: `launcher=local` (child processes of the
orchestrator) or `launcher=slurm` (batch jobs), behind one interface.

A launcher runs one stage of one attempt to its end and returns the exit code of the
stage's process; it reattaches to a job that a previous orchestrator started instead of
starting another. What the code and the files mean is the training protocol's
(`recursive.train.protocol.read_outcome`), the same whichever launcher ran it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

from recursive.attempt import Attempt
from recursive.launch.local import LocalConfig
from recursive.launch.slurm import SlurmConfig

CONFIGS = {"local": LocalConfig, "slurm": SlurmConfig}
"""launcher name -> its config group's schema (configs/launcher/<name>.yaml)."""

STAGES = ("train", "screen")
"""Stages a launcher runs: the training of an attempt, and the screening of its candidates."""


class Launcher(ABC):
    @abstractmethod
    def run(self, attempt: Attempt, stage: str) -> int:
        """Run `stage` of `attempt` (reattaching to a job already under way) until it ends;
        return its exit code. Raises LaunchError when the launcher itself fails."""


def make_launcher(cfg, log: Callable[[str], None]) -> Launcher:
    """The launcher of a RunConfig (cfg.launcher.name)."""
    if cfg.launcher.name == "slurm":
        from recursive.launch.slurm import SlurmLauncher
        return SlurmLauncher(cfg, log)
    from recursive.launch.local import LocalLauncher
    return LocalLauncher(cfg, log)
