"""launcher=slurm against a real Slurm (slurmctld + slurmd + munge on loopback; .ci/run starts
it with slurm/local/start.sh and stops it afterwards).

Without a cluster these tests skip, unless RECURSIVE_REQUIRE_SLURM=1 (set by .ci/run), where
a missing cluster fails them."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recursive.attempt import Attempt
from recursive.config import ConfigError, compose_config, compose_typed
from recursive.launch.slurm import SlurmError, job_name, render

G0 = "generations/gen_000/attempt_01"
# generation 0 only, long enough to be caught mid-training (the tests act at step 10 or 40);
# 2 ranks fill the 2-CPU node. The smoke lineage over Slurm (every generation a two-rank
# job) is tests/slurm/test_two_nodes.py's, over two nodes.
GEN0_STEPS = 200
# Generation 0's evaluation (in the orchestrator, after the job) is what these tests wait
# through, not what they check: the eval suite at its smallest (14 s -> about 5)
GEN0 = ["experiment=smoke", "lineage.generations=0", "logger=none", "launcher=slurm", "train=ddp",
        "launcher.poll_s=0.5", f"hparams.steps={GEN0_STEPS}", "evaluate.proposer_samples=1",
        "evaluate.eval_windows_per_domain=4", "evaluate.arithmetic_problems=4", "evaluate.refusal_items=4",
        "evaluate.canary_candidates=15", "evaluate.collapse_samples=1", "evaluate.collapse_tokens=4"]


# ------------------------------------------------------------------ no cluster needed
def test_job_script_carries_every_resource(tmp_path):
    cfg = compose_typed(["launcher=slurm", "train=ddp", "launcher.partition=gpu", "launcher.account=proj",
                          "launcher.qos=high", "launcher.time=02:30:00", "launcher.nodes=2",
                          "launcher.ntasks_per_node=1", "launcher.gpus_per_node=1", "launcher.cpus_per_task=8",
                          "launcher.mem=64G", "launcher.signal=USR1@120", "+launcher.env.NCCL_DEBUG=WARN",
                          "launcher.extra_sbatch=[--exclusive]"])[0]
    at = Attempt(tmp_path / "a dir", 1, 1)
    script = render(cfg.launcher, cfg.train, at, "rec-x-g001a01-train")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --qos=high",
                 "#SBATCH --time=02:30:00", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64G",
                 "#SBATCH --signal=USR1@120", "#SBATCH --requeue", "#SBATCH --exclusive",
                 "#SBATCH --job-name=rec-x-g001a01-train", "export NCCL_DEBUG=WARN"):
        assert line in script.splitlines(), line
    assert f"-m recursive.train '{at.dir}'" in script  # quoted: paths with spaces
    assert "$SLURM_JOB_ID" in script and "$$" not in script


def test_job_script_defaults_leave_out_unset_resources(tmp_path):
    cfg = compose_typed(["launcher=slurm", "train=ddp"])[0]
    script = render(cfg.launcher, cfg.train, Attempt(tmp_path, 1, 1), "n")
    assert "--partition" not in script and "--account" not in script and "--gpus-per-node" not in script
    assert "#SBATCH --ntasks-per-node=2" in script.splitlines()  # train.num_processes over 1 node


@pytest.mark.parametrize("override, key", [
    ("launcher.nodes=0", "launcher.nodes"),
    ("launcher.max_retries=-1", "launcher.max_retries"),
    ("launcher.time=null", "launcher.time"),
    ("launcher.ntasks_per_node=3", "train.num_processes"),
    ("launcher.retry_states=FAILED", "launcher.retry_states"),
])
def test_bad_launcher_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        compose_config(["launcher=slurm", "train=ddp", override])


def test_unknown_template_placeholder_is_a_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "train.sbatch"
    bad.write_text("#!/bin/bash\n#SBATCH --time=$tiem\n")
    monkeypatch.setattr("recursive.launch.slurm.template_path", lambda: bad)
    cfg = compose_typed(["launcher=slurm", "train=ddp"])[0]
    with pytest.raises(SlurmError, match="tiem"):
        render(cfg.launcher, cfg.train, Attempt(tmp_path, 1, 1), "n")


@pytest.mark.parametrize("overrides, limit", [
    (["budget.wall_clock_s=900"], "00:19:00"),   # 900 + lead 90 + margin 120 = 1110 s -> 19 min
    (["budget.wall_clock_s=0.5"], "00:04:00"),   # 210.5 s, rounded up to whole minutes
    (["budget.wall_clock_s=60", "launcher.signal=USR1@30", "launcher.time_margin_s=0"], "00:02:00"),
    (["budget.wall_clock_s=900", "launcher.time=00:10:00"], "00:10:00"),  # the smaller wins
    (["budget.wall_clock_s=900", "launcher.time=2-00"], "00:19:00"),      # D-HH is two days
    (["budget.wall_clock_s=null", "launcher.time=03:00:00"], "03:00:00"),  # no cap: launcher.time
])
def test_training_time_limit_follows_the_wall_clock_budget(tmp_path, overrides, limit):
    from recursive.launch.slurm import train_time
    cfg = compose_typed(["launcher=slurm", *overrides])[0]
    script = render(cfg.launcher, cfg.train, Attempt(tmp_path, 1, 1), "n", cfg.budget.wall_clock_s)
    assert f"#SBATCH --time={limit}" in script.splitlines()
    from_budget = train_time(cfg.launcher, cfg.budget.wall_clock_s)[1] == "budget.wall_clock_s"
    assert from_budget == (limit not in ("00:10:00", "03:00:00"))


@pytest.mark.parametrize("override, key", [
    ("launcher.stages=[propose,deploy]", "launcher.stages"),
    ("launcher.stages=[]", "launcher.stages"),
    ("launcher.stages=train", "launcher.stages"),
    ("launcher.propose.cpus=0", "launcher.propose.cpus"),
    ("launcher.evaluate.gpus=-1", "launcher.evaluate.gpus"),
    ("launcher.evaluate.time=soon", "launcher.evaluate.time"),
    ("launcher.time=1:2:3:4", "launcher.time"),
    ("launcher.time_margin_s=-1", "launcher.time_margin_s"),
])
def test_bad_stage_or_time_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)) as e:
        compose_config(["launcher=slurm", override])
    assert "\n" not in str(e.value)
    if key == "launcher.stages" and "=[" in override:
        assert "propose, train, evaluate" in str(e.value)


def test_stage_job_script_carries_its_own_resources(tmp_path):
    from recursive.launch.slurm import render_stage
    cfg = compose_typed(["launcher=slurm", "launcher.stages=[propose,train,evaluate]", "launcher.partition=gpu",
                          "launcher.gpus_per_node=8", "launcher.cpus_per_task=12", "launcher.mem=256G",
                          "launcher.propose.cpus=4", "launcher.propose.mem=32G", "launcher.propose.time=00:30:00",
                          "launcher.evaluate.gpus=2"])[0]
    at = Attempt(tmp_path / "a dir", 2, 1)
    propose = render_stage(cfg.launcher, "propose", at, "rec-x-g002a01-propose").splitlines()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --mem=32G", "#SBATCH --time=00:30:00", "#SBATCH --ntasks=1",
                 "#SBATCH --job-name=rec-x-g002a01-propose"):
        assert line in propose, line
    assert f"-m recursive.stage_job propose '{at.dir}'" in "\n".join(propose)
    assert "export OMP_NUM_THREADS=4 TOKENIZERS_PARALLELISM=false" in propose
    assert not any(ln.startswith("#SBATCH --signal") for ln in propose)  # nothing to checkpoint
    evaluate = render_stage(cfg.launcher, "evaluate", at, "n").splitlines()
    for line in ("#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=12", "#SBATCH --mem=256G",
                 "#SBATCH --time=01:00:00"):  # unset keys: the shared launcher values
        assert line in evaluate, line
    assert str(at.slurm_log("evaluate", "%j")) in "\n".join(evaluate)


def test_a_training_timeout_under_the_wall_clock_is_over_budget_and_final(tmp_path):
    """The decision SlurmLauncher.run takes on a job record Slurm ended TIMEOUT (the real
    TIMEOUT needs a job that outlives its --time, minutes here; tests/slurm/test_wall_clock_slurm.py
    runs the trainer's cap, which normally fires first, on the cluster)."""
    from recursive.launch.slurm import SlurmLauncher
    from recursive.train import protocol
    cfg = compose_typed(["launcher=slurm", "budget.wall_clock_s=60", f"run_dir={tmp_path}"])[0]
    launcher = SlurmLauncher(cfg, log=lambda m: None)
    at = Attempt(tmp_path, 1, 1)
    at.dir.mkdir(parents=True)
    job = {"job_id": "41", "kind": "train", "state": "TIMEOUT", "exit_code": 0, "time_limit": "00:05:00",
           "time_from": "budget.wall_clock_s", "log": str(at.slurm_log("train", "41"))}
    assert launcher._over_budget(job) and launcher._final(at, job)
    for other in ({"time_from": "launcher.time"}, {"state": "FAILED"}, {"kind": "evaluate"}):
        assert not launcher._over_budget({**job, **other})  # a segment's limit, a crash: retried
    jobs = [job]
    launcher._record_over_budget(at, job, jobs)
    out = protocol.read_outcome(at.dir, protocol.EXIT_PLAN_FAILED)
    assert out.kind == "plan_failed" and out.error.startswith("OverBudget: over budget: training job 41 ended TIMEOUT")
    assert "budget.wall_clock_s=60" in out.error and "not retried" in out.error
    assert json.loads(at.slurm_jobs.read_text())[0]["over_budget"] is True


# ------------------------------------------------------------------ a real cluster
@pytest.fixture(scope="module")
def cluster():
    ok = shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    if not ok:
        if os.environ.get("RECURSIVE_REQUIRE_SLURM") == "1":
            pytest.fail("RECURSIVE_REQUIRE_SLURM=1 but no Slurm answers; start one: bash slurm/local/start.sh")
        pytest.skip("no Slurm cluster (bash slurm/local/start.sh starts a one-node one)")
    yield
    # leave no job of these tests behind (only ours: job names start with rec-)
    listed = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout.splitlines()
    mine = [ln.split()[0] for ln in listed if len(ln.split()) == 2 and ln.split()[1].startswith("rec-")]
    if mine:
        subprocess.run(["scancel", *mine], capture_output=True)


def cli(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recursive.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recursive.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def jobs(d: Path) -> list[dict]:
    p = d / "slurm_jobs.json"
    return json.loads(p.read_text()) if p.exists() else []


def slurm_job(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", out))


def trained_steps(d: Path) -> int:
    steps = [json.loads(ln)["step"] for f in d.glob("slurm-train-*.out")
             for ln in f.read_text(errors="replace").splitlines() if ln.startswith('{"step"')]
    return max(steps, default=-1)


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the orchestrator exited ({proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def resumed_steps(d: Path) -> list[int]:
    return [json.loads(ln)["step"] for f in sorted(d.glob("slurm-train-*.out"))
            for ln in f.read_text(errors="replace").splitlines() if ln.startswith('{"resumed_from"')]


def job_events(run_dir: Path) -> list[tuple[str, str, str]]:
    return [(e["event"], e["job_id"], e["state"]) for e in map(json.loads, (run_dir / "lineage.jsonl").read_text().splitlines())
            if e["event"].startswith("job_")]


@pytest.mark.slow
def test_scancel_is_recorded_and_a_rerun_resumes_from_the_checkpoint(cluster, tmp_path):
    run_dir = tmp_path / "cancel"
    d = run_dir / G0
    proc = start("run", *GEN0, f"run_dir={run_dir}")
    wait_for(lambda: trained_steps(d) >= 40, 600, "training to pass step 40", proc)
    first = jobs(d)[0]["job_id"]
    subprocess.run(["scancel", first], check=True)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1
    assert f"training job {first} ended CANCELLED" in out and "Run the same command again" in out
    assert "Traceback" not in out
    assert ("job_ended", first, "CANCELLED") in job_events(run_dir)
    stopped_at = json.loads((d / "train_requeue.json").read_text())["step"]
    assert stopped_at >= 40

    again = cli("run", *GEN0, f"run_dir={run_dir}")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    ids = [j["job_id"] for j in jobs(d)]
    assert len(ids) == 2 and ids[0] == first and jobs(d)[1]["state"] == "COMPLETED"
    assert resumed_steps(d) == [stopped_at]  # the new job picked up the checkpoint


@pytest.mark.slow
def test_killed_orchestrator_reattaches_without_a_duplicate_job(cluster, tmp_path):
    run_dir = tmp_path / "reattach"
    d = run_dir / G0
    proc = start("run", *GEN0, f"run_dir={run_dir}")
    wait_for(lambda: trained_steps(d) >= 10, 600, "the training job to run", proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator and anything it started; the job lives on
    proc.wait()
    job = jobs(d)[0]["job_id"]
    assert slurm_job(job)["JobState"] in ("RUNNING", "COMPLETING", "COMPLETED")
    again = cli("run", *GEN0, f"run_dir={run_dir}")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"reattaching to job {job}" in again.stdout
    assert [j["job_id"] for j in jobs(d)] == [job]
    name = job_name(run_dir, 0, 1)
    in_slurm = subprocess.run(["squeue", "-h", "-t", "all", "--name", name, "-o", "%i"],
                              capture_output=True, text=True).stdout.split()
    assert in_slurm == [job]
    assert [e for e in job_events(run_dir) if e[0] == "job_submitted"] == [("job_submitted", job, "PENDING")]


@pytest.mark.slow
def test_job_submitted_but_not_recorded_is_adopted_not_duplicated(cluster, tmp_path):
    """The orchestrator dies between sbatch returning and the record reaching the disk."""
    run_dir = tmp_path / "adopt"
    d = run_dir / G0
    proc = start("run", *GEN0, f"run_dir={run_dir}")
    wait_for(lambda: bool(jobs(d)), 600, "a job to be submitted", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    job = jobs(d)[0]["job_id"]
    (d / "slurm_jobs.json").unlink()  # as if the kill had come a moment earlier
    again = cli("run", *GEN0, f"run_dir={run_dir}")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"training job {job} adopted from the queue" in again.stdout
    assert [j["job_id"] for j in jobs(d)] == [job]


@pytest.mark.slow
def test_preemption_signal_checkpoints_and_requeues_the_same_job(cluster, tmp_path):
    run_dir = tmp_path / "preempt"
    d = run_dir / G0
    proc = start("run", *GEN0, f"run_dir={run_dir}")
    wait_for(lambda: trained_steps(d) >= 40, 600, "training to pass step 40", proc)
    job = jobs(d)[0]["job_id"]
    # what --signal=USR1@T does before the time limit (and a preempting scheduler with it):
    # USR1 to the job's tasks
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    wait_for(lambda: slurm_job(job).get("Restarts") == "1", 120, "the job to requeue itself", proc)
    # Slurm holds a requeued job for the credential lifetime (AuthInfo cred_expire: 120 s by
    # default, 10 s in slurm/local/start.sh) before it starts it again
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    assert [j["job_id"] for j in jobs(d)] == [job]
    assert jobs(d)[0]["restarts"] == 1 and jobs(d)[0]["state"] == "COMPLETED"
    steps = resumed_steps(d)
    assert len(steps) == 1 and 40 <= steps[0] < GEN0_STEPS
    assert "preempted (rc 75): scontrol requeue" in next(d.glob("slurm-train-*.out")).read_text()
