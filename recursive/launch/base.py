"""The interface every launcher implements (recursive/launch/__init__.py says why)."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Launcher(ABC):
    job_stages: frozenset = frozenset()
    """Stages that run as jobs of this launcher (launcher=slurm's launcher.stages). The loop
    hands "propose" and "evaluate" to `run` when listed here and runs them in its own
    process otherwise; training always goes through `run`."""

    @abstractmethod
    def run(self, attempt, stage: str) -> int:
        """Run `stage` ("train", "screen", or one of job_stages) of `attempt` (a recursive.attempt.Attempt),
        reattaching to a job already under way, until it ends; return its exit code. Raises
        LaunchError when the launcher itself fails."""
