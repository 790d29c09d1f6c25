"""Atomic, append-only file helpers: the run directory is the lineage's source of truth,
so a crash at any instant leaves either the old file or the new one, never half of one.

Files are created with mode 0o666 and the kernel applies the process's umask (and a
directory's default ACL), as `open()` would: under umask 022 colleagues on a shared
cluster can read plan.json, eval.json and the dashboard. (`tempfile.mkstemp` would make
them 0600 whatever the umask.) No umask is read or changed, so nothing here races
another thread creating files."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Iterator


def _create_temp(directory: Path, name: str) -> tuple[int, Path]:
    """A new, empty, exclusively created temp file next to the target, mode 0o666 less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temp file name", str(directory))


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def append_jsonl(path: Path, obj: Any) -> None:
    """One line per record, fsynced; a torn last line (crash mid-write) is skipped on read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(obj, sort_keys=True, default=str) + "\n"
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a torn line from a crash: end it so this record stays whole
                line = "\n" + line
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def warn(message: str) -> None:
    """One line on stderr; the same message is printed once per process (a file read many
    times by one command names each bad line once)."""
    if message in _warned:
        return
    _warned.add(message)
    print(f"recursive: warning: {message}", file=sys.stderr, flush=True)


_warned: set[str] = set()


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, object) of each good line of a JSON-lines file. A bad line (not UTF-8,
    not JSON, not a JSON object) is skipped with a warning naming the file and the line; a
    bad last line without a newline is the torn end of an interrupted write. Blank lines
    are skipped silently."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    for i, raw in enumerate(lines):
        n = i + 1
        if not raw.strip():
            continue
        why = None
        try:
            obj = json.loads(raw.decode("utf-8-sig" if i == 0 else "utf-8"))
        except UnicodeDecodeError:
            why = "not valid UTF-8"
        except RecursionError:
            why = "not valid JSON (nested too deeply)"
        except ValueError:  # json.JSONDecodeError, and an integer too long to convert
            why = "not valid JSON"
        else:
            if not isinstance(obj, dict):
                why = "not a JSON object"
        if why is not None:
            if i == len(lines) - 1:  # the file does not end in a newline
                why = "an interrupted write (no newline at the end)"
            warn(f"{path} line {n}: {why}, skipped")
            continue
        yield n, obj


def read_jsonl(path: Path) -> list[Any]:
    """The good lines of a JSON-lines file, as objects (see `iter_jsonl`)."""
    return [obj for _, obj in iter_jsonl(path)]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(root: Path) -> str:
    """Digest of a directory: relative paths and contents of every file, sorted."""
    h = hashlib.sha256()
    for p in sorted(q for q in Path(root).rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0" + sha256_file(p).encode() + b"\n")
    return h.hexdigest()
