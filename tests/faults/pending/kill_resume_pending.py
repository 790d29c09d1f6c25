"""Fault injection: SIGKILL the orchestrator (`recursive run`, with its training child: the
whole process group, as when a node or job dies) at stage boundaries and in the middle of
stages, re-run the same command, and check the lineage a user would look at.

One uninterrupted reference run and one interrupted chain run side by side: the chain is
killed at each point in KILL_POINTS in turn (the point is the first moment a given file
exists in the run directory), re-run, killed at the next point, ..., then run to the end.
Lineage: generation 0 + 1 proposed generation, 1 attempt, no screening (the smallest run
that has every stage: propose, train, evaluate, gate, record).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

OVERRIDES = ["experiment=smoke", "lineage.generations=1", "lineage.max_attempts=1", "logger=none",
             "proposer.candidates=2", "proposer.screen_steps=0", "evaluate.proposer_samples=1",
             "hparams.steps=60"]
G0 = "generations/gen_000/attempt_01"
G1 = "generations/gen_001/attempt_01"
# (name, file whose appearance triggers the kill, extra delay in s to land inside the stage)
KILL_POINTS = [
    ("data preparation", "data/tokenizer", 0.0),
    ("gen 0 training, mid-stage", f"{G0}/train.log", 3.0),
    ("gen 0 train->evaluate boundary", f"{G0}/train_metrics.json", 0.0),
    ("gen 0 evaluation, mid-stage", f"{G0}/train_metrics.json", 4.0),
    ("gen 0 gate->record boundary", f"{G0}/gate.json", 0.0),
    ("gen 1 proposal, mid-stage", f"{G1}/proposal/prompt.txt", 1.0),
    ("gen 1 propose->train boundary", f"{G1}/plan.json", 0.0),
    ("gen 1 training, mid-stage", f"{G1}/train.log", 3.0),
    ("gen 1 evaluation, mid-stage", f"{G1}/train_metrics.json", 3.0),
    ("gen 1 gate->record boundary", f"{G1}/gate.json", 0.0),
]
TIMEOUT = 1800  # per command; a loaded 2-core machine ran the reference in 25 min


def start(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "recursive.cli", "run", *OVERRIDES, f"run_dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(os.environ, WANDB_MODE="offline"))


def run_to_end(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recursive.cli", "run", *OVERRIDES, f"run_dir={run_dir}"],
                          capture_output=True, text=True, timeout=TIMEOUT, env=dict(os.environ, WANDB_MODE="offline"))


def kill_when(proc: subprocess.Popen, path: Path, delay: float) -> bool:
    """SIGKILL proc's process group once `path` exists (+ delay). False: the run ended first."""
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    if delay:
        time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def show(run_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "recursive.cli", "lineage", "show", str(run_dir), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


WALL_CLOCK = ("seconds", "tokens_per_s", "tokens_per_s_steady")  # metrics.train fields that time the run


def comparable(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in ("timings", "time")}
    train = dict((out.get("metrics") or {}).get("train") or {})
    if train:
        out["metrics"] = dict(out["metrics"], train={k: v for k, v in train.items() if k not in WALL_CLOCK})
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    ref_dir, chain_dir = root / "reference", root / "chain"
    ref: dict = {}
    t = threading.Thread(target=lambda: ref.update(proc=run_to_end(ref_dir)))
    t.start()
    survived, log = [], []
    for name, rel, delay in KILL_POINTS:
        proc = start(chain_dir)
        hit = kill_when(proc, chain_dir / rel, delay)
        if not hit:
            out = proc.communicate(timeout=TIMEOUT)[0]
            log.append(f"{name}: run ended before the kill point (rc {proc.returncode})\n{out[-2000:]}")
            continue
        survived.append(name)
    final = run_to_end(chain_dir)
    t.join()
    return {"ref_dir": ref_dir, "chain_dir": chain_dir, "ref": ref["proc"], "final": final,
            "killed": survived, "log": log}


def test_reference_run_completes(runs):
    assert runs["ref"].returncode == 0, runs["ref"].stdout[-3000:] + runs["ref"].stderr[-3000:]


def test_every_kill_point_was_hit(runs):
    assert runs["killed"] == [k[0] for k in KILL_POINTS], "\n".join(runs["log"])


def test_rerun_after_kills_completes(runs):
    assert runs["final"].returncode == 0, runs["final"].stdout[-3000:] + runs["final"].stderr[-3000:]
    assert json.loads(runs["final"].stdout.strip().splitlines()[-1])["status"] == "complete"


def test_no_lost_and_no_duplicated_records(runs):
    lines = (runs["chain_dir"] / "lineage.jsonl").read_text().splitlines()
    events = [json.loads(ln) for ln in lines]  # no torn line either
    keys = [(e["generation"], e["attempt"]) for e in events if e["event"] == "attempt"]
    assert keys == [(0, 1), (1, 1)]
    assert [e for e in events if e["event"] != "attempt"] == []


def test_same_lineage_as_the_uninterrupted_run(runs):
    ref, chain = show(runs["ref_dir"]), show(runs["chain_dir"])
    assert [comparable(g) for g in chain["generations"]] == [comparable(g) for g in ref["generations"]]
    assert chain["stopped"] is None and ref["stopped"] is None


def test_same_models_and_plans_as_the_uninterrupted_run(runs):
    def raw(d):
        return [json.loads(ln) for ln in (d / "lineage.jsonl").read_text().splitlines()]
    ref, chain = raw(runs["ref_dir"]), raw(runs["chain_dir"])
    assert [e["model_sha256"] for e in chain] == [e["model_sha256"] for e in ref]
    assert [comparable(e)["metrics"] for e in chain] == [comparable(e)["metrics"] for e in ref]
    for g in (G0, G1):
        assert (runs["chain_dir"] / g / "plan.json").read_text() == (runs["ref_dir"] / g / "plan.json").read_text()


def test_recorded_models_match_their_hashes(runs):
    from recursive.io import sha256_tree
    for e in (json.loads(ln) for ln in (runs["chain_dir"] / "lineage.jsonl").read_text().splitlines()):
        assert sha256_tree(runs["chain_dir"] / e["model_path"]) == e["model_sha256"]
        assert not (runs["chain_dir"] / e["model_path"]).with_name("model.tmp").exists()
