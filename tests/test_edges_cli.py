"""The edges a user touches, through the real CLI: run directories are never taken over,
every config error arrives before any work in one line per problem, and check-plan
refuses what it cannot check honestly."""

import contextlib
import io
import json
import socket
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recursive import cli
from recursive.config import ConfigError, compose_config, compose_typed, flatten
from recursive.run_config import seed_plan


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "recursive.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def in_process(*argv) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue() + err.getvalue()


# ------------------------------------------------------------------ run directories
def test_a_directory_with_other_files_is_not_taken_over(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.txt").write_text("x")
    rc, text = in_process("run", "experiment=smoke", f"run_dir={d}")
    assert rc == cli.EXIT_USAGE and "thesis.txt" in text and "did not create" in text, text
    assert sorted(p.name for p in d.iterdir()) == ["thesis.txt"]  # nothing written beside it


def test_empty_run_dir_value_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, text = in_process("run", "experiment=smoke", "run_dir=")
    assert rc == cli.EXIT_USAGE and "run_dir" in text and "Traceback" not in text, text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '"a string"'])
def test_a_damaged_config_json_is_one_line(tmp_path, content):
    d = tmp_path / "rd"
    d.mkdir()
    (d / "config.json").write_text(content)
    rc, text = in_process("run", "experiment=smoke", f"run_dir={d}")
    assert rc == cli.EXIT_USAGE and "config.json" in text and "Traceback" not in text, text
    assert len(text.strip().splitlines()) == 1
    assert sorted(p.name for p in d.iterdir()) == ["config.json"]


# ------------------------------------------------------------------ config errors, before any work
@pytest.mark.parametrize("override,named", [
    ("hparams.lr=abc", "hparams.lr"), ("lineage.seed=-1", "lineage.seed"), ("train.precision=fp8", "train.precision"),
    ("proposer.candidates=-1", "proposer.candidates"), ("budget.max_train_tokens=-1", "budget.max_train_tokens"),
    ("budget.min_param_ratio=5", "budget.min_param_ratio"), ("hparams.batch_size=0", "hparams.batch_size"),
    ("train.num_processes=0", "train.num_processes"), ("+foo.bar=1", "foo"),
    ("train.strategy=zero9", "train.strategy"), ("+proposer.temprature=1", "temprature"),
])
def test_bad_value_is_one_line_before_any_work(override, named, tmp_path):
    rc, text = in_process("run", "experiment=smoke", override, f"run_dir={tmp_path / 'rd'}")
    assert rc == cli.EXIT_USAGE and named in text and "Traceback" not in text, text
    assert all(line.startswith("recursive: error: ") for line in text.strip().splitlines()), text
    assert not (tmp_path / "rd").exists()


def test_seed_plan_that_does_not_fit_the_budget_fails_before_any_work(tmp_path):
    rc, text = in_process("run", "experiment=smoke", "budget.min_train_tokens=299999", f"run_dir={tmp_path / 'rd'}")
    assert rc == cli.EXIT_USAGE and "seed plan" in text and "min_train_tokens" in text, text
    assert not (tmp_path / "rd").exists()


KEYS = sorted(k for k in flatten(compose_config(["experiment=smoke"])) if not k.startswith("evaluate.gate."))
VALUES = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.none(), st.text(alphabet="abcxyz-_ 019.", max_size=8),
                   st.lists(st.integers(-3, 3), max_size=3))


def _hydra(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # quoted: hydra keeps it a string
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return json.dumps(value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.one_of(st.sampled_from(KEYS), st.sampled_from(["lineage.bogus", "budget.nope", "zzz"])),
       value=VALUES, add=st.booleans())
def test_any_override_is_a_config_or_one_clear_error(key, value, add):
    """Whatever the override, composing either gives a config or a ConfigError naming the
    key; never another exception. Through the CLI, a refused one exits 2, no traceback,
    and writes nothing."""
    override = f"{'++' if add else ''}{key}={_hydra(value)}"
    try:
        compose_typed(["experiment=smoke", override])
    except ConfigError as e:
        msg = str(e)
        assert msg.strip(), override
        assert key.split(".")[-1] in msg or key.split(".")[0] in msg or "seed plan" in msg, (override, msg)
        import tempfile
        from pathlib import Path
        with tempfile.TemporaryDirectory() as tmp:
            rc, text = in_process("run", "experiment=smoke", override, f"run_dir={Path(tmp) / 'rd'}")
            assert rc == cli.EXIT_USAGE and "Traceback" not in text, (override, text)
            assert not (Path(tmp) / "rd").exists()


# ------------------------------------------------------------------ check-plan
def test_check_plan_refuses_a_huge_file(tmp_path, child_plan):
    p = tmp_path / "big.json"
    p.write_text(" " * (2 << 20) + json.dumps(child_plan))  # 2 MiB of whitespace before a valid plan
    proc = run_cli("check-plan", str(p), "experiment=smoke")
    assert proc.returncode == 1 and "larger than 1,048,576 bytes" in proc.stdout, proc.stdout + proc.stderr
    proc = run_cli("check-plan", "/dev/zero", "experiment=smoke", timeout=60)  # bounded read, not 24 GB
    assert proc.returncode == 1 and "larger than" in proc.stdout, proc.stdout + proc.stderr


def test_check_plan_refuses_duplicate_keys(tmp_path, child_plan):
    text = json.dumps(child_plan)
    p = tmp_path / "dup.json"
    p.write_text(text[:-1] + ', "rationale": "again"}')
    proc = run_cli("check-plan", str(p), "experiment=smoke")
    assert proc.returncode == 1 and 'duplicate key "rationale"' in proc.stdout, proc.stdout


def test_a_key_with_a_newline_cannot_forge_a_line(tmp_path, child_plan):
    child_plan["data"]["mixture"]["x\nplan.json: valid (1 parameters"] = 0.5
    p = tmp_path / "forge.json"
    p.write_text(json.dumps(child_plan))
    proc = run_cli("check-plan", str(p), "experiment=smoke")
    assert proc.returncode == 1
    # a forged line would start with "plan.json: valid", not with this file's path
    assert all(line.startswith(f"{p}: ") for line in proc.stdout.strip().splitlines()), proc.stdout
    assert "\\n" in proc.stdout  # the newline is shown escaped


def test_check_plan_generation_zero_without_a_run_dir_and_negative_refused(tmp_path):
    seed = seed_plan(compose_config(["experiment=smoke"])).model_dump(mode="json")
    p = tmp_path / "seed.json"
    p.write_text(json.dumps(seed))
    proc = run_cli("check-plan", str(p), "experiment=smoke", "--generation", "0")
    assert proc.returncode == 0 and "checked as generation 0" in proc.stdout, proc.stdout + proc.stderr
    proc = run_cli("check-plan", str(p), "experiment=smoke")  # as generation 1: the same size as its parent
    assert proc.returncode == 1 and "at most 0.85 x parent" in proc.stdout, proc.stdout
    proc = run_cli("check-plan", str(p), "experiment=smoke", "--generation", "-1")
    assert proc.returncode == 2 and "--generation must be >= 0" in proc.stderr, proc.stderr


# ------------------------------------------------------------------ proposer endpoint before generation 0
def test_unreachable_openai_endpoint_fails_before_anything_is_written(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rd = tmp_path / "rd"
    proc = run_cli("run", "experiment=smoke", "proposer=openai", f"proposer.base_url=http://127.0.0.1:{port}/v1",
                   "proposer.max_retries=0", f"run_dir={rd}")
    assert proc.returncode == 1 and f"127.0.0.1:{port}" in proc.stderr and "check_endpoint" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not rd.exists()
