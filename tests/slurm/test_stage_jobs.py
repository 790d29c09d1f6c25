"""launcher.stages=[propose,train,evaluate] against a real Slurm: proposal and evaluation run
as batch jobs beside training, recorded, reattached and retried by the same code, and the
lineage they make is the one the orchestrator makes in-process.

One lineage on the cluster serves both tests (the cluster tests share a ~5-minute budget on
a 2-core machine): its orchestrator is killed while generation 1's proposal job runs, then
run again; the same config runs with launcher=local at the same time, for the comparison."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recursive.launch.slurm import job_name

from .test_slurm_launcher import cli, job_events, jobs, slurm_job, start, wait_for

# the smoke lineage, cheaper: fewer candidates, short screening and training, fewer eval items
SMOKE = ["experiment=smoke", "logger=none", "data.max_chars_per_source=200000", "proposer.candidates=2",
         "proposer.control_candidates=false", "proposer.screen_steps=10", "hparams.steps=30",
         "budget.min_train_tokens=15000", "budget.max_train_tokens=60000", "evaluate.eval_windows_per_domain=8",
         "evaluate.proposer_samples=1",
         "evaluate.arithmetic_problems=10", "evaluate.refusal_items=10", "evaluate.collapse_samples=2"]
# one CPU per stage job, and one intra-op thread in the local orchestrator below, so that both
# evaluate (and sample) with the same thread count: reductions over other splits round differently
STAGED = ["launcher=slurm", "launcher.stages=[propose,train,evaluate]", "launcher.poll_s=0.5",
          "launcher.propose.cpus=1", "launcher.evaluate.cpus=1"]
# measured, not decided: seconds and throughput differ from run to run, nothing else may
TIMING_KEYS = {"seconds", "tokens_per_s", "tokens_per_s_steady"}


@pytest.fixture(scope="module")
def ours():
    """A Slurm cluster, and the run directories of this module, whose jobs (and only theirs:
    other engineers' tests may share the cluster) are cancelled when the module ends."""
    ok = shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    if not ok:
        if os.environ.get("RECURSIVE_REQUIRE_SLURM") == "1":
            pytest.fail("RECURSIVE_REQUIRE_SLURM=1 but no Slurm answers; start one: bash slurm/local/start.sh")
        pytest.skip("no Slurm cluster (bash slurm/local/start.sh starts a one-node one)")
    run_dirs: list[Path] = []
    yield run_dirs
    prefixes = tuple(job_name(d, 0, 0).rsplit("-", 2)[0] + "-" for d in run_dirs)  # rec-<run hash>-
    listed = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout.splitlines()
    left = [ln.split()[0] for ln in listed if len(ln.split()) == 2 and ln.split()[1].startswith(prefixes)]
    if prefixes and left:
        subprocess.run(["scancel", *left], capture_output=True)


def attempt_dirs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "generations").glob("gen_*/attempt_*"))


def attempts(run_dir: Path) -> list[dict]:
    return [e for e in map(json.loads, (run_dir / "lineage.jsonl").read_text().splitlines()) if e["event"] == "attempt"]


def decided(metrics: dict) -> dict:
    """eval.json without its timings."""
    return {k: (decided(v) if isinstance(v, dict) else v) for k, v in metrics.items() if k not in TIMING_KEYS}


