"""The lineage record: `<run_dir>/lineage.jsonl`, append-only, one event per line.

Events: {"event": "attempt", ...} when a generation attempt is decided (promoted,
rejected or failed), {"event": "stopped", ...} when the lineage cannot go on. Readers
take the last record per (generation, attempt), so a record re-appended after a crash
between writing and mirroring never shows twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recursive.io import append_jsonl, read_jsonl

LINEAGE_FILE = "lineage.jsonl"
STATUSES = ("promoted", "rejected", "failed")


def attempt_dir(run_dir: Path, generation: int, attempt: int) -> Path:
    return run_dir / "generations" / f"gen_{generation:03d}" / f"attempt_{attempt:02d}"


def attempt_id(generation: int, attempt: int) -> str:
    return f"gen_{generation:03d}/attempt_{attempt:02d}"


def append(run_dir: Path, record: dict) -> None:
    append_jsonl(run_dir / LINEAGE_FILE, record)


def events(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / LINEAGE_FILE)


def attempts(run_dir: Path) -> list[dict]:
    """Decided attempts in order, the last record winning per (generation, attempt)."""
    latest: dict[tuple[int, int], dict] = {}
    for e in events(run_dir):
        if e.get("event") == "attempt":
            latest[(e["generation"], e["attempt"])] = e
    return [latest[k] for k in sorted(latest)]


def find(run_dir: Path, generation: int, attempt: int) -> dict | None:
    for e in attempts(run_dir):
        if e["generation"] == generation and e["attempt"] == attempt:
            return e
    return None


def promoted(run_dir: Path) -> list[dict]:
    return [e for e in attempts(run_dir) if e["status"] == "promoted"]


def show_json(run_dir: Path) -> dict[str, Any]:
    keys = ("generation", "attempt", "status", "parent", "plan_path", "model_path", "params",
            "metrics", "gate", "proposer", "code_origin", "timings", "reason")
    gens = [{k: e.get(k) for k in keys} for e in attempts(run_dir)]
    stops = [e for e in events(run_dir) if e.get("event") == "stopped"]
    return {"run_dir": str(run_dir), "generations": gens, "stopped": stops[-1] if stops else None}


def show_table(run_dir: Path) -> str:
    data = show_json(run_dir)
    losses = sorted({k for g in data["generations"]
                     for k in ((g.get("metrics") or {}).get("heldout_loss") or {})})
    head = ["gen", "att", "status", "params", "code"] + [f"loss:{k}" for k in losses] + ["arith", "valid_plans", "gate"]
    rows = [head]
    for g in data["generations"]:
        m = g.get("metrics") or {}
        hl = m.get("heldout_loss") or {}
        gate = g.get("gate") or {}
        rows.append([str(g["generation"]), str(g["attempt"]), g["status"],
                     f"{g['params']:,}" if g.get("params") else "-", g.get("code_origin") or "-"]
                    + [_num(hl.get(k)) for k in losses]
                    + [_num((m.get("arithmetic") or {}).get("exact_match")),
                       _num((m.get("proposer") or {}).get("valid_plan_rate")),
                       "pass" if gate.get("passed") else "; ".join(gate.get("reasons") or [g.get("reason") or "-"])[:70]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if data["stopped"]:
        lines.append(f"lineage stopped: {data['stopped'].get('reason')}")
    return "\n".join(lines)


def _num(x: Any) -> str:
    return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
