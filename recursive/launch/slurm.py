"""`launcher=slurm`: each plan's training runs as a Slurm batch job.

What a careful operator would do, in code:
- the job script is rendered from `slurm/train.sbatch` with every resource from the config
  (partition, account, qos, time, nodes, GPUs and tasks per node, CPUs, memory, signal);
- the job id is written to the attempt's slurm_jobs.json and to the lineage the moment
  `sbatch` returns; before submitting, a job of the same (unique) name still in the queue is
  adopted, which closes the window between `sbatch` returning and the record being written;
- a re-run of the orchestrator reattaches to the recorded job instead of submitting another;
- preemption or the time limit (`--signal=USR1@T`): the tasks checkpoint and exit 75, the job
  script requeues itself (`scontrol requeue`), the job keeps its id and resumes;
- a job that ends badly is recorded with its Slurm state, exit code and log, and resubmitted
  (it resumes from its last checkpoint) while `max_retries` allows and its state is in
  `retry_states`; a cancelled job (`scancel`: a person decided) stops the lineage with a
  clear message, and running the same command again resubmits and resumes.

Job states are read with `scontrol show job` (no accounting database needed) and, for jobs
that Slurm has already forgotten (MinJobAge), with `sacct` where accounting exists.
Screening runs in the orchestrator's allocation (the local launcher).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from typing import Any, Dict, List, Optional

from recursive import lineage
from recursive.errors import LaunchError
from recursive.launch.base import Launcher
from recursive.io import atomic_write_json, atomic_write_text, read_json
from recursive.train import protocol

ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT", "STOPPED"}


@dataclass
class SlurmConfig:
    """launcher=slurm (configs/launcher/slurm.yaml; slurm/README.md)."""

    name: str = "slurm"
    partition: Optional[str] = None
    """null: the cluster's default partition."""
    account: Optional[str] = None
    qos: Optional[str] = None
    time: str = "01:00:00"
    """Per training job; near the end the job checkpoints and requeues (signal)."""
    nodes: int = 1
    ntasks_per_node: Optional[int] = None
    """Ranks per node; null: train.num_processes / nodes (one rank per GPU)."""
    gpus_per_node: int = 0
    """0: a CPU job (no --gpus-per-node line)."""
    cpus_per_task: int = 1
    mem: Optional[str] = None
    """e.g. 64G; null: the partition's default."""
    constraint: Optional[str] = None
    signal: str = "USR1@90"
    """--signal: the tasks get USR1 this long before the time limit, checkpoint, requeue."""
    requeue: bool = True
    """Requeue the job (same id) when training was preempted or hit the limit."""
    max_retries: int = 2
    """Resubmissions of a job that ended in one of retry_states, per orchestrator run."""
    retry_states: List[str] = field(default_factory=lambda: ["FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT",
                                                             "PREEMPTED", "BOOT_FAIL", "DEADLINE"])
    """CANCELLED is absent on purpose: someone ran scancel; a re-run resubmits."""
    poll_s: float = 5
    """Seconds between job-state queries."""
    python: Optional[str] = None
    """The interpreter the job runs; null: the orchestrator's (a shared filesystem)."""
    env: Dict[str, Any] = field(default_factory=dict)
    """Extra variables exported in the job script (e.g. NCCL_DEBUG: WARN)."""
    extra_sbatch: List[str] = field(default_factory=list)
    """Extra directives, e.g. ["--exclusive", "--reservation=ml"]."""

    def problems(self, run) -> list[str]:
        """Rules across keys (run: the whole RunConfig), one line per problem."""
        out = []
        for key, lo in (("nodes", 1), ("cpus_per_task", 1), ("max_retries", 0), ("gpus_per_node", 0)):
            if getattr(self, key) < lo:
                out.append(f"launcher.{key} must be an integer >= {lo}, got {getattr(self, key)!r}")
        if self.ntasks_per_node is not None and self.ntasks_per_node < 1:
            out.append(f"launcher.ntasks_per_node must be null or an integer >= 1, got {self.ntasks_per_node!r}")
        for key in ("time", "signal"):
            if not getattr(self, key):
                out.append(f"launcher.{key} must be a non-empty string (e.g. 01:00:00, USR1@90), got ''")
        if not out:
            ranks = run.train.num_processes
            per_node = self.ntasks_per_node or max(1, ranks // self.nodes)
            if self.nodes * per_node != ranks:
                out.append(f"launcher.nodes ({self.nodes}) x ntasks_per_node ({per_node}) must equal "
                           f"train.num_processes ({ranks})")
        return out


class SlurmError(LaunchError):
    """Slurm refused or lost a job in a way the loop cannot fix by itself."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sh(cmd: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SlurmError(f"`{cmd[0]}` not found: launcher=slurm needs the Slurm client commands on PATH "
                         "(run the orchestrator on a login node or inside a job)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(cmd)}` did not answer in {timeout:.0f} s (is slurmctld up?)") from None


def template_path() -> Path:
    """slurm/train.sbatch: in the source tree, or installed as package data."""
    from importlib import resources
    try:
        p = Path(str(resources.files("recursive.slurm_templates") / "train.sbatch"))
        if p.exists():
            return p
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "slurm" / "train.sbatch"


def job_name(run_dir: Path, generation: int, attempt: int, stage: str = "train") -> str:
    """Unique per run directory and attempt, so that a queued job can be found by name."""
    import hashlib
    tag = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return f"rec-{tag}-g{generation:03d}a{attempt:02d}-{stage}"


def render(lc: SlurmConfig, tc, attempt, name: str) -> str:
    """The job script of one attempt's training (lc: the launcher config, tc: the train config)."""
    nodes = lc.nodes
    ranks = tc.num_processes
    per_node = lc.ntasks_per_node or max(1, ranks // nodes)
    if nodes * int(per_node) != ranks:
        raise SlurmError(f"launcher.nodes ({nodes}) x launcher.ntasks_per_node ({per_node}) = "
                         f"{nodes * int(per_node)} ranks, but train.num_processes is {ranks}")
    optional = []
    for key, flag in (("partition", "partition"), ("account", "account"), ("qos", "qos"), ("mem", "mem"),
                      ("constraint", "constraint"), ("gpus_per_node", "gpus-per-node")):
        v = getattr(lc, key)
        if v not in (None, "", 0):
            optional.append(f"#SBATCH --{flag}={v}")
    optional += [f"#SBATCH {line}" for line in lc.extra_sbatch or []]
    env_lines = [f"export {k}={shlex.quote(str(v))}" for k, v in (lc.env or {}).items()]
    path = template_path()
    values = dict(
        job_name=name, log=str(attempt.slurm_log("train", "%j")), nodes=nodes, ntasks_per_node=per_node,
        cpus_per_task=lc.cpus_per_task, time=lc.time, signal=lc.signal,
        optional_lines="\n".join(optional), env_lines="\n".join(env_lines), threads=tc.threads,
        python=shlex.quote(lc.python or sys.executable), attempt_dir=shlex.quote(str(attempt.dir)),
        requeue=1 if lc.requeue else 0)
    try:
        return Template(path.read_text()).substitute(values)
    except (KeyError, ValueError) as e:
        raise SlurmError(f"{path}: bad placeholder {e} (known: {', '.join(sorted(values))}; "
                         "write $$ for a literal $)") from None


def job_state(job_id: str) -> dict | None:
    """{"state", "exit_code", "restarts"} of a job, None if Slurm does not know it."""
    p = _sh(["scontrol", "show", "job", "-o", job_id])
    if p.returncode == 0 and "JobState=" in p.stdout:
        f = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", p.stdout))
        code = f.get("ExitCode", "0:0").split(":")
        return {"state": f["JobState"], "exit_code": int(code[0]), "signal": int(code[1]) if len(code) > 1 else 0,
                "restarts": int(f.get("Restarts", 0)), "reason": f.get("Reason")}
    q = _sh(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode"])
    if q.returncode == 0 and q.stdout.strip():
        state, code = q.stdout.strip().splitlines()[0].split("|")
        rc, sig = (code.split(":") + ["0"])[:2]
        return {"state": state.split()[0], "exit_code": int(rc), "signal": int(sig), "restarts": None, "reason": None}
    return None


def queued_by_name(name: str) -> list[str]:
    p = _sh(["squeue", "-h", "--name", name, "-o", "%i"])
    return p.stdout.split() if p.returncode == 0 else []


class SlurmLauncher(Launcher):
    """Runs the training stage of one attempt as a Slurm job and waits for it."""

    def __init__(self, cfg, log):
        from recursive.launch.local import LocalLauncher
        self.lc, self.tc, self.run_dir, self.log = cfg.launcher, cfg.train, Path(cfg.run_dir).resolve(), log
        self.local = LocalLauncher(cfg, log)  # screening runs in the orchestrator's allocation

    # ----------------------------------------------------------------- records
    def _jobs(self, at) -> list[dict]:
        return read_json(at.slurm_jobs) if at.slurm_jobs.exists() else []

    def _save(self, at, jobs: list[dict]) -> None:
        atomic_write_json(at.slurm_jobs, jobs)

    def _event(self, at, job: dict, event: str) -> None:
        lineage.append(self.run_dir, {"event": event, "generation": at.generation, "attempt": at.attempt,
                                      "stage": "train", **{k: job.get(k) for k in ("job_id", "name", "state",
                                                                                   "exit_code", "restarts", "log")},
                                      "time": _now()})

    # ----------------------------------------------------------------- one job
    def submit(self, at, name: str, jobs: list[dict]) -> dict:
        script = render(self.lc, self.tc, at, name)
        atomic_write_text(at.sbatch("train"), script)
        at.train_error.unlink(missing_ok=True)  # a new job: an old failure no longer speaks for it
        p = _sh(["sbatch", "--parsable", str(at.sbatch("train"))])
        if p.returncode != 0:
            raise SlurmError(f"sbatch refused the training job of {at.dir}: {p.stderr.strip() or p.stdout.strip()}")
        job_id = p.stdout.strip().split(";")[0]
        return self._adopt(at, name, job_id, jobs, how="submitted")

    def _adopt(self, at, name: str, job_id: str, jobs: list[dict], how: str) -> dict:
        job = {"job_id": job_id, "name": name, "submitted": _now(), "how": how, "state": "PENDING",
               "log": str(at.slurm_log("train", job_id))}
        jobs.append(job)
        self._save(at, jobs)  # recorded before anything else can go wrong
        self._event(at, job, "job_submitted")
        self.log(f"{at.dir.name}: training job {job_id} {how} ({name}); log {job['log']}")
        return job

    def wait(self, at, job: dict, jobs: list[dict]) -> dict:
        """Poll until the job leaves the queue for good; record state changes."""
        poll, last, gone = float(self.lc.poll_s), None, 0
        while True:
            st = job_state(job["job_id"])
            if st is None:
                gone += 1
                if gone >= 3:
                    st = {"state": "UNKNOWN", "exit_code": None, "signal": None, "restarts": None, "reason": None}
                else:
                    time.sleep(poll)
                    continue
            if (st["state"], st.get("restarts")) != last:
                last = (st["state"], st.get("restarts"))
                job.update(state=st["state"], exit_code=st["exit_code"], restarts=st.get("restarts"))
                self._save(at, jobs)
                self.log(f"{at.dir.name}: job {job['job_id']} {st['state']}"
                         + (f" (restarts {st['restarts']})" if st.get("restarts") else ""))
            if st["state"] not in ACTIVE:
                job["ended"] = _now()
                self._save(at, jobs)
                self._event(at, job, "job_ended")
                return job
            time.sleep(poll)

    # ----------------------------------------------------------------- the stage
    def run(self, at, stage: str) -> int:
        """Train attempt `at` on the cluster. Returns the exit code of a job that trained (0)
        or whose plan failed (2, TRAIN_ERROR), as the local launcher would; raises SlurmError
        when the cluster failed it and no retry is left."""
        if stage != "train":
            return self.local.run(at, stage)
        name = job_name(self.run_dir, at.generation, at.attempt)
        jobs = self._jobs(at)
        retries = self.lc.max_retries
        retry_states = set(self.lc.retry_states or [])
        submitted_now = 0  # this invocation's submissions: the first plus at most `retries` more
        while True:
            job = jobs[-1] if jobs else None
            if job is not None and job.get("ended") is None:
                self.log(f"{at.dir.name}: reattaching to job {job['job_id']} ({job['state']})")
                job = self.wait(at, job, jobs)
            elif job is None or not (job["state"] == "COMPLETED" or self._plan_fault(at, job)):
                if submitted_now > retries:
                    raise SlurmError(self._failure(job, f"after {submitted_now} submissions "
                                                        f"(launcher.max_retries {retries})"))
                known = {x["job_id"] for x in jobs}
                queued = [j for j in queued_by_name(name) if j not in known]
                if queued:  # submitted by a run that died before it could record the id
                    job = self._adopt(at, name, queued[0], jobs, how="adopted from the queue")
                else:
                    job = self.submit(at, name, jobs)
                submitted_now += 1
                job = self.wait(at, job, jobs)
            if job["state"] == "COMPLETED":
                if (at.model / "config.json").exists():
                    return protocol.EXIT_OK
                raise SlurmError(f"job {job['job_id']} COMPLETED but wrote no model in {at.dir}; see {job['log']}")
            if self._plan_fault(at, job):
                return protocol.EXIT_PLAN_FAILED  # the plan or its recipe failed: the attempt's failure
            if job["state"].split()[0] not in retry_states:
                raise SlurmError(self._failure(job, "not retried (state not in launcher.retry_states)"))
            self.log(f"{at.dir.name}: job {job['job_id']} ended {job['state']}; resubmitting "
                     "(training resumes from its last checkpoint)")

    @staticmethod
    def _plan_fault(at, job: dict) -> bool:
        return job.get("exit_code") == protocol.EXIT_PLAN_FAILED and at.train_error.exists()

    @staticmethod
    def _failure(job: dict | None, why: str) -> str:
        if job is None:
            return f"no training job could be run {why}"
        return (f"training job {job['job_id']} ended {job['state']} (exit code {job.get('exit_code')}), {why}; "
                f"log: {job['log']}. Run the same command again to resubmit: training resumes from its "
                "last checkpoint")
