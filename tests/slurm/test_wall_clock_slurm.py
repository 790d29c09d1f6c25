"""budget.wall_clock_s under launcher=slurm: the training job's --time comes from it, the
trainer's own cap stops the job first (checkpoint, exit 2), and the attempt fails with the
reason and the job id after exactly one job: an over-budget plan is never resubmitted.
(Slurm's TIMEOUT, the backstop when the cap does not fire, is decided by the same code;
tests/slurm/test_slurm_launcher.py checks that decision without a cluster.)"""

from __future__ import annotations

import json
import subprocess

import pytest

from recursive.launch.slurm import job_name

from .test_slurm_launcher import G0, cli, jobs, slurm_job
from .test_stage_jobs import ours  # noqa: F401  (the cluster; cancels only this module's jobs)

# 280 steps take far more than half a second; 0.5 + the signal's lead 90 + margin 120 s = 4 min
OVER = ["experiment=smoke", "lineage.generations=0", "logger=none", "launcher=slurm", "launcher.poll_s=0.5",
        "hparams.steps=280", "budget.wall_clock_s=0.5"]


@pytest.mark.slow
def test_a_plan_over_its_wall_clock_fails_after_one_job_with_a_checkpoint(ours, tmp_path):  # noqa: F811
    run_dir = tmp_path / "over"
    ours.append(run_dir)
    d = run_dir / G0
    p = cli("run", *OVER, f"run_dir={run_dir}")
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr, p.stdout[-3000:] + p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["status"] == "stopped" and "over budget" in result["reason"], result
    [job] = jobs(d)
    assert job["kind"] == "train" and job["time_from"] == "budget.wall_clock_s" and job["time_limit"] == "00:04:00"
    assert "#SBATCH --time=00:04:00" in (d / "train.sbatch").read_text().splitlines()
    # the trainer's cap fired (exit 2, its account in train_error.json), not Slurm's limit
    assert job["state"] == "FAILED" and job["exit_code"] == 2
    seen = slurm_job(job["job_id"])
    assert seen["JobState"] == "FAILED" and seen["ExitCode"] == "2:0", seen
    [event] = [e for e in map(json.loads, (run_dir / "lineage.jsonl").read_text().splitlines())
               if e["event"] == "attempt"]
    assert event["status"] == "failed" and "over budget" in event["reason"]
    assert "budget.wall_clock_s=0.5" in event["reason"] and f"Slurm job {job['job_id']}" in event["reason"]
    steps = [int(c.name.split("_")[1]) for c in (d / "checkpoints").glob("step_*")]
    assert steps and 0 < max(steps) < 280  # stopped part-way, its state kept
    assert not (d / "model" / "config.json").exists()

    # the same command again: the attempt is decided; nothing is resubmitted
    again = cli("run", *OVER, f"run_dir={run_dir}")
    assert again.returncode == 1 and "over budget" in json.loads(again.stdout.strip().splitlines()[-1])["reason"]
    assert [j["job_id"] for j in jobs(d)] == [job["job_id"]]
    in_slurm = subprocess.run(["squeue", "-h", "-t", "all", "--name", job_name(run_dir, 0, 1), "-o", "%i"],
                              capture_output=True, text=True).stdout.split()
    assert in_slurm == [job["job_id"]]
