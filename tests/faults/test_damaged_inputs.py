"""Damaged inputs: an unwritable or full run directory, a corrupted or missing model. Each is
one clear `recursive: error:` line (no traceback), and a damaged model is never promoted.

The damaged-model cases start from copies of the finished reference lineage (conftest.py)."""

import json
import re
import resource
import shutil
import subprocess
import sys

import pytest

from .test_kill_resume import ENV, G0, G1, OVERRIDES, comparable

pytestmark = pytest.mark.slow


def recursive_run(run_dir, *extra, preexec=None):
    return subprocess.run([sys.executable, "-m", "recursive.cli", "run", *OVERRIDES, *extra, f"run_dir={run_dir}"],
                          capture_output=True, text=True, timeout=600, preexec_fn=preexec, env=ENV)


def records(run_dir):
    path = run_dir / "lineage.jsonl"
    events = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
    return [e for e in events if e["event"] == "attempt"]


def assert_clear_error(proc, *named):
    """Exit 1 with one `recursive: error:` line naming `named`; no traceback, nor frames of one."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "recursive: error:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    error = proc.stderr[proc.stderr.index("recursive: error:"):]
    assert error.count("\n") == 1 and not re.search(r'File ".*", line \d+', error), error
    for text in named:
        assert text in error, error


def test_unwritable_run_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = recursive_run(blocker / "rd")
    assert_clear_error(proc, str(blocker))
    assert proc.stderr.startswith("recursive: error:"), proc.stderr


def fill_disk_at(limit):
    """preexec_fn: every write past `limit` bytes fails with EFBIG, as on a full disk."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_full_disk_during_data_preparation_is_a_clear_error(tmp_path):
    rd = tmp_path / "rd"
    proc = recursive_run(rd, preexec=fill_disk_at(64 << 10))  # the training shards are larger
    assert_clear_error(proc, str(rd), "File too large")
    assert records(rd) == []


def test_full_disk_during_training_is_a_clear_error_and_recovers(reference_run, tmp_path):
    # 1.5 MiB lets the data preparation through (1.3 MB at most) and stops generation 0's
    # trainer as it saves the model (2.1 MB); once the disk is freed, the same command ends
    # with the reference run's lineage
    rd = tmp_path / "rd"
    proc = recursive_run(rd, preexec=fill_disk_at(1536 << 10))
    assert_clear_error(proc, str(rd), "File too large")
    assert all(e["status"] != "promoted" for e in records(rd))
    assert not (rd / G0 / "model").exists()
    again = recursive_run(rd)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    ref = records(reference_run["dir"])
    assert [e["model_sha256"] for e in records(rd)] == [e["model_sha256"] for e in ref]
    assert [comparable(e)["metrics"] for e in records(rd)] == [comparable(e)["metrics"] for e in ref]


def damage(model_dir, how):
    if how == "corrupt":
        weights = next(model_dir.glob("*.safetensors"))
        data = bytearray(weights.read_bytes())
        data[-100] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        shutil.rmtree(model_dir)


@pytest.fixture
def finished(reference_run, tmp_path):
    """A copy of the finished reference lineage, to damage."""
    assert reference_run["proc"].returncode == 0, "the reference run failed (see test_kill_resume.py)"
    rd = tmp_path / "rd"
    shutil.copytree(reference_run["dir"], rd)
    return rd


def forget(rd, generation):
    """As if the run had stopped before recording `generation`: its record goes."""
    kept = [ln for ln in (rd / "lineage.jsonl").read_text().splitlines() if json.loads(ln)["generation"] < generation]
    (rd / "lineage.jsonl").write_text("".join(ln + "\n" for ln in kept))


@pytest.mark.parametrize("how", ["corrupt", "missing"])
def test_damaged_parent_model_is_refused(how, finished):
    rd = finished
    damage(rd / G0 / "model", how)
    # generation 1 is redone from scratch: its proposal reads generation 0's model (the proposer)
    shutil.rmtree(rd / G1)
    forget(rd, 1)
    proc = recursive_run(rd)
    assert_clear_error(proc, "sha256", "gen_000/attempt_01")
    assert [e["status"] for e in records(rd)] == ["promoted"]
    assert not (rd / G1 / "model").exists()


def test_model_damaged_before_its_record_is_not_promoted(finished):
    rd = finished
    # generation 1 was evaluated and gated (gate.json says promote), then the run stopped
    # before recording it, and its weights were damaged meanwhile. (A missing model is no
    # such case: the loop trains it again, and promotes it only if it matches the sha256.)
    forget(rd, 1)
    damage(rd / G1 / "model", "corrupt")
    proc = recursive_run(rd)
    assert_clear_error(proc, "sha256", "gen_001/attempt_01")
    assert [e["status"] for e in records(rd)] == ["promoted"]
