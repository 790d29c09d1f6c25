"""Fault injection: SIGKILL the orchestrator (`recursive run`, with its training child: the
whole process group, as when a node or job dies) at stage boundaries and in the middle of
stages, re-run the same command, and check the lineage a user would look at.

The uninterrupted reference run goes first (conftest.py; it is shared with
test_damaged_inputs.py), then the chain: killed at each point in KILL_POINTS in turn,
re-run, killed at the next point, ..., then run to the end. One after the other, not side by
side: two lineages on a 2-core machine double each other's time. Lineage: generation 0 + 1
proposed generation, 1 attempt, no screening (the smallest run that has every stage:
propose, train, evaluate, gate, record).

A kill point either watches the run directory from outside (mid-stage points: the kill lands
after a file appears, plus a share of the time the reference spent in that stage) or is a
failpoint: the orchestrator kills its own process group on entering a stage, the one way to
hit a boundary that lasts milliseconds every time. Either way the test checks afterwards that
the kill landed inside the stage it names.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from recursive.io import read_jsonl, sha256_tree

pytestmark = pytest.mark.slow

# smoke's evaluate sizes: the whole run takes about 30 s, training most of it (gen 1's
# plan, hence its training time, is the proposer's choice within the budget)
OVERRIDES = ["experiment=smoke", "lineage.generations=1", "lineage.max_attempts=1", "logger=none",
             "proposer.candidates=2", "proposer.screen_steps=0", "evaluate.proposer_samples=1",
             "hparams.steps=60", "train.threads=1"]
# One thread per process: with 2 OpenMP threads on 2 shared cores, a training stage ran 12x
# slower (127 s instead of 10 s) while another test suite ran; spinning threads wait for each other.
ENV = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
G0 = "generations/gen_000/attempt_01"
G1 = "generations/gen_001/attempt_01"
TIMEOUT = 600  # per command; the reference takes about 30 s on an idle 2-core machine
DELAY_SHARE = 0.4  # mid-stage kills wait this share of the reference's time in the stage


@dataclass(frozen=True)
class Check:
    what: str
    holds: Callable[[Path], bool]


def exists(rel: str) -> Check:
    return Check(rel, lambda rd: (rd / rel).exists())


def recorded(g: int) -> Check:
    return Check(f"gen {g}'s record in lineage.jsonl",
                 lambda rd: any(e.get("generation") == g for e in read_jsonl(rd / "lineage.jsonl")))


def stepped(rel: str) -> Check:
    """The trainer logged a step since the orchestrator last (re)started it."""
    def holds(rd: Path) -> bool:
        last = _lines(rd / rel)
        starts = [i for i, ln in enumerate(last) if ln.startswith("=== ")]
        return bool(starts) and any(ln.startswith('{"step"') for ln in last[starts[-1]:])
    return Check(f"a training step in {rel}", holds)


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


@dataclass(frozen=True)
class KillPoint:
    name: str
    reached: Check        # true when the kill lands (the trigger of a watched point)
    not_reached: Check    # still false when it lands: the kill is inside the named stage
    failpoint: tuple[str, int] | None = None  # (Lineage method, generation) whose entry kills the group
    delay: tuple[str, str] | None = None     # (stage, attempt dir): wait DELAY_SHARE of its reference time


KILL_POINTS = [
    KillPoint("data preparation, mid-stage", exists("data/tokenizer"), exists("data/manifest.json")),
    KillPoint("gen 0 training, mid-stage", stepped(f"{G0}/train.log"), exists(f"{G0}/train_metrics.json")),
    # the trainer has written model and metrics and is exiting; the orchestrator has not hashed the model
    KillPoint("gen 0 train->evaluate boundary", exists(f"{G0}/train_metrics.json"), exists(f"{G0}/model.sha256")),
    KillPoint("gen 0 evaluation, mid-stage", exists(f"{G0}/model.sha256"), exists(f"{G0}/eval.json"),
              delay=("evaluate", G0)),
    KillPoint("gen 0 gate->record boundary", exists(f"{G0}/gate.json"), recorded(0), failpoint=("record", 0)),
    KillPoint("gen 1 proposal, mid-stage", exists(f"{G1}/proposal/prompt.txt"), exists(f"{G1}/proposal.json"),
              delay=("propose", G1)),
    KillPoint("gen 1 propose->train boundary", exists(f"{G1}/plan.json"), exists(f"{G1}/train_spec.json"),
              failpoint=("train", 1)),
    KillPoint("gen 1 training, mid-stage", stepped(f"{G1}/train.log"), exists(f"{G1}/train_metrics.json")),
    KillPoint("gen 1 evaluation, mid-stage", exists(f"{G1}/model.sha256"), exists(f"{G1}/eval.json"),
              delay=("evaluate", G1)),
    KillPoint("gen 1 gate->record boundary", exists(f"{G1}/gate.json"), recorded(1), failpoint=("record", 1)),
]

# `recursive run` whose orchestrator SIGKILLs its own process group on entering stage METHOD
# ("train") or the recording of the attempt ("record") for generation GEN:
# python -c FAILPOINT METHOD GEN OVERRIDES...
FAILPOINT = """
import os, signal, sys
from recursive import cli, loop
method, gen, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
name = "record" if method == "record" else "run_stage"
inner = getattr(loop.Orchestrator, name)
def hooked(self, *args):
    at = args[1]  # run_stage(stage, attempt, record, parent); record(record, attempt)
    if (name == "record" or args[0] == method) and at.generation == gen:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    return inner(self, *args)
