import json
import os
import subprocess
import sys

import pytest


def check_plan(path, *extra):
    return subprocess.run([sys.executable, "-m", "recursive.cli", "check-plan", str(path), *extra],
                          capture_output=True, text=True, timeout=120)


def test_valid_child_plan_exits_0(tmp_path, child_plan):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(child_plan))
    proc = check_plan(p, "experiment=smoke")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_invalid_plan_lists_each_problem_by_field(tmp_path, child_plan):
    child_plan["hparams"]["lr"] = 3.0
    child_plan["data"]["mixture"]["secret_eval_set"] = 1.0
    child_plan["code"] = "import socket\n"
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(child_plan))
    proc = check_plan(p, "experiment=smoke")
    assert proc.returncode == 1
    assert "hparams.lr" in proc.stdout  # schema problems come first; fix them and the rest show
    child_plan["hparams"]["lr"] = 0.001
    p.write_text(json.dumps(child_plan))
    proc = check_plan(p, "experiment=smoke")
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 1 and len(lines) >= 3
    assert any("data.mixture.secret_eval_set" in ln for ln in lines)
    assert any(": code: " in ln and "socket" in ln for ln in lines)


@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02", b"not json", b"[]", b"{\"model\": {}}",
                                     b"1e999999", "{\"rationale\": \"\u2603\"}".encode()])
def test_garbage_never_tracebacks(tmp_path, content):
    p = tmp_path / "plan.json"
    p.write_bytes(content)
    proc = check_plan(p)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stdout.strip()


def test_missing_file_and_directory(tmp_path):
    for path in (tmp_path / "nope.json", tmp_path):
        proc = check_plan(path)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and "cannot read" in proc.stdout


def test_lineage_show_on_a_folder_without_lineage(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "recursive.cli", "lineage", "show", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no lineage" in proc.stderr