@pytest.fixture(scope="module")
def lineages(ours, tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    on_slurm, local = root / "slurm", root / "local"
    ours.append(on_slurm)
    in_process = subprocess.Popen([sys.executable, "-m", "recursive.cli", "run", *SMOKE, f"run_dir={local}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
    g1 = on_slurm / "generations" / "gen_001" / "attempt_01"
    proc = start("run", *SMOKE, *STAGED, f"run_dir={on_slurm}")

    def proposal_job_running() -> bool:
        job = next((j for j in jobs(g1) if j["kind"] == "propose"), None)
        return job is not None and slurm_job(job["job_id"]).get("JobState") == "RUNNING"

    wait_for(proposal_job_running, 900, "generation 1's proposal job to run", proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator; the job lives on in Slurm
    proc.wait()
    [killed_during] = [j["job_id"] for j in jobs(g1) if j["kind"] == "propose"]
    state_after_kill = slurm_job(killed_during)["JobState"]
    again = cli("run", *SMOKE, *STAGED, f"run_dir={on_slurm}", timeout=1200)
    out = in_process.communicate(timeout=1200)[0]
    assert in_process.returncode == 0, out[-3000:]
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    return {"slurm": on_slurm, "local": local, "again": again, "killed_during": killed_during,
            "state_after_kill": state_after_kill}


@pytest.mark.slow
def test_proposal_training_and_evaluation_run_as_jobs_and_make_the_local_lineage(lineages):
    on_slurm, local = lineages["slurm"], lineages["local"]
    assert json.loads(lineages["again"].stdout.strip().splitlines()[-1])["status"] == "complete"
    dirs = attempt_dirs(on_slurm)
    assert {d.parent.name for d in dirs} == {"gen_000", "gen_001", "gen_002"}
    recorded = {(e[1], e[2]) for e in job_events(on_slurm) if e[0] == "job_ended"}
    events = [json.loads(ln) for ln in (on_slurm / "lineage.jsonl").read_text().splitlines()]
    kinds_in_lineage = {e["job_id"]: e["kind"] for e in events if e["event"] == "job_submitted"}
    for d in dirs:
        records = jobs(d)
        # generation 0's proposal is the seed plan, checked in the orchestrator (no model to load)
        want = {"train", "evaluate"} if d.parent.name == "gen_000" else {"propose", "train", "evaluate"}
        assert {j["kind"] for j in records} == want, (d, records)
        for j in records:
            assert j["state"] == "COMPLETED" and (j["job_id"], "COMPLETED") in recorded, j
            assert kinds_in_lineage[j["job_id"]] == j["kind"]
            assert slurm_job(j["job_id"])["JobState"] == "COMPLETED"  # Slurm's own view
            assert (d / f"{j['kind']}.sbatch").exists() and Path(j["log"]).exists()
    # the same lineage as in-process: the same attempts, plans, verdicts and metrics
    assert [d.relative_to(on_slurm) for d in dirs] == [d.relative_to(local) for d in attempt_dirs(local)]
    for a, b in zip(attempts(on_slurm), attempts(local), strict=True):
        for k in ("generation", "attempt", "status", "params", "parent", "code_origin", "reason", "model_sha256"):
            assert a[k] == b[k], (k, a[k], b[k])
        assert a["gate"] == b["gate"]
    for d in dirs:
        twin = local / d.relative_to(on_slurm)
        assert (d / "plan.json").read_text() == (twin / "plan.json").read_text(), d
        ours, theirs = json.loads((d / "eval.json").read_text()), json.loads((twin / "eval.json").read_text())
        assert ours["heldout_loss"] == theirs["heldout_loss"], d
        assert decided(ours) == decided(theirs), d
    assert not list(local.glob("generations/*/*/slurm_jobs.json"))  # the twin really ran in-process


@pytest.mark.slow
def test_a_killed_orchestrator_reattaches_to_the_proposal_job_without_a_duplicate(lineages):
    on_slurm, job = lineages["slurm"], lineages["killed_during"]
    assert lineages["state_after_kill"] in ("RUNNING", "COMPLETING", "COMPLETED")
    assert f"reattaching to job {job}" in lineages["again"].stdout
    g1 = on_slurm / "generations" / "gen_001" / "attempt_01"
    assert [j["job_id"] for j in jobs(g1) if j["kind"] == "propose"] == [job]
    name = job_name(on_slurm, 1, 1, "propose")
    in_slurm = subprocess.run(["squeue", "-h", "-t", "all", "--name", name, "-o", "%i"],
                              capture_output=True, text=True).stdout.split()
    assert in_slurm == [job]
    submitted = [e for e in map(json.loads, (on_slurm / "lineage.jsonl").read_text().splitlines())
                 if e["event"] == "job_submitted" and e["kind"] == "propose" and e["generation"] == 1]
    assert [e["job_id"] for e in submitted] == [job]
    assert (g1 / "proposal.json").exists() and (g1 / "plan.json").exists()
