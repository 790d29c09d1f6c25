"""The interface every launcher implements (recursive/launch/__init__.py says why)."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Launcher(ABC):
    @abstractmethod
    def run(self, attempt, stage: str) -> int:
        """Run `stage` ("train" or "screen") of `attempt` (a recursive.attempt.Attempt),
        reattaching to a job already under way, until it ends; return its exit code. Raises
        LaunchError when the launcher itself fails."""