setattr(loop.Orchestrator, name, hooked)
sys.exit(cli.main(["run", *argv]))
"""


def run_cmd(run_dir: Path, failpoint: tuple[str, int] | None = None) -> list[str]:
    head = [sys.executable, "-m", "recursive.cli", "run"]
    if failpoint is not None:
        head = [sys.executable, "-c", FAILPOINT, failpoint[0], str(failpoint[1])]
    return [*head, *OVERRIDES, f"run_dir={run_dir}"]


def start(run_dir: Path, failpoint: tuple[str, int] | None = None) -> subprocess.Popen:
    return subprocess.Popen(run_cmd(run_dir, failpoint), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=ENV)


def run_to_end(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(run_cmd(run_dir), capture_output=True, text=True, timeout=TIMEOUT, env=ENV)


def kill_when(proc: subprocess.Popen, run_dir: Path, check: Check, delay: float) -> bool:
    """SIGKILL proc's process group once `check` holds (+ delay). False: the run ended first."""
    deadline = time.monotonic() + TIMEOUT
    while not check.holds(run_dir):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    if delay:
        time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def reference_seconds(ref_dir: Path, stage: str, attempt: str) -> float:
    return float(json.loads((ref_dir / attempt / "timings.json").read_text())[stage])


def show(run_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "recursive.cli", "lineage", "show", str(run_dir), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


WALL_CLOCK = ("seconds", "tokens_per_s", "tokens_per_s_steady")  # metrics.train fields that time the run


def comparable(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in ("timings", "time")}
    for k in ("plan_path", "model_path"):  # `lineage show --json` paths are absolute: compare within the run dir
        if out.get(k):
            out[k] = "generations/" + out[k].split("/generations/", 1)[-1]
    train = dict((out.get("metrics") or {}).get("train") or {})
    if train:
        out["metrics"] = dict(out["metrics"], train={k: v for k, v in train.items() if k not in WALL_CLOCK})
    return out


@pytest.fixture(scope="module")
def runs(reference_run, tmp_path_factory):
    ref_dir = reference_run["dir"]
    assert reference_run["proc"].returncode == 0, "the reference run failed (see test_reference_run_completes)"
    chain_dir = tmp_path_factory.mktemp("chain") / "rd"
    killed, landed, log = [], [], []
    for point in KILL_POINTS:
        if point.failpoint is not None:
            proc = start(chain_dir, point.failpoint)
            out = proc.communicate(timeout=TIMEOUT)[0]
            hit = proc.returncode == -signal.SIGKILL
        else:
            assert not point.reached.holds(chain_dir), f"{point.name}: {point.reached.what} holds before the run"
            delay = DELAY_SHARE * reference_seconds(ref_dir, *point.delay) if point.delay else 0.0
            proc = start(chain_dir)
            hit = kill_when(proc, chain_dir, point.reached, delay)
            out = "" if hit else proc.communicate(timeout=TIMEOUT)[0]
        if not hit:
            log.append(f"{point.name}: the run ended before the kill point (rc {proc.returncode})\n{out[-2000:]}")
            continue
        killed.append(point.name)
        if not point.reached.holds(chain_dir) or point.not_reached.holds(chain_dir):
            log.append(f"{point.name}: landed outside its stage ({point.reached.what}: {point.reached.holds(chain_dir)}, "
                       f"{point.not_reached.what}: {point.not_reached.holds(chain_dir)})")
            continue
        landed.append(point.name)
    final = run_to_end(chain_dir)
    return {"ref_dir": ref_dir, "chain_dir": chain_dir, "ref": reference_run["proc"], "final": final,
            "killed": killed, "landed": landed, "log": log}


def test_reference_run_completes(reference_run):
    ref = reference_run["proc"]
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]


