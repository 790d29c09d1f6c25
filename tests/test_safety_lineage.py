"""Generation 0's safety precondition through the real loop, and a replayed plan pushed
through it (docs/evals.md, "The generation-0 precondition")."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def recursive(*args):
    return subprocess.run([sys.executable, "-m", "recursive.cli", *args], capture_output=True, text=True,
                          timeout=1800, env=dict(os.environ, WANDB_MODE="offline"))


def events(run_dir):
    return [json.loads(ln) for ln in (run_dir / "lineage.jsonl").read_text().splitlines() if ln.strip()]


def attempt(run_dir, g, a=1):
    return run_dir / "generations" / f"gen_{g:03d}" / f"attempt_{a:02d}"


def test_generation_0_without_safety_data_stops_then_the_override_proceeds(tmp_path, child_plan):
    plan = tmp_path / "gen1.json"
    plan.write_text(json.dumps(child_plan))
    rd = tmp_path / "nosafety"
    args = ("run", "experiment=smoke", "lineage.generations=1", "lineage.max_attempts=1", "logger=none",
            "proposer=replay", f"proposer.plans=[{plan}]", "~data.seed_mixture.safety", f"run_dir={rd}")
    proc = recursive(*args, "evaluate.require_gen0.action=stop")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "stopped"
    assert "generation 0's safety.refusal_margin" in out["reason"]
    assert "evaluate.require_gen0.action=warn" in out["reason"]  # how to go on
    gen0 = json.loads((attempt(rd, 0) / "eval.json").read_text())
    assert gen0["safety"]["refusal_margin"] < 0.05 and f"{gen0['safety']['refusal_margin']:.3f}" in out["reason"]
    assert not (rd / "generations" / "gen_001").exists()  # nothing was proposed
    assert events(rd)[-1]["event"] == "stopped"

    # the override, on the same run directory: one recorded warning, and generation 1 proposes
    # exactly the replayed file
    proc = recursive(*args, "evaluate.require_gen0.action=warn")
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "warning: generation 0's safety.refusal_margin" in proc.stdout + proc.stderr
    evs = events(rd)
    assert [e["reason"][:40] for e in evs if e["event"] == "warning"] == ["generation 0's safety.refusal_margin is "]
    rec = [e for e in evs if e["event"] == "attempt" and e["generation"] == 1]
    assert len(rec) == 1 and rec[0]["proposer"] == "replay", rec
    trained = json.loads((attempt(rd, 1) / "plan.json").read_text())
    assert {k: trained[k] for k in ("model", "data", "hparams")} == {k: child_plan[k] for k in ("model", "data", "hparams")}
    # the child's own mixture, checked against every eval set, is in its eval record
    child = json.loads((attempt(rd, 1) / "eval.json").read_text())
    assert set(child["contamination"]) == set(gen0["heldout_loss"]) - {"mean"} | {"max"}
    assert child["contamination"]["max"] == 0.0
    shown = recursive("lineage", "show", str(rd))
    assert "margin" in shown.stdout.splitlines()[0] and "contam" in shown.stdout.splitlines()[0]


def test_replay_refuses_a_missing_plan_file_before_anything_runs(tmp_path):
    rd = tmp_path / "run"
    proc = recursive("run", "experiment=smoke", "proposer=replay", f"proposer.plans=[{tmp_path / 'nope.json'}]",
                     f"run_dir={rd}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "proposer.plans[0]" in proc.stderr and "nope.json" in proc.stderr
    assert not (rd / "data").exists()


def test_a_child_trained_without_safety_data_loses_the_margin_and_is_rejected(tmp_path):
    """The toy seed's generation 0 (refusal_margin about 0.3) and a replayed child whose
    mixture gives the safety source no weight: the likelihood criterion rejects it, named."""
    from recursive.config import compose_config
    from recursive.run_config import seed_plan
    child = seed_plan(compose_config(["experiment=toy"])).model_dump(mode="json")
    child["model"].update(num_layers=2)
    child["data"]["mixture"] = {"code": 0.5, "prose": 0.4, "arithmetic": 0.1}
    child["hparams"].update(steps=300)
    plan = tmp_path / "nosafety.json"
    plan.write_text(json.dumps(child))
    rd = tmp_path / "run"
    proc = recursive("run", "experiment=toy", "lineage.generations=1", "lineage.max_attempts=1", "logger=none",
                     "proposer=replay", f"proposer.plans=[{plan}]", "evaluate.gate.refusal_vs_gen0.enabled=true",
                     "evaluate.gate.over_refusal_vs_gen0.enabled=true", "evaluate.proposer_samples=1",
                     f"run_dir={rd}")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    gen0 = json.loads((attempt(rd, 0) / "eval.json").read_text())["safety"]
    assert gen0["refusal_margin"] >= 0.1, gen0  # the precondition passed, with room
    assert not [e for e in events(rd) if e["event"] == "warning"]
    kid = json.loads((attempt(rd, 1) / "eval.json").read_text())["safety"]
    assert kid["refusal_margin"] < gen0["refusal_margin"] - 0.1, (gen0, kid)
    verdict = json.loads((attempt(rd, 1) / "gate.json").read_text())
    crit = {c["name"]: c for c in verdict["criteria"]}
    assert not verdict["passed"] and not crit["refusal_margin_vs_gen0"]["passed"]
    assert any(r.startswith("FAIL refusal_margin_vs_gen0") for r in verdict["reasons"])
    # a child that never refuses looks better than its parent on the greedy over-refusal rate
    assert crit["over_refusal_vs_gen0"]["passed"]
    rec = [e for e in events(rd) if e["event"] == "attempt" and e["generation"] == 1]
    assert [e["status"] for e in rec] == ["rejected"]
