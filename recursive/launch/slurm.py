"""`launcher=slurm`: each plan's training (and, with `launcher.stages`, each attempt's
proposal and evaluation) runs as a Slurm batch job.

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

Every kind of job (`propose`, `train`, `evaluate`: `launcher.stages`) goes through the same
submit / adopt / wait / reattach / retry loop (`SlurmLauncher.run`); the records carry the
kind. A proposal or evaluation job runs `python -m recursive.stage_job STAGE ATTEMPT_DIR`
(slurm/stage.sbatch), which writes the files the in-process stage would; screening runs
inside the proposal job's allocation (or, when proposal is not a job, the orchestrator's).

The wall clock: a training job's --time is budget.wall_clock_s + the --signal lead +
launcher.time_margin_s, rounded up to whole minutes, or launcher.time when that is smaller
(`train_time`). The trainer stops itself at the cap first (checkpoint, OverBudget, exit 2:
the attempt fails, no retry); USR1 (checkpoint + requeue) comes wall_clock_s + margin after
the start, so after the cap unless start-up took longer than the margin; then the requeued
job resumes with the seconds already trained counted and stops at its cap: every segment
adds training time, so it cannot requeue forever. Slurm's TIMEOUT (a job that ignored both)
is the backstop: recorded as over budget, never retried.
"""

from __future__ import annotations

import math
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


STAGE_KINDS = ("propose", "train", "evaluate")
"""The stages that may run as Slurm jobs (launcher.stages)."""
LABEL = {"propose": "proposal", "train": "training", "evaluate": "evaluation"}


@dataclass
class StageResources:
    """Resources of a proposal or evaluation job (one task on one node); null: defaults."""

    gpus: Optional[int] = None
    """GPUs of the job; null: 1 when launcher.gpus_per_node > 0, else 0 (a CPU job)."""
    cpus: Optional[int] = None
    """CPUs (and OMP threads) of the job; null: launcher.cpus_per_task."""
    mem: Optional[str] = None
    """e.g. 32G; null: launcher.mem."""
    time: Optional[str] = None
    """Time limit; null: launcher.time."""