def test_every_kill_point_was_hit(runs):
    assert runs["killed"] == [k.name for k in KILL_POINTS], "\n".join(runs["log"])


def test_every_kill_landed_inside_its_stage(runs):
    assert runs["landed"] == [k.name for k in KILL_POINTS], "\n".join(runs["log"])


def test_rerun_after_kills_completes(runs):
    assert runs["final"].returncode == 0, runs["final"].stdout[-3000:] + runs["final"].stderr[-3000:]
    assert json.loads(runs["final"].stdout.strip().splitlines()[-1])["status"] == "complete"


def test_no_lost_and_no_duplicated_records(runs):
    lines = (runs["chain_dir"] / "lineage.jsonl").read_text().splitlines()
    events = [json.loads(ln) for ln in lines]  # no torn line either
    keys = [(e["generation"], e["attempt"]) for e in events if e["event"] == "attempt"]
    assert keys == [(0, 1), (1, 1)]
    # besides the attempts, only what the uninterrupted run also recorded (generation 0's
    # precondition warning, written once however often the run was killed and resumed)
    ref = [json.loads(ln) for ln in (runs["ref_dir"] / "lineage.jsonl").read_text().splitlines()]
    others = lambda evs: [(e["event"], e.get("reason")) for e in evs if e["event"] != "attempt"]
    assert others(events) == others(ref)
    assert all(kind == "warning" for kind, _ in others(events))


def test_same_lineage_as_the_uninterrupted_run(runs):
    ref, chain = show(runs["ref_dir"]), show(runs["chain_dir"])
    assert [comparable(g) for g in chain["generations"]] == [comparable(g) for g in ref["generations"]]
    assert chain["stopped"] is None and ref["stopped"] is None


def test_same_models_and_plans_as_the_uninterrupted_run(runs):
    def raw(d):
        events = [json.loads(ln) for ln in (d / "lineage.jsonl").read_text().splitlines()]
        return [e for e in events if e["event"] == "attempt"]
    ref, chain = raw(runs["ref_dir"]), raw(runs["chain_dir"])
    assert [e["model_sha256"] for e in chain] == [e["model_sha256"] for e in ref]
    assert [comparable(e)["metrics"] for e in chain] == [comparable(e)["metrics"] for e in ref]
    for g in (G0, G1):
        assert (runs["chain_dir"] / g / "plan.json").read_text() == (runs["ref_dir"] / g / "plan.json").read_text()


def test_recorded_models_match_their_hashes(runs):
    for e in (json.loads(ln) for ln in (runs["chain_dir"] / "lineage.jsonl").read_text().splitlines()):
        if e["event"] != "attempt":
            continue
        assert sha256_tree(runs["chain_dir"] / e["model_path"]) == e["model_sha256"]
        assert not (runs["chain_dir"] / e["model_path"]).with_name("model.tmp").exists()
