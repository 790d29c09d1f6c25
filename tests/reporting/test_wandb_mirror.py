"""The wandb mirror, checked in the offline .wandb files themselves: one run per stage per
attempt, grouped by lineage, artifacts, metrics keyed by generation, and each child's
model artifact naming its parent's artifact digest."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recursive.attempt import Attempt
from recursive import lineage
from recursive.io import read_json
from recursive.wandb_log import MARKER, SYNC_MARKER, WandbMirror, offline_artifacts, read_wandb_file


def mirror_all(rd, **kw):
    m = WandbMirror(read_json(rd / "config.json"), rd, **kw)
    m.strict = True
    for rec in lineage.attempts(rd):
        m.attempt(rec, Attempt(rd, rec.generation, rec.attempt).dir)
    return m


def runs_in(rd):
    """run_id -> {"run": RunRecord, "history": [{key: value}], "artifacts": [...]}, from the .wandb files."""
    out = {}
    for f in sorted(rd.glob("wandb/offline-run-*/run-*.wandb")):
        for rec in read_wandb_file(f):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out.setdefault(rec.run.run_id, {"history": []})["run"] = rec.run
            elif kind == "history":
                row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item}
                out.setdefault(f.stem[4:], {"history": []})["history"].append(row)
    return out


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory, make_lineage):
    rd = make_lineage(tmp_path_factory.mktemp("mirror"), "self", seed=3)
    m = mirror_all(rd)
    return rd, m


def test_one_run_per_stage_grouped_by_lineage(mirrored):
    rd, m = mirrored
    runs = runs_in(rd)
    for rec in lineage.attempts(rd):
        g, a = rec.generation, rec.attempt
        stages = ["propose"] if rec.status == "failed" else ["propose", "train", "evaluate"]
        for stage in stages:
            r = runs[m.run_id(g, a, stage)]["run"]
            assert r.job_type == stage and r.run_group == m.group
            assert {rec.status, f"gen:{g}", "proposer:" + rec.proposer, "lineage:toy"} <= set(r.tags)
        if rec.status == "failed":
            assert m.run_id(g, a, "train") not in runs  # nothing was trained
    assert len({r["run"].run_group for r in runs.values()}) == 1


def test_metrics_are_keyed_by_generation(mirrored):
    rd, m = mirrored
    runs = runs_in(rd)
    for rec in lineage.attempts(rd):
        if rec.status == "failed":
            continue
        hist = runs[m.run_id(rec.generation, rec.attempt, "evaluate")]["history"]
        assert len(hist) == 1
        row = hist[0]
        assert row["generation"] == rec.generation
        assert row["metrics/heldout_loss.mean"] == pytest.approx(rec.metrics["heldout_loss"]["mean"])
        assert row["metrics/safety.refusal_rate"] == pytest.approx(rec.metrics["safety"]["refusal_rate"])
        assert row["promoted"] == int(rec.status == "promoted")


def test_artifacts_for_plan_recipe_manifest_model_and_eval(mirrored):
    rd, m = mirrored
    arts = offline_artifacts(rd)
    for rec in lineage.attempts(rd):
        g, a = rec.generation, rec.attempt
        kinds = {x["type"]: x for x in arts if x["metadata"].get("generation") == g and x["metadata"].get("attempt") == a}
        if rec.status == "failed":  # failed at proposing: its proposal (the candidates) is still kept
            assert set(kinds) == {"plan"}
            continue
        assert set(kinds) == {"plan", "recipe", "data_manifest", "model", "eval_report"}
        assert kinds["model"]["run_id"] == m.run_id(g, a, "train")
        assert kinds["eval_report"]["metadata"]["inputs"]["model"]["digest"] == kinds["model"]["digest"]
        assert kinds["data_manifest"]["metadata"]["inputs"]["plan"]["digest"] == kinds["plan"]["digest"]


def test_each_child_model_artifact_names_its_parents_digest(mirrored):
    rd, m = mirrored
    models = {(x["metadata"]["generation"], x["metadata"]["attempt"]): x
              for x in offline_artifacts(rd) if x["type"] == "model"}
    children = [rec for rec in lineage.attempts(rd) if rec.parent and rec.status != "failed"]
    assert len(children) == 3
    for rec in children:
        child = models[(rec.generation, rec.attempt)]["metadata"]
        pg, pa = rec.parent_key
        parent = models[(pg, pa)]
        assert child["parent"] == rec.parent
        assert child["parent_model_digest"] == parent["digest"]
        assert child["parent_run_id"] == parent["run_id"]
        assert child["inputs"]["parent_model"] == {"name": parent["name"], "digest": parent["digest"]}


def test_mirror_is_idempotent_and_quick(mirrored):
    rd, m = mirrored
    before = sorted(p.name for p in rd.glob("wandb/offline-run-*"))
    again = mirror_all(rd)
    assert again.seconds == []  # every attempt already marked complete: nothing re-logged
    assert sorted(p.name for p in rd.glob("wandb/offline-run-*")) == before
    for rec in lineage.attempts(rd):
        marker = read_json(Attempt(rd, rec.generation, rec.attempt).dir / MARKER)
        assert marker["complete"] is True
    # the first attempt pays for starting wandb's service; the later ones are what the loop adds
    assert max(m.seconds[1:]) < 20, m.seconds


def test_resume_mid_attempt_skips_logged_stages(tmp_path, make_lineage):
    rd = make_lineage(tmp_path, "random", seed=4)
    rec = lineage.attempts(rd)[0]
    d = Attempt(rd, 0, 1).dir
    m = WandbMirror(read_json(rd / "config.json"), rd)
    m.strict = True
    m.attempt(rec, d)
    marker = read_json(d / MARKER)
    marker["complete"] = False
    del marker["stages"]["evaluate"]  # as if the process died after the train run
    (d / MARKER).write_text(json.dumps(marker))
    m.attempt(rec, d)
    ids = [rec.run.run_id for f in rd.glob("wandb/offline-run-*/*.wandb") for rec in read_wandb_file(f)
           if rec.WhichOneof("record_type") == "run"]
    assert sorted(ids) == sorted([m.run_id(0, 1, "propose"), m.run_id(0, 1, "train"), m.run_id(0, 1, "evaluate"),
                                  m.run_id(0, 1, "evaluate")])  # only the missing stage again
    assert read_json(d / MARKER)["complete"] is True


def test_replay_links_parent_models_with_use_artifact(tmp_path, make_lineage, monkeypatch):
    """What sync-wandb does against a server, with wandb's use_artifact recorded instead."""
    import wandb

    used = []
    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "use_artifact",
                        lambda self, ref, *a, **k: used.append((self.id, ref)))
    rd = make_lineage(tmp_path, "self", seed=5)
    m = mirror_all(rd, marker=SYNC_MARKER)
    assert used == []  # offline: no use_artifact calls (wandb would raise)
    used.clear()
    m = WandbMirror(read_json(rd / "config.json"), rd, marker=SYNC_MARKER + ".2")
    m.link_inputs = m.strict = True
    for rec in lineage.attempts(rd):
        m.attempt(rec, Attempt(rd, rec.generation, rec.attempt).dir)
    assert (m.run_id(1, 2, "propose"), m.artifact_name("model", 0, 1) + ":latest") in used
    assert (m.run_id(2, 2, "train"), m.artifact_name("model", 1, 2) + ":latest") in used
    assert (m.run_id(2, 2, "train"), m.artifact_name("plan", 2, 2) + ":latest") in used
    assert (m.run_id(2, 2, "evaluate"), m.artifact_name("model", 2, 2) + ":latest") in used


