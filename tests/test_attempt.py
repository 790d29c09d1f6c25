"""The attempt's shapes: file names in one place, stages done by their outputs, the record
round-trips through lineage.jsonl, and the training protocol reads an outcome the same
way for every launcher."""

import json

from recursive import lineage
from recursive.attempt import STAGES, Attempt, AttemptRecord, parse_attempt_id
from recursive.io import atomic_write_json
from recursive.train import protocol


def test_attempt_paths_and_ids(tmp_path):
    at = Attempt(tmp_path, 2, 3)
    assert at.dir == tmp_path / "generations" / "gen_002" / "attempt_03" and at.id == "gen_002/attempt_03"
    assert Attempt.from_dir(at.dir).dir == at.dir and parse_attempt_id(at.id) == (2, 3)
    # the trainer's own files are the protocol's names
    assert at.train_error.name == protocol.TRAIN_ERROR and at.train_requeue.name == protocol.TRAIN_REQUEUE
    assert at.model.name == protocol.MODEL and at.plan.name == protocol.PLAN


def test_stages_are_done_by_their_outputs(tmp_path):
    at = Attempt(tmp_path, 0, 1)
    assert list(STAGES) == ["propose", "train", "evaluate", "gate"]
    assert not any(at.done(s) for s in STAGES)
    atomic_write_json(at.proposal, {})
    atomic_write_json(at.model / "config.json", {})
    assert at.done("propose") and not at.done("train")  # a model without train metrics is not trained
    atomic_write_json(at.train_metrics, {})
    atomic_write_json(at.eval, {})
    assert at.done("train") and at.done("evaluate") and not at.done("gate")


def test_record_round_trips_and_reads_old_events(tmp_path):
    rec = AttemptRecord(generation=1, attempt=2, status="rejected", parent="gen_000/attempt_01", params=10,
                        gate={"passed": False, "reasons": ["FAIL loss"]})
    lineage.record(tmp_path, rec)
    # an event written before AttemptRecord existed: no model_sha256, an unknown key
    old = {"event": "attempt", "generation": 1, "attempt": 1, "status": "failed", "reason": "no valid plan",
           "gate": {"passed": False, "reasons": []}, "parent": "gen_000/attempt_01", "retired_key": 1}
    with open(tmp_path / lineage.LINEAGE_FILE, "a") as f:
        f.write(json.dumps(old) + "\n")
    got = {r.id: r for r in lineage.attempts(tmp_path)}
    assert got["gen_001/attempt_02"] == rec and got["gen_001/attempt_02"].parent_key == (0, 1)
    assert got["gen_001/attempt_01"].reasons == ["no valid plan"] and got["gen_001/attempt_01"].status == "failed"


def test_read_outcome(tmp_path):
    d = tmp_path
    assert protocol.read_outcome(d, 0).kind == "crashed"  # exit 0 but no model: not trained
    atomic_write_json(d / protocol.MODEL / "config.json", {})
    assert protocol.read_outcome(d, 0).kind == "trained"
    atomic_write_json(d / protocol.TRAIN_ERROR, {"error": "RecipeError: nan"})
    out = protocol.read_outcome(d, protocol.EXIT_PLAN_FAILED)
    assert out.kind == "plan_failed" and out.error == "RecipeError: nan"
    # torchrun exits 1 when its workers exit 75: the requeue file is the signal
    atomic_write_json(d / protocol.TRAIN_REQUEUE, {"step": 40, "checkpoint": "ckpt"})
    out = protocol.read_outcome(d, 1)
    assert (out.kind, out.step, out.checkpoint) == ("preempted", 40, "ckpt")
