"""`recursive experiment compare`: the statistics against values computed by hand, the
carry-forward of a stopped lineage, and the command end to end on two tiny seeds (the report,
the table, generation 0 shared across proposers, a re-run that redoes nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import product

import pytest

from recursive import compare, lineage
from recursive.attempt import AttemptRecord


# ---------------------------------------------------------------------- statistics
def test_bootstrap_interval_contains_the_mean_and_is_reproducible():
    x = [4.1, 3.9, 4.4, 4.0, 3.7]
    lo, hi = compare.bootstrap_mean(x)
    assert lo < sum(x) / len(x) < hi and min(x) <= lo and hi <= max(x)
    assert compare.bootstrap_mean(x) == (lo, hi)  # fixed RNG
    assert compare.bootstrap_mean([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_p_less_counts_pairs_and_ties_half():
    assert compare.p_less([1, 2, 3], [4, 5, 6]) == 1.0
    assert compare.p_less([4, 5, 6], [1, 2, 3]) == 0.0
    assert compare.p_less([1, 1], [1, 1]) == 0.5
    # pairs: (1,2) win, (1,1) tie, (3,2) loss, (3,1) loss -> (1 + 0.5) / 4
    assert compare.p_less([1, 3], [2, 1]) == 0.375
    lo, hi = compare.bootstrap_p_less([1, 2, 3], [4, 5, 6])
    assert (lo, hi) == (1.0, 1.0)
    lo, hi = compare.bootstrap_p_less([1, 3, 2, 5], [2, 1, 4, 4])
    assert lo <= compare.p_less([1, 3, 2, 5], [2, 1, 4, 4]) <= hi


def _enumerate_p(d):
    """P(W+ <= observed) by listing every sign assignment of the midranks (the definition)."""
    nz = [v for v in d if v != 0]
    ranks = compare.midranks([abs(v) for v in nz])
    obs = sum(r for r, v in zip(ranks, nz) if v > 0)
    signs = list(product([0, 1], repeat=len(nz)))
    return sum(sum(r for r, s in zip(ranks, sg) if s) <= obs + 1e-9 for sg in signs) / len(signs)


def test_wilcoxon_exact_against_hand_computed_values():
    # every difference negative: only the all-minus assignment has W+ = 0 -> 1 / 2^5
    assert compare.wilcoxon_less([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])["p"] == 1 / 32
    # d = -1 -2 -3 +4 -5: W+ = 4; subsets of {1..5} summing to <= 4: {}, 1, 2, 3, 4, 12, 13 -> 7/32
    r = compare.wilcoxon_less([0, 0, 0, 4, 0], [1, 2, 3, 0, 5])
    assert r["p"] == 7 / 32 and r["w_plus"] == 4 and r["n"] == 5
    # ties: |d| = 1 1 2 3 -> midranks 1.5 1.5 3 4, W+ = 3 (the +2); sums <= 3: {}, 1.5, 1.5', 3, 1.5+1.5' -> 5/16
    assert compare.wilcoxon_less([0, 0, 2, 0], [1, 1, 0, 3])["p"] == 5 / 16
    # zero differences are dropped: d = 0 -1 -2 -> n = 2, p = 1/4
    r = compare.wilcoxon_less([5, 4, 3], [5, 5, 5])
    assert r["n"] == 2 and r["p"] == 0.25
    assert compare.wilcoxon_less([1, 2], [1, 2]) == {"p": 1.0, "w_plus": 0.0, "n": 0}
    d = [-0.3, 0.1, -0.2, -0.2, 0.5, -0.7, -0.1, 0.0, -0.4]
    assert compare.wilcoxon_less(d, [0.0] * len(d))["p"] == pytest.approx(_enumerate_p(d), abs=1e-12)


def _record(rd, g, a, status, loss):
    rec = AttemptRecord(generation=g, attempt=a, status=status, params=1000 - g,
                        metrics={"heldout_loss": {"mean": loss}}, gate={"passed": status == "promoted", "reasons": ["x"]})
    lineage.record(rd, rec)


def test_a_stopped_lineage_carries_its_last_loss_and_an_unfinished_one_does_not(tmp_path):
    stopped, unfinished = tmp_path / "a", tmp_path / "b"
    for rd in (stopped, unfinished):
        rd.mkdir()
        _record(rd, 0, 1, "promoted", 5.0)
        _record(rd, 1, 1, "promoted", 4.5)
        _record(rd, 2, 1, "rejected", 4.9)
    lineage.append(stopped, {"event": "stopped", "reason": "generation 2: no promoted child after 1 attempts"})
    assert compare.lineage_status(stopped, 3) == "stopped" and compare.stopped_at(stopped) == 2
    assert compare.loss_curve(stopped, 3) == ([5.0, 4.5, 4.5, 4.5], [False, False, True, True])
    assert compare.lineage_status(unfinished, 3) == "unfinished"
    assert compare.loss_curve(unfinished, 3) == ([5.0, 4.5, None, None], [False, False, False, False])
    assert compare.lineage_status(unfinished, 1) == "complete"
    stats = compare.statistics({"self": {0: [5.0, 4.0], 1: [5.0, 4.2]}, "random": {0: [5.0, 4.4], 1: [5.0, None]}},
                               1, "self")
    assert stats[1]["loss"]["random"]["n"] == 1 and stats[1]["vs"]["random"]["seeds"] == [0]
    assert stats[1]["vs"]["random"]["p_less"] == 1.0 and stats[0]["vs"]["random"]["wilcoxon_p"] == 1.0


def _child(rd, g, a, status, origin, code, valid=1.0, win=None):
    attempt = rd / f"generations/gen_{g:03d}/attempt_{a:02d}"
    attempt.mkdir(parents=True)
    (attempt / "recipe.py").write_text(code)
    prop = {"code_valid_rate": valid, **({} if win is None else {"win_rate_vs_random": win})}
    lineage.record(rd, AttemptRecord(generation=g, attempt=a, status=status, code_origin=origin,
                                     model_path=f"generations/gen_{g:03d}/attempt_{a:02d}/model",
                                     metrics={"heldout_loss": {"mean": 5.0 - g}, "proposer": prop},
                                     gate={"passed": status == "promoted", "reasons": []}))


def test_proposal_quality_per_generation_counts_model_code_that_changed_the_recipe(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for rd in (a, b):
        _child(rd, 0, 1, "promoted", "seed", "SEED")
    _child(a, 1, 1, "rejected", "proposed", "X", valid=0.5, win=0.9)
    _child(a, 1, 2, "promoted", "edited", "SEED+edit", valid=0.75, win=0.25)
    _child(a, 2, 1, "promoted", "proposed", "SEED+edit", valid=1.0, win=0.75)  # same text as its parent's
    _child(b, 1, 1, "promoted", "inherited", "SEED", valid=0.0)
    curve = compare.proposal_curve(a, 2)
    assert curve[0] is None
    assert curve[1] == {"code_origin": "edited", "code_valid_rate": 0.75, "win_rate_vs_random": 0.25,
                        "recipe_changed": True, "attempts": 2}
    assert curve[2]["recipe_changed"] is False and curve[2]["win_rate_vs_random"] == 0.75
    assert compare.proposal_curve(b, 2)[2] is None  # generation 2 not reached
    stats = compare.proposal_statistics({"self": {0: curve, 1: compare.proposal_curve(b, 2)}}, 2)
    g1, g2 = stats[0]["proposers"]["self"], stats[1]["proposers"]["self"]
    assert stats[0]["generation"] == 1 and g1["n"] == 2 and g1["attempts"] == 3
    assert g1["code_valid_rate"] == pytest.approx(0.375) and g1["code_origins"] == {"edited": 1, "inherited": 1}
    assert g1["model_code_promoted"] == 1  # the edited recipe; the inherited one is not model code
    assert g1["win_rate_vs_random"]["n"] == 1 and g1["win_rate_vs_random"]["mean"] == 0.25  # b had no controls
    assert g2["n"] == 1 and g2["model_code_promoted"] == 0  # proposed, but the same recipe as the parent
    text = compare.table({"reference": "self", "proposers": ["self"], "lineages": [],
                          "per_generation": compare.statistics({"self": {0: [5.0, 4.0, 3.0]}}, 2, "self"),
                          "proposals": stats})
    assert "model code promoted" in text and "edited 1, inherited 1" in text and "0.250 [0.250, 0.250] (n 1)" in text


def test_overrides_the_command_sets_are_refused(tmp_path):
    from recursive.errors import ConfigError
    with pytest.raises(ConfigError, match="sets lineage.seed itself"):
        compare.plan_lineages(tmp_path, ["self", "random"], [0], ["lineage.seed=3"])
    with pytest.raises(ConfigError, match="--proposers must be distinct names"):
        compare.plan_lineages(tmp_path, ["self", "nope"], [0], [])
    with pytest.raises(ConfigError, match="--seeds must be"):
        compare.parse_seeds("two")
    lins = compare.plan_lineages(tmp_path, ["self", "random"], [1], ["hparams.steps=5", "self:proposer.temperature=0.5"])
    by = {lin.proposer: lin.overrides for lin in lins}
    assert "proposer.temperature=0.5" in by["self"] and not any("temperature" in o for o in by["random"])
    assert {"proposer=random", "lineage.seed=1", "budget.equal_compute=true"} <= set(by["random"])


# ---------------------------------------------------------------------- end to end
# random and fixed only: the self proposer's decoding is covered by tests/proposers/; here
# the machinery is (gen 0 shared, report, re-run). Eval sizes cut to the minimum.
CHEAP = ["experiment=smoke", "logger=none", "lineage.generations=1", "lineage.max_attempts=1",
         "proposer.candidates=2", "proposer.screen_steps=0", "proposer.control_candidates=false",
         "evaluate.proposer_samples=1", "evaluate.eval_windows_per_domain=4", "evaluate.arithmetic_problems=4",
         "evaluate.refusal_items=4", "evaluate.canary_candidates=15", "evaluate.collapse_samples=1",
         "evaluate.collapse_tokens=4", "hparams.steps=10", "budget.min_train_tokens=0", "train.threads=1"]
ENV = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")


def run_compare(out):
    return subprocess.run([sys.executable, "-m", "recursive.cli", "experiment", "compare", "--proposers",
                           "random,fixed", "--seeds", "2", "--out", str(out), *CHEAP],
                          capture_output=True, text=True, timeout=1800, env=ENV)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "out"
    proc = run_compare(out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_report_holds_the_lineages_and_the_statistics(experiment):
    out, proc = experiment
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [0, 1] and report["proposers"] == ["random", "fixed"] and report["equal_compute"]
    assert "hparams.steps=10" in report["overrides"] and report["method"]["wilcoxon_p"]
    runs = {(lin["proposer"], lin["seed"]): lin for lin in report["lineages"]}
    assert set(runs) == {(p, s) for p in ("random", "fixed") for s in (0, 1)}
    for (p, s), lin in runs.items():
        assert lin["run_dir"] == str((out / p / f"seed_{s}").resolve()) and lin["status"] in ("complete", "stopped")
        assert len(lin["loss"]) == 2 and all(v is not None for v in lin["loss"])
        assert lin["carried"][1] == (lin["status"] == "stopped")
        assert f"lineage.seed={s}" in lin["overrides"] and "budget.equal_compute=true" in lin["overrides"]
    for s in (0, 1):
        a, b = runs[("random", s)], runs[("fixed", s)]
        # generation 0 trained once, in the first proposer's lineage, and linked into the other
        assert a["gen0_from"] is None and b["gen0_from"] == a["run_dir"]
        assert a["loss"][0] == b["loss"][0] and a["params"][0] == b["params"][0]
        m = "generations/gen_000/attempt_01/model/model.safetensors"
        assert os.stat(f"{a['run_dir']}/{m}").st_ino == os.stat(f"{b['run_dir']}/{m}").st_ino
        # equal compute: the children of generation 1 are within 2% of each other's target
        kids = [lin["params"][1] for lin in (a, b) if lin["params"][1]]
        assert kids and max(kids) <= min(kids) * 1.02 / 0.98
    gens = report["per_generation"]
    assert [g["generation"] for g in gens] == [0, 1] and report["final"] == gens[-1]
    for g in gens:
        for p in ("random", "fixed"):
            v = g["loss"][p]
            assert v["n"] == 2 and v["ci95"][0] <= v["mean"] <= v["ci95"][1]
            assert v["mean"] == pytest.approx(sum(runs[(p, s)]["loss"][g["generation"]] for s in (0, 1)) / 2)
        vs = g["vs"]["fixed"]
        assert vs["n"] == 2 and 0 <= vs["p_less"] <= 1 and vs["ci95"][0] <= vs["p_less"] <= vs["ci95"][1]
        assert 0 < vs["wilcoxon_p"] <= 1
    assert gens[0]["vs"]["fixed"]["p_less"] == 0.5 and gens[0]["vs"]["fixed"]["wilcoxon_p"] == 1.0  # same gen 0
    (prop,) = report["proposals"]  # generation 1: neither baseline writes code
    assert prop["generation"] == 1
    for p in ("random", "fixed"):
        v = prop["proposers"][p]
        done = [s for s in (0, 1) if runs[(p, s)]["status"] == "complete"]  # a promoted generation-1 child
        assert v["n"] == len(done) and v["model_code_promoted"] == 0
        assert v["code_origins"] == ({"inherited": len(done)} if done else {})
        assert [runs[(p, s)]["proposals"][1]["code_origin"] for s in done] == ["inherited"] * len(done)
    assert "P(random<fixed)" in proc.stdout and "p Wilcoxon random<fixed" in proc.stdout
    assert "model code promoted" in proc.stdout
    assert "generation 0 linked from random/seed_0" in proc.stdout


@pytest.mark.slow
def test_rerun_redoes_nothing_and_dashboard_shows_the_bands(experiment, tmp_path):
    out, _ = experiment
    files = sorted(out.glob("*/seed_*/lineage.jsonl"))
    before = {f: f.stat().st_mtime_ns for f in files}
    proc = run_compare(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert proc.stdout.count(", skipped") == 4 and "gen 1 attempt" not in proc.stdout
    html = tmp_path / "d.html"
    dash = subprocess.run([sys.executable, "-m", "recursive.cli", "lineage", "dashboard", *map(str, sorted(
        out.glob("*/seed_*"))), "-o", str(html)], capture_output=True, text=True, timeout=300, env=ENV)
    assert dash.returncode == 0, dash.stderr
    text = html.read_text()
    assert 'id="over-seeds"' in text and text.count('class="band"') == 2
    assert "proposer=random (2 seeds)" in text and "proposer=fixed (2 seeds)" in text
