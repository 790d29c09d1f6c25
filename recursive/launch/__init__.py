"""Where the heavy stages of an attempt run: `launcher=local` (child processes of the
orchestrator) or `launcher=slurm` (batch jobs), behind one interface.

A launcher runs one stage of one attempt to its end and returns the exit code of the
stage's process; it reattaches to a job that a previous orchestrator started instead of
starting another. What the code and the files mean is the training protocol's
(`recursive.train.protocol.read_outcome`), the same whichever launcher ran it.
"""

from __future__ import annotations

from typing import Callable

from recursive.launch.base import Launcher
from recursive.launch.local import LocalConfig
from recursive.launch.slurm import SlurmConfig

CONFIGS = {"local": LocalConfig, "slurm": SlurmConfig}
"""launcher name -> its config group's schema (configs/launcher/<name>.yaml)."""


def make_launcher(cfg, log: Callable[[str], None]) -> Launcher:
    """The launcher of a RunConfig (cfg.launcher.name)."""
    if cfg.launcher.name == "slurm":
        from recursive.launch.slurm import SlurmLauncher
        return SlurmLauncher(cfg, log)
    from recursive.launch.local import LocalLauncher
    return LocalLauncher(cfg, log)
