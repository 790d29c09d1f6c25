"""Edges of the files the project writes and reads, as a hostile user finds them: file
modes under the umask, a lineage.jsonl with damaged lines, a dashboard written into a
directory. The readers are driven through the real CLI, in a subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from recursive import lineage
from recursive.attempt import AttemptRecord
from recursive.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl

REPO = Path(__file__).resolve().parents[1]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "recursive.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# ---------------------------------------------------------------------------- umask
@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "plan.json", {"a": 1})
        atomic_write_text(tmp_path / "report.html", "<html></html>")
        atomic_write_text(tmp_path / "report.html", "<html>again</html>")  # replacing keeps the umask's mode
        append_jsonl(tmp_path / "lineage.jsonl", {"event": "x"})
    finally:
        os.umask(old)
    for name in ("plan.json", "report.html", "lineage.jsonl"):
        assert mode(tmp_path / name) == expected, name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_dashboard_honours_the_umask(tmp_path):
    rd = good_run(tmp_path / "run")
    old = os.umask(0o022)
    try:
        from recursive.dashboard import write_dashboard
        out = write_dashboard([rd], tmp_path / "d.html")
    finally:
        os.umask(old)
    assert mode(out) == 0o644


# ---------------------------------------------------------------------------- damaged lineage.jsonl
def good_run(rd: Path) -> Path:
    rd.mkdir(parents=True, exist_ok=True)
    lineage.record(rd, AttemptRecord(generation=0, attempt=1, status="promoted", proposer="seed",
                                     params=123_456, metrics={"heldout_loss": {"mean": 4.25}},
                                     gate={"passed": True, "reasons": []}))
    return rd


BAD_LINES = {  # line 1 is the good record
    2: (b'\xff\xfe{"event": "attempt"}\n', "UTF-8"),
    3: (b"42\n", "not a JSON object"),
    4: (b'{"event": "attempt", "generation": "two", "attempt": 1, "status": "promoted"}\n', "generation"),
    5: (b"this is not json\n", "not valid JSON"),
    6: (b'{"event": "attempt", "generation": 1, "attempt": 1, "status": "winning"}\n', "status"),
    7: (b'{"event": "attempt", "generation": -1, "attempt": 1, "status": "failed"}\n', "generation"),
    8: (b'{"event": "attempt", "generation": true, "attempt": 1, "status": "failed"}\n', "generation"),
    9: (b'["a", "list"]\n', "not a JSON object"),
    10: (b'{"event": "attempt", "generation": 2, "attempt": 1, "status": "failed", "metrics": 42}\n', "metrics"),
    11: (b'{"event": "attempt", "generation": 2, "attempt": 2, "status": "failed", "params": "many"}\n', "params"),
    12: (b'{"event": "attempt", "generation": 3', "interrupted write"),  # torn last line, no newline
}


@pytest.fixture
def damaged(tmp_path):
    rd = good_run(tmp_path / "run")
    with open(rd / lineage.LINEAGE_FILE, "ab") as f:
        for n in sorted(BAD_LINES):
            f.write(BAD_LINES[n][0])
    assert len((rd / lineage.LINEAGE_FILE).read_bytes().split(b"\n")) == 12
    return rd


def assert_warned(stderr: str):
    assert "Traceback" not in stderr, stderr
    warnings = [l for l in stderr.splitlines() if "warning" in l]
    for n, (_, why) in BAD_LINES.items():
        hits = [l for l in warnings if f"lineage.jsonl line {n}:" in l]
        assert len(hits) == 1, (n, stderr)  # each bad line named once, even though the file is read many times
        assert why in hits[0] and "skipped" in hits[0], (n, hits[0])
    assert "line 1:" not in stderr


def test_lineage_show_survives_damaged_lines(damaged):
    p = cli("lineage", "show", damaged)
    assert p.returncode == 0, p.stderr
    assert_warned(p.stderr)
    assert "promoted" in p.stdout and "123,456" in p.stdout and "4.250" in p.stdout


def test_lineage_show_json_survives_damaged_lines(damaged):
    p = cli("lineage", "show", damaged, "--json")
    assert p.returncode == 0, p.stderr
    assert_warned(p.stderr)
    gens = json.loads(p.stdout)["generations"]
    assert [(g["generation"], g["attempt"], g["status"], g["params"]) for g in gens] == [(0, 1, "promoted", 123_456)]


def test_lineage_compare_survives_damaged_lines(damaged, tmp_path):
    other = good_run(tmp_path / "other")
    p = cli("lineage", "compare", damaged, other)
    assert p.returncode == 0, p.stderr
    assert_warned(p.stderr)
    assert "123,456" in p.stdout
    p = cli("lineage", "compare", damaged, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["lineages"][0]["summary"]["promoted"] == 1


def test_lineage_dashboard_survives_damaged_lines(damaged, tmp_path):
    out = tmp_path / "out.html"
    p = cli("lineage", "dashboard", damaged, "-o", out)
    assert p.returncode == 0, p.stderr
    assert_warned(p.stderr)
    html = out.read_text(encoding="utf-8")
    assert "gen_000/attempt_01" in html or "123,456" in html


def test_a_stopped_record_with_a_non_string_reason_is_skipped(tmp_path):
    rd = good_run(tmp_path / "run")
    with open(rd / lineage.LINEAGE_FILE, "ab") as f:
        f.write(b'{"event": "stopped", "reason": "budget spent"}\n{"event": "stopped", "reason": {"x": [1]}}\n')
    for args in (["show", rd], ["compare", rd], ["dashboard", rd, "-o", tmp_path / "d.html"]):
        p = cli("lineage", *args)
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
        assert "lineage.jsonl line 3:" in p.stderr and "skipped" in p.stderr
    assert "lineage stopped: budget spent" in cli("lineage", "show", rd).stdout


def test_read_jsonl_accepts_a_whole_last_line_without_newline(tmp_path, capsys):
    p = tmp_path / "lineage.jsonl"
    p.write_bytes(b'{"a": 1}\n\n{"b": 2}')  # a blank line is no damage; a complete last record is kept
    assert read_jsonl(p) == [{"a": 1}, {"b": 2}]
    assert capsys.readouterr().err == ""
    append_jsonl(p, {"c": 3})  # the torn-line repair still keeps both records whole
    assert read_jsonl(p) == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_append_after_a_torn_line_keeps_the_new_record(tmp_path, capsys):
    p = tmp_path / "lineage.jsonl"
    p.write_bytes(b'{"a": 1}\n{"b": ')
    append_jsonl(p, {"c": 3})
    assert read_jsonl(p) == [{"a": 1}, {"c": 3}]
    err = capsys.readouterr().err
    assert "line 2: not valid JSON, skipped" in err and err.count("\n") == 1


def test_attempt_record_from_event_rejects_bad_fields():
    ok = {"event": "attempt", "generation": 0, "attempt": 1, "status": "promoted"}
    assert AttemptRecord.from_event(ok).id == "gen_000/attempt_01"
    assert AttemptRecord.from_event({"generation": 0, "attempt": 0}).status == "failed"  # old records: no status
    for bad in ({"generation": "two"}, {"attempt": -1}, {"generation": 1.0}, {"status": "winning"},
                {"metrics": []}, {"gate": "pass"}, {"params": True}, {"parent": 3}, {"parent": "nonsense"}):
        with pytest.raises(ValueError):
            AttemptRecord.from_event({**ok, **bad})


# ---------------------------------------------------------------------------- dashboard -o DIR
def test_dashboard_into_an_existing_directory(tmp_path):
    rd = good_run(tmp_path / "run")
    out_dir = tmp_path / "reports"
    out_dir.mkdir()
    p = cli("lineage", "dashboard", rd, "-o", out_dir)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    html = out_dir / "lineage.html"
    assert html.is_file() and "<html" in html.read_text(encoding="utf-8").lower()
    assert str(html) in p.stdout