@dataclass
class SlurmConfig:
    """launcher=slurm (configs/launcher/slurm.yaml; slurm/README.md)."""

    name: str = "slurm"
    stages: List[str] = field(default_factory=lambda: ["train"])
    """Stages that run as Slurm jobs, some of propose, train, evaluate; the others run as
    with launcher=local. Proposal of generation 0 (the seed plan: no model) always runs in
    the orchestrator."""
    propose: StageResources = field(default_factory=StageResources)
    """Resources of a proposal job (the parent loaded, K plans sampled, screening)."""
    evaluate: StageResources = field(default_factory=StageResources)
    """Resources of an evaluation job (the eval suite, proposer competence)."""
    lineage: StageResources = field(default_factory=StageResources)
    """Resources of an orchestrator job (`recursive experiment compare` with launcher=slurm:
    one slurm/lineage.sbatch job per lineage); null: as for the stages, except time (null:
    the template's, 3 days: an orchestrator waits on every generation)."""
    partition: Optional[str] = None
    """null: the cluster's default partition."""
    account: Optional[str] = None
    qos: Optional[str] = None
    time: str = "01:00:00"
    """Per job; near the end a training job checkpoints and requeues (signal). A training
    job's --time is the smaller of this and budget.wall_clock_s + the signal's lead +
    time_margin_s (rounded up to whole minutes); with budget.wall_clock_s null, this."""
    time_margin_s: float = 120
    """Start-up allowance in a training job's --time: budget.wall_clock_s + the signal's
    lead + this, so the trainer's own cap comes before USR1 when start-up is shorter."""
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
    """CANCELLED is absent on purpose: someone ran scancel; a re-run resubmits. A training
    job's TIMEOUT under a --time set by budget.wall_clock_s is over budget: never retried."""
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
        bad = [s for s in self.stages or [] if s not in STAGE_KINDS]
        if bad or not self.stages:
            out.append(f"launcher.stages must list one or more of {', '.join(STAGE_KINDS)}, got "
                       f"{list(self.stages or [])!r}")
        for key, res in (("propose", self.propose), ("evaluate", self.evaluate), ("lineage", self.lineage)):
            if res.gpus is not None and res.gpus < 0:
                out.append(f"launcher.{key}.gpus must be null or an integer >= 0, got {res.gpus!r}")
            if res.cpus is not None and res.cpus < 1:
                out.append(f"launcher.{key}.cpus must be null or an integer >= 1, got {res.cpus!r}")
        for key, value in (("time", self.time), ("propose.time", self.propose.time),
                           ("evaluate.time", self.evaluate.time), ("lineage.time", self.lineage.time)):
            if value:
                try:
                    parse_time(value)
                except ValueError:
                    out.append(f"launcher.{key} must be a Slurm time (MM, HH:MM:SS, D-HH:MM:SS or UNLIMITED), "
                               f"got {value!r}")
        if not math.isfinite(self.time_margin_s) or self.time_margin_s < 0:
            out.append(f"launcher.time_margin_s must be a number of seconds >= 0, got {self.time_margin_s!r}")
        if not out:
            ranks = run.train.num_processes
            per_node = self.ntasks_per_node or max(1, ranks // self.nodes)
            if self.nodes * per_node != ranks:
                out.append(f"launcher.nodes ({self.nodes}) x ntasks_per_node ({per_node}) must equal "
                           f"train.num_processes ({ranks})")
        return out


def parse_time(text: str) -> float | None:
    """Seconds of a Slurm time limit (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS);
    None: UNLIMITED/INFINITE. Raises ValueError for anything else."""
    t = str(text).strip()
    if t.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days, _, rest = t.rpartition("-") if "-" in t else ("0", "", t)
    parts = rest.split(":")
    if not days.isdigit() or not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        raise ValueError(t)
    n = [int(p) for p in parts]
    if "-" in t:  # D-HH[:MM[:SS]]
        h, m, sec = (n + [0, 0])[:3]
    else:  # MM, MM:SS, HH:MM:SS
        h, m, sec = {1: (0, n[0], 0), 2: (0, n[0], n[-1]), 3: tuple(n)}[len(n)]
    return float(int(days) * 86400 + h * 3600 + m * 60 + sec)


def format_time(seconds: float) -> str:
    """[D-]HH:MM:SS, as sbatch reads it."""
    s = int(seconds)
    d, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{d}-{text}" if d else text


def signal_lead(sig: str) -> int:
    """Seconds before the time limit that --signal=[B:]SIG[@T] fires (Slurm's default: 60)."""
    _, at, lead = str(sig).partition("@")
    return int(lead) if at and lead.isdigit() else 60


def train_time(lc: "SlurmConfig", wall_clock_s: float | None) -> tuple[str, str]:
    """(--time of a training job, the key it comes from): budget.wall_clock_s + the signal's
    lead + launcher.time_margin_s, rounded up to whole minutes, or launcher.time when that
    is smaller or wall_clock_s is null. The lead is inside so that USR1 (checkpoint +
    requeue) comes at least wall_clock_s + time_margin_s after the job started: after the
    trainer's own cap, unless start-up took longer than the margin."""
    if wall_clock_s is None:
        return lc.time, "launcher.time"
    derived = math.ceil((float(wall_clock_s) + signal_lead(lc.signal) + float(lc.time_margin_s)) / 60) * 60
    configured = parse_time(lc.time)
    if configured is not None and configured <= derived:
        return lc.time, "launcher.time"
    return format_time(derived), "budget.wall_clock_s"


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


def template_path(name: str = "train.sbatch") -> Path:
    """slurm/<name> (train.sbatch, stage.sbatch): in the source tree, or installed as package data."""
    from importlib import resources
    try:
        p = Path(str(resources.files("recursive.slurm_templates") / name))
        if p.exists():
            return p
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "slurm" / name


def job_name(run_dir: Path, generation: int, attempt: int, stage: str = "train") -> str:
    """Unique per run directory and attempt, so that a queued job can be found by name."""
    import hashlib
    tag = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]
    return f"rec-{tag}-g{generation:03d}a{attempt:02d}-{stage}"


