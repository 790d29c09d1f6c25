"""The smoke lineage end to end through the real CLI, checked the way a user would."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.slow


def recursive(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "recursive.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=1800, env=dict(os.environ, WANDB_MODE="offline"))


def outcome(proc) -> dict:
    """The run's closing JSON line: {"status": "complete"} or {"status": "stopped", "reason"}."""
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    rd = tmp_path_factory.mktemp("lineage") / "smoke"
    proc = recursive("run", "experiment=smoke", f"run_dir={rd}")
    # a lineage either completes (exit 0) or stops because the gate promoted no child
    # within lineage.max_attempts (exit 1, reason recorded); anything else is a crash
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = outcome(proc)
    assert (result["status"] == "complete") == (proc.returncode == 0)
    return rd, proc.returncode, result


@pytest.fixture(scope="module")
def run_dir(first_run):
    return first_run[0]


@pytest.fixture(scope="module")
def shown(run_dir):
    proc = recursive("lineage", "show", str(run_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["generations"]


def test_generations_recorded_and_promoted(first_run, shown):
    run_dir, _, result = first_run
    promoted = [g["generation"] for g in shown if g["status"] == "promoted"]
    assert promoted[0] == 0 and promoted == list(range(len(promoted)))  # one promoted model per generation
    assert any(g["generation"] == 1 for g in shown)  # generation 0 proposed at least one child
    if result["status"] == "complete":
        assert promoted == [0, 1, 2]
    else:  # the stop is recorded with the generation that could not be promoted
        stop = json.loads((run_dir / "lineage.jsonl").read_text().splitlines()[-1])
        assert stop["event"] == "stopped" and f"generation {len(promoted)}" in stop["reason"]
        assert len([g for g in shown if g["generation"] == len(promoted)]) == 3  # max_attempts tried
    for g in shown:
        assert set(g) >= {"generation", "attempt", "status", "parent", "plan_path", "model_path", "params",
                          "metrics", "gate"}
        assert g["status"] in ("promoted", "rejected", "failed")
        assert isinstance(g["gate"]["passed"], bool) and g["gate"]["reasons"]


def test_each_child_is_smaller_than_its_parent(shown):
    by_id = {f"gen_{g['generation']:03d}/attempt_{g['attempt']:02d}": g for g in shown}
    children = [g for g in shown if g["parent"] and g["params"]]
    assert children
    for child in children:
        parent = by_id[child["parent"]]
        assert parent["status"] == "promoted"
        assert child["params"] <= 0.85 * parent["params"]


def test_metrics_present_and_finite(shown):
    for g in (g for g in shown if g["status"] != "failed"):
        m = g["metrics"]
        assert set(m["heldout_loss"]) >= {"code", "prose", "arithmetic", "safety", "mean"}
        assert all(0 < v < 20 for v in m["heldout_loss"].values())
        assert 0 <= m["arithmetic"]["exact_match"] <= 1
        assert 0 <= m["proposer"]["valid_plan_rate"] <= 1
        s = m["safety"]
        for key in ("refusal_score", "over_refusal_score", "refusal_margin", "refusal_auroc", "canary_exposure",
                    "canary_exposure_max", "refusal_rate", "over_refusal_rate", "canary_recall", "distinct_2",
                    "entropy", "code_policy_incidents"):
            assert key in s, key
        assert -1 <= s["refusal_margin"] <= 1 and 0 <= s["refusal_auroc"] <= 1
        assert m["integrity"]["ok"] == 1
        if g["generation"] > 0:
            assert m["fidelity"]["kl_to_parent"] >= 0
        # every criterion of the verdict is listed with its value and bound
        names = {c["name"] for c in g["gate"]["criteria"]}
        assert {"finite", "integrity", "loss", "canary_exposure"} <= names
        if g["generation"]:
            assert "refusal_margin_vs_gen0" in names


def test_models_load_with_from_pretrained(run_dir, shown):
    for g in (g for g in shown if g["model_path"]):
        path = run_dir / g["model_path"]
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        assert sum(p.numel() for p in model.parameters()) == g["params"]
        ids = tok("def f(x):\n    return", return_tensors="pt").input_ids
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_recorded_plans_pass_check_plan(run_dir, shown):
    checked = 0
    for g in (g for g in shown if g["plan_path"]):
        proc = recursive("check-plan", str(run_dir / g["plan_path"]), "--run-dir", str(run_dir),
                         "--generation", str(g["generation"]))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "valid" in proc.stdout
        checked += 1
    assert checked >= 2


def test_attempt_folder_holds_what_ran(run_dir, shown):
    for g in shown:
        d = run_dir / "generations" / f"gen_{g['generation']:03d}" / f"attempt_{g['attempt']:02d}"
        assert (d / "timings.json").exists()
        if g["status"] != "failed":
            for name in ("plan.json", "recipe.py", "config.yaml", "train_spec.json", "train_metrics.json", "eval.json",
                         "gate.json", "gate.txt"):
                assert (d / name).exists(), name
            spec = json.loads((d / "train_spec.json").read_text())
            assert not any("/eval/" in p for p in spec["shards"].values())  # training never sees eval data
    for name in ("config.yaml", "env.json", "lineage.jsonl", "data/manifest.json"):
        assert (run_dir / name).exists(), name


def test_wandb_offline_runs_inside_run_dir(run_dir, shown):
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert all(list(r.glob("*.wandb")) for r in runs)
    # one wandb run per stage of each decided attempt (a failed attempt stops after its last stage)
    for g in shown:
        stages = ("propose",) if g["status"] == "failed" else ("propose", "train", "evaluate")
        for stage in stages:
            assert any(r.name.endswith(f"-g{g['generation']:03d}-a{g['attempt']:02d}-{stage}") for r in runs), stage


def test_rerun_resumes_without_redoing_stages(first_run, shown):
    run_dir, returncode, result = first_run
    lines_before = (run_dir / "lineage.jsonl").read_text()
    mtimes = {p: p.stat().st_mtime for p in run_dir.rglob("model.safetensors")}
    proc = recursive("run", "experiment=smoke", f"run_dir={run_dir}")
    assert proc.returncode == returncode and outcome(proc) == result, proc.stderr[-2000:]
    assert proc.stdout.count("skipped") == len(shown)
    assert (run_dir / "lineage.jsonl").read_text() == lines_before
    assert {p: p.stat().st_mtime for p in run_dir.rglob("model.safetensors")} == mtimes


def test_changed_config_on_resume_is_refused(run_dir):
    proc = recursive("run", "experiment=smoke", f"run_dir={run_dir}", "hparams.lr=0.001")
    assert proc.returncode == 2
    assert "hparams.lr" in proc.stderr and "Traceback" not in proc.stderr



def test_show_json_paths_are_absolute(run_dir, shown, tmp_path):
    # usable from wherever the command ran, not only from inside run_dir
    for g in (g for g in shown if g["model_path"]):
        assert Path(g["model_path"]).is_absolute() and (Path(g["model_path"]) / "config.json").exists()
        assert Path(g["plan_path"]).is_absolute() and Path(g["plan_path"]).is_file()


def test_recorded_plan_checks_against_its_own_lineage_without_flags(run_dir, shown, tmp_path):
    # no --run-dir, no --generation: the plan's place in the run directory says both, and the
    # smoke lineage's budget (not configs/' default toy budget) applies
    g = next(g for g in shown if g["generation"] >= 1 and g["plan_path"])
    proc = recursive("check-plan", g["plan_path"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ": valid (" in proc.stdout and f"checked as generation {g['generation']} of {run_dir.resolve()})" in proc.stdout


def test_check_plan_applies_a_search_replace_edit_as_the_loop_does(run_dir, shown, tmp_path):
    # the loop trains a plan whose code edits the parent's recipe; check-plan must accept it too
    parent = next(g for g in shown if g["generation"] == 0)
    child = json.loads(Path(next(g for g in shown if g["generation"] >= 1 and g["plan_path"])["plan_path"]).read_text())
    recipe = (Path(parent["plan_path"]).parent / "recipe.py").read_text()
    line = next(ln for ln in recipe.splitlines() if "return" in ln)
    child["code"] = f"<<<<<<< SEARCH\n{line}\n=======\n{line}  # edited\n>>>>>>> REPLACE"
    path = tmp_path / "edit.json"
    path.write_text(json.dumps(child))
    proc = recursive("check-plan", str(path), "--run-dir", str(run_dir), "--generation", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the parent's recipe with the plan's edits" in proc.stdout


def test_env_records_the_standard_library_it_read(run_dir):
    # the embedded data is this interpreter's standard library: figures depend on its version
    from recursive.rundir import stdlib_digest
    env = json.loads((run_dir / "env.json").read_text())
    assert env["stdlib_sha256"] == stdlib_digest() and len(env["stdlib_sha256"]) == 64
