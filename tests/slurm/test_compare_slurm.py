"""`recursive experiment compare` with launcher=slurm (issue 15, "lineages as jobs for
sweeps"): one orchestrator job per lineage (slurm/lineage.sbatch), side by side, each
submitting its own training jobs, against the real cluster .ci/run starts.

Without a cluster the cluster test skips, unless RECURSIVE_REQUIRE_SLURM=1 (set by .ci/run),
where a missing one fails it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime

import pytest

from recursive import compare
from recursive.config import ConfigError, compose_typed

from .test_slurm_launcher import cluster, jobs, slurm_job  # noqa: F401  (cluster: the fixture)

# tests/test_compare.py's lineage at its cheapest: generation 0 and one child
CHEAP = ["experiment=smoke", "logger=none", "lineage.generations=1", "lineage.max_attempts=1",
         "proposer.candidates=2", "proposer.screen_steps=0", "proposer.control_candidates=false",
         "evaluate.proposer_samples=1", "evaluate.eval_windows_per_domain=4", "evaluate.arithmetic_problems=4",
         "evaluate.refusal_items=4", "evaluate.canary_candidates=15", "evaluate.collapse_samples=1",
         "evaluate.collapse_tokens=4", "hparams.steps=10", "budget.min_train_tokens=0", "train.threads=1"]
# one CPU an orchestrator: two side by side and their two training jobs fill the 2 x 2 CPUs
ON_SLURM = ["launcher=slurm", "launcher.poll_s=0.5", "launcher.lineage.cpus=1"]


def test_orchestrator_job_asks_for_the_lineage_resources_and_this_interpreter(tmp_path):
    exp = compare.Experiment(tmp_path / "out", ["random"], [3], [*CHEAP, *ON_SLURM, "launcher.lineage.cpus=2",
                                                                  "launcher.lineage.mem=3G", "launcher.partition=p",
                                                                  "launcher.lineage.time=02:00:00"])
    (lin,) = exp.lineages
    cmd = compare.sbatch_command(exp, lin, ["lineage.generations=0"])
    template = cmd.index(str(compare.lineage_template()))
    opts, args = cmd[:template], cmd[template + 1:]
    assert compare.lineage_template().is_file()
    assert {"--cpus-per-task=2", "--mem=3G", "--partition=p", "--time=02:00:00",
            f"--export=ALL,RECURSIVE_PYTHON={sys.executable}"} <= set(opts)
    assert not any(o.startswith("--gpus") for o in opts)  # a CPU cluster: no GPU for the orchestrator
    assert "proposer=random" in args and "lineage.seed=3" in args and args[-1] == "lineage.generations=0"
    default = compare.Experiment(tmp_path / "o2", ["random"], [3], [*CHEAP, "launcher=slurm"])
    opts = compare.sbatch_command(default, default.lineages[0], [])
    assert "--cpus-per-task=1" in opts and not any(o.startswith("--time") for o in opts)  # the template's 3 days


@pytest.mark.parametrize("override, key", [("launcher.lineage.cpus=0", "launcher.lineage.cpus"),
                                           ("launcher.lineage.time=soon", "launcher.lineage.time")])
def test_bad_lineage_resources_name_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        compose_typed(["launcher=slurm", override])


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.slow
def test_compare_runs_each_lineage_as_an_orchestrator_job_side_by_side(cluster, tmp_path):  # noqa: F811
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "recursive.cli", "experiment", "compare", "--proposers", "random,fixed",
           "--seeds", "1", "--out", str(out), *CHEAP, *ON_SLURM]
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert {(lin["proposer"], lin["status"]) for lin in report["lineages"]} <= {
        (q, s) for q in ("random", "fixed") for s in ("complete", "stopped")}
    assert all(v is not None for lin in report["lineages"] for v in lin["loss"])
    # generation 0 of seed 0 in random's orchestrator job, then one job per lineage
    logs = sorted(f.name for f in (out / "slurm").glob("*.out"))
    assert len(logs) == 3 and sum(n.startswith("random-seed_0-") for n in logs) == 2, logs
    recorded = json.loads((out / "jobs.json").read_text())
    assert set(recorded) == {"random/seed_0", "fixed/seed_0"}
    seen = {}
    for key, rec in recorded.items():
        assert rec["what"] == "lineage" and "--cpus-per-task=1" in rec["command"]
        seen[key] = slurm_job(rec["job_id"])
        assert seen[key]["JobState"] == "COMPLETED" and seen[key]["NumCPUs"] == "1", seen[key]
        assert f"{rec['job_id']}.out" in " ".join(logs)
    a, b = seen["random/seed_0"], seen["fixed/seed_0"]
    # side by side: each started before the other ended
    assert _when(a["StartTime"]) < _when(b["EndTime"]) and _when(b["StartTime"]) < _when(a["EndTime"]), (a, b)
    # inside its job each orchestrator submitted its lineage's training as jobs of their own
    for lin in report["lineages"]:
        trained = sorted((out / lin["proposer"] / "seed_0" / "generations").glob("gen_*/attempt_*/slurm_jobs.json"))
        assert trained, lin["proposer"]
        for f in trained:
            for job in jobs(f.parent):
                assert job["state"] == "COMPLETED" and job["job_id"] not in {r["job_id"] for r in recorded.values()}
    # a re-run finds every lineage finished: nothing is submitted
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "jobs.json").read_text()) == recorded
    assert len(list((out / "slurm").glob("*.out"))) == 3