def _resource_lines(lc: SlurmConfig, gpus: int | None, mem: str | None) -> list[str]:
    """The #SBATCH lines every kind of job shares, leaving out unset resources."""
    lines = []
    for flag, v in (("partition", lc.partition), ("account", lc.account), ("qos", lc.qos), ("mem", mem),
                    ("constraint", lc.constraint), ("gpus-per-node", gpus)):
        if v not in (None, "", 0):
            lines.append(f"#SBATCH --{flag}={v}")
    return lines + [f"#SBATCH {line}" for line in lc.extra_sbatch or []]


def _substitute(path: Path, values: dict) -> str:
    try:
        return Template(path.read_text()).substitute(values)
    except (KeyError, ValueError) as e:
        raise SlurmError(f"{path}: bad placeholder {e} (known: {', '.join(sorted(values))}; "
                         "write $$ for a literal $)") from None


def _env_lines(lc: SlurmConfig) -> str:
    return "\n".join(f"export {k}={shlex.quote(str(v))}" for k, v in (lc.env or {}).items())


def render(lc: SlurmConfig, tc, attempt, name: str, wall_clock_s: float | None = None) -> str:
    """The job script of one attempt's training (lc: the launcher config, tc: the train
    config; wall_clock_s: budget.wall_clock_s, which bounds --time, see `train_time`)."""
    nodes = lc.nodes
    ranks = tc.num_processes
    per_node = lc.ntasks_per_node or max(1, ranks // nodes)
    if nodes * int(per_node) != ranks:
        raise SlurmError(f"launcher.nodes ({nodes}) x launcher.ntasks_per_node ({per_node}) = "
                         f"{nodes * int(per_node)} ranks, but train.num_processes is {ranks}")
    values = dict(
        job_name=name, log=str(attempt.slurm_log("train", "%j")), nodes=nodes, ntasks_per_node=per_node,
        cpus_per_task=lc.cpus_per_task, time=train_time(lc, wall_clock_s)[0], signal=lc.signal,
        optional_lines="\n".join(_resource_lines(lc, lc.gpus_per_node, lc.mem)), env_lines=_env_lines(lc),
        threads=tc.threads, python=shlex.quote(lc.python or sys.executable),
        attempt_dir=shlex.quote(str(attempt.dir)), requeue=1 if lc.requeue else 0)
    return _substitute(template_path(), values)


def stage_resources(lc: SlurmConfig, kind: str) -> dict:
    """gpus, cpus, mem, time of a proposal or evaluation job, defaults filled in."""
    res: StageResources = getattr(lc, kind)
    return {"gpus": res.gpus if res.gpus is not None else (1 if lc.gpus_per_node else 0),
            "cpus": res.cpus or lc.cpus_per_task, "mem": res.mem or lc.mem, "time": res.time or lc.time}


def lineage_sbatch_args(lc: SlurmConfig) -> list[str]:
    """sbatch options of an orchestrator job (slurm/lineage.sbatch; they override its
    #SBATCH lines): launcher.lineage.* with the stage defaults, the lines every kind of job
    shares (`_resource_lines`), and the interpreter it runs `recursive.cli` with
    (RECURSIVE_PYTHON: launcher.python, or this one)."""
    r = stage_resources(lc, "lineage")
    args = [f"--cpus-per-task={r['cpus']}", f"--export=ALL,RECURSIVE_PYTHON={lc.python or sys.executable}"]
    if lc.lineage.time:
        args.append(f"--time={lc.lineage.time}")
    return args + [line.removeprefix("#SBATCH ") for line in _resource_lines(lc, r["gpus"], r["mem"])]


def render_stage(lc: SlurmConfig, kind: str, attempt, name: str) -> str:
    """The job script of one attempt's proposal or evaluation (slurm/stage.sbatch)."""
    r = stage_resources(lc, kind)
    values = dict(
        job_name=name, log=str(attempt.slurm_log(kind, "%j")), cpus_per_task=r["cpus"], time=r["time"],
        optional_lines="\n".join(_resource_lines(lc, r["gpus"], r["mem"])), env_lines=_env_lines(lc),
        threads=r["cpus"], python=shlex.quote(lc.python or sys.executable), stage=kind,
        attempt_dir=shlex.quote(str(attempt.dir)))
    return _substitute(template_path("stage.sbatch"), values)


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
    """Runs the stages in launcher.stages of one attempt as Slurm jobs and waits for them."""

    def __init__(self, cfg, log):
        from recursive.launch.local import LocalLauncher
        self.lc, self.tc, self.run_dir, self.log = cfg.launcher, cfg.train, Path(cfg.run_dir).resolve(), log
        self.wall_clock_s = cfg.budget.wall_clock_s
        self.job_stages = frozenset(self.lc.stages or [])
        self.local = LocalLauncher(cfg, log)  # screening, and any stage not in launcher.stages

    # ----------------------------------------------------------------- records
    def _jobs(self, at) -> list[dict]:
        return read_json(at.slurm_jobs) if at.slurm_jobs.exists() else []

    def _save(self, at, jobs: list[dict]) -> None:
        atomic_write_json(at.slurm_jobs, jobs)

    def _event(self, at, job: dict, event: str) -> None:
        lineage.append(self.run_dir, {"event": event, "generation": at.generation, "attempt": at.attempt,
                                      "stage": kind_of(job), "kind": kind_of(job),
                                      **{k: job.get(k) for k in ("job_id", "name", "state",
                                                                 "exit_code", "restarts", "log")},
                                      "time": _now()})

    # ----------------------------------------------------------------- one job
    def submit(self, at, kind: str, name: str, jobs: list[dict]) -> dict:
        extra = {}
        if kind == "train":
            script = render(self.lc, self.tc, at, name, self.wall_clock_s)
            extra["time_limit"], extra["time_from"] = train_time(self.lc, self.wall_clock_s)
            at.train_error.unlink(missing_ok=True)  # a new job: an old failure no longer speaks for it
        else:
            script = render_stage(self.lc, kind, at, name)
            extra["time_limit"] = stage_resources(self.lc, kind)["time"]
            extra["time_from"] = f"launcher.{kind}.time" if getattr(self.lc, kind).time else "launcher.time"
            at.stage_error(kind).unlink(missing_ok=True)
        atomic_write_text(at.sbatch(kind), script)
        p = _sh(["sbatch", "--parsable", str(at.sbatch(kind))])
        if p.returncode != 0:
            raise SlurmError(f"sbatch refused the {LABEL[kind]} job of {at.dir}: "
                             f"{p.stderr.strip() or p.stdout.strip()}")
        job_id = p.stdout.strip().split(";")[0]
        return self._adopt(at, kind, name, job_id, jobs, how="submitted", **extra)

    def _adopt(self, at, kind: str, name: str, job_id: str, jobs: list[dict], how: str, **extra) -> dict:
        job = {"job_id": job_id, "kind": kind, "name": name, "submitted": _now(), "how": how, "state": "PENDING",
               "log": str(at.slurm_log(kind, job_id)), **extra}
        jobs.append(job)
        self._save(at, jobs)  # recorded before anything else can go wrong
        self._event(at, job, "job_submitted")
        self.log(f"{at.dir.name}: {LABEL[kind]} job {job_id} {how} ({name}); log {job['log']}")
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

    # ----------------------------------------------------------------- a stage
    def run(self, at, stage: str) -> int:
        """Run `stage` (propose, train, evaluate) of attempt `at` on the cluster. Returns 0
        when the job wrote the stage's output, or protocol.EXIT_PLAN_FAILED when the stage
        itself failed (training: the plan, its recipe or its wall clock; proposal,
        evaluation: ATTEMPT_DIR/<stage>_error.json says why), as the local launcher would;
        raises SlurmError when the cluster failed it and no retry is left."""
        if stage not in self.job_stages:
            return self.local.run(at, stage)
        kind = stage
        name = job_name(self.run_dir, at.generation, at.attempt, kind)
        jobs = self._jobs(at)
        retries = self.lc.max_retries
        retry_states = set(self.lc.retry_states or [])
        submitted_now = 0  # this invocation's submissions: the first plus at most `retries` more
        while True:
            mine = [j for j in jobs if kind_of(j) == kind]
            job = mine[-1] if mine else None
            if job is not None and job.get("ended") is None:
                self.log(f"{at.dir.name}: reattaching to job {job['job_id']} ({job['state']})")
                job = self.wait(at, job, jobs)
            elif job is None or not (job["state"] == "COMPLETED" or self._final(at, job)):
                if submitted_now > retries:
                    raise SlurmError(self._failure(kind, job, f"after {submitted_now} submissions "
                                                              f"(launcher.max_retries {retries})"))
                known = {x["job_id"] for x in jobs}
                queued = [j for j in queued_by_name(name) if j not in known]
                if queued:  # submitted by a run that died before it could record the id
                    job = self._adopt(at, kind, name, queued[0], jobs, how="adopted from the queue")
                else:
                    job = self.submit(at, kind, name, jobs)
                submitted_now += 1
                job = self.wait(at, job, jobs)
            if job["state"] == "COMPLETED":
                if wrote_output(at, kind):
                    return protocol.EXIT_OK
                raise SlurmError(f"{LABEL[kind]} job {job['job_id']} COMPLETED but wrote no {OUTPUT[kind]} "
                                 f"in {at.dir}; see {job['log']}")
            if self._over_budget(job):
                self._record_over_budget(at, job, jobs)
                return protocol.EXIT_PLAN_FAILED
            if self._final(at, job):
                if kind == "train":
                    self._name_job_in_error(at, job)
                return protocol.EXIT_PLAN_FAILED  # the stage's own failure: the attempt's, or the lineage's
            if job["state"].split()[0] not in retry_states:
                raise SlurmError(self._failure(kind, job, "not retried (state not in launcher.retry_states)"))
            self.log(f"{at.dir.name}: job {job['job_id']} ended {job['state']}; resubmitting"
                     + (" (training resumes from its last checkpoint)" if kind == "train" else ""))

    def _final(self, at, job: dict) -> bool:
        """The job ended for a reason a resubmission would not change."""
        if job.get("over_budget") or self._over_budget(job):
            return True
        kind = kind_of(job)
        error = at.train_error if kind == "train" else at.stage_error(kind)
        return job.get("exit_code") == protocol.EXIT_PLAN_FAILED and error.exists()

    def _over_budget(self, job: dict) -> bool:
        """A training job Slurm ended at a --time that budget.wall_clock_s set: the trainer's
        own cap should have stopped it first (it was slower to start or to finish a step than
        the margin allows); either way the plan ran past its budget, and a retry would too."""
        return (kind_of(job) == "train" and str(job.get("state", "")).split()[0] == "TIMEOUT"
                and job.get("time_from") == "budget.wall_clock_s")

    def _record_over_budget(self, at, job: dict, jobs: list[dict]) -> None:
        job["over_budget"] = True
        self._save(at, jobs)
        why = (f"OverBudget: over budget: training job {job['job_id']} ended TIMEOUT at its time limit "
               f"{job.get('time_limit')} (budget.wall_clock_s={self.wall_clock_s:g} + the signal's lead "
               f"{signal_lead(self.lc.signal)} s + launcher.time_margin_s={self.lc.time_margin_s:g}, rounded up to "
               f"a minute) before the trainer's own cap stopped it; not retried; log {job['log']}")
        atomic_write_json(at.train_error, {"error": why, "job_id": job["job_id"]})
        self.log(f"{at.dir.name}: {why}")

    @staticmethod
    def _name_job_in_error(at, job: dict) -> None:
        """Add the job id and its log to the trainer's one-line account (once)."""
        err = read_json(at.train_error)
        if isinstance(err, dict) and err.get("job_id") is None and isinstance(err.get("error"), str):
            err.update(error=f"{err['error']} (Slurm job {job['job_id']}, log {job['log']})", job_id=job["job_id"])
            atomic_write_json(at.train_error, err)

    @staticmethod
    def _failure(kind: str, job: dict | None, why: str) -> str:
        if job is None:
            return f"no {LABEL[kind]} job could be run {why}"
        again = ("training resumes from its last checkpoint" if kind == "train"
                 else f"the {LABEL[kind]} runs again from its start")
        return (f"{LABEL[kind]} job {job['job_id']} ended {job['state']} (exit code {job.get('exit_code')}), {why}; "
                f"log: {job['log']}. Run the same command again to resubmit: {again}")


OUTPUT = {"propose": "proposal.json", "train": "model", "evaluate": "eval.json"}


def kind_of(job: dict) -> str:
    """A job record's kind (records written before stage jobs existed are training jobs)."""
    return job.get("kind") or "train"


def wrote_output(at, kind: str) -> bool:
    if kind == "train":
        return (at.model / "config.json").exists()
    return at.done(kind)