def test_sync_wandb_without_a_server_says_so(tmp_path, make_lineage):
    rd = make_lineage(tmp_path, "random", seed=6)
    env = {"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "x" * 40}
    proc = subprocess.run([sys.executable, "-m", "recursive.cli", "lineage", "sync-wandb", str(rd)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert proc.returncode != 0
    assert "cannot reach the wandb server at http://127.0.0.1:9" in proc.stderr
    assert not list(rd.glob("generations/*/*/" + SYNC_MARKER))


def test_a_mirror_failure_does_not_stop_the_lineage(tmp_path, make_lineage, monkeypatch, capsys):
    """The run directory is the truth: if wandb fails, the loop goes on and a resume retries."""
    import wandb

    rd = make_lineage(tmp_path, "random", seed=7)
    rec = lineage.attempts(rd)[0]
    d = Attempt(rd, 0, 1).dir

    def broken(*a, **k):
        raise RuntimeError("wandb is down")

    monkeypatch.setattr(wandb, "init", broken)
    WandbMirror(read_json(rd / "config.json"), rd).attempt(rec, d)  # the loop's call: no exception
    assert "wandb mirror of gen 0 attempt 1 failed (RuntimeError: wandb is down)" in capsys.readouterr().err
    assert not (d / MARKER).exists() or read_json(d / MARKER)["complete"] is False
    monkeypatch.undo()
    m = WandbMirror(read_json(rd / "config.json"), rd)
    m.strict = True
    m.attempt(rec, d)  # the resume
    assert read_json(d / MARKER)["complete"] is True
