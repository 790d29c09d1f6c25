"""The errors the orchestrator and the CLI tell apart (a leaf module: it imports nothing of ours).

`recursive run` maps each to an exit code: ConfigError 2 (bad configuration, nothing
started), StageError 1 (a stage broke for a reason that is not the plan's fault; the lineage
stops with the reason), Requeue 75 (training was preempted and checkpointed; run the same
command again). A plan's own failure is none of these: it is recorded as a failed attempt.
"""


class ConfigError(ValueError):
    """The configuration (config tree, overrides, run directory's stored config) is wrong."""


class StageError(RuntimeError):
    """A stage crashed for a reason that is not the plan's fault (the lineage stops)."""


class Requeue(RuntimeError):
    """Training was preempted (SIGTERM/SIGUSR1) and wrote a checkpoint: nothing is wrong,
    run the same command again and it resumes from that checkpoint (exit code 75)."""


class LaunchError(StageError):
    """A launcher (Slurm, a local process) refused or lost a stage's job."""
