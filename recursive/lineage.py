"""The lineage record: `<run_dir>/lineage.jsonl`, append-only, one event per line.

Events: {"event": "attempt", ...} when a generation attempt is decided (promoted,
rejected or failed; `recursive.attempt.AttemptRecord`), {"event": "stopped", ...} when
the lineage cannot go on, and the launchers' job events. Readers take the last record per
(generation, attempt), so a record re-appended after a crash between writing and
mirroring never shows twice. Below the record: the views `lineage show` and
`lineage compare` print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recursive.attempt import STATUSES, AttemptRecord
from recursive.io import append_jsonl, iter_jsonl, read_jsonl, warn

LINEAGE_FILE = "lineage.jsonl"
CONFIG_FILE = "config.json"  # the resolved config the lineage was started with


def append(run_dir: Path, record: dict) -> None:
    append_jsonl(run_dir / LINEAGE_FILE, record)


def events(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / LINEAGE_FILE)


def record(run_dir: Path, rec: AttemptRecord) -> None:
    append(run_dir, rec.to_event())


def attempts(run_dir: Path) -> list[AttemptRecord]:
    """Decided attempts in order, the last record winning per (generation, attempt). An
    "attempt" event no reader could use (`AttemptRecord.from_event` refuses it) is skipped
    with a warning naming its line."""
    path = Path(run_dir) / LINEAGE_FILE
    latest: dict[tuple[int, int], AttemptRecord] = {}
    for n, e in iter_jsonl(path):
        if e.get("event") == "attempt":
            try:
                rec = AttemptRecord.from_event(e)
            except ValueError as err:
                warn(f"{path} line {n}: not a usable attempt record ({err}), skipped")
                continue
            latest[(rec.generation, rec.attempt)] = rec
    return [latest[k] for k in sorted(latest)]


def find(run_dir: Path, generation: int, attempt: int) -> AttemptRecord | None:
    for e in attempts(run_dir):
        if (e.generation, e.attempt) == (generation, attempt):
            return e
    return None


def promoted(run_dir: Path) -> list[AttemptRecord]:
    return [e for e in attempts(run_dir) if e.status == "promoted"]


def last_stop(run_dir: Path) -> dict | None:
    """The last "stopped" event (one whose reason is not a string is skipped, with a warning)."""
    path = Path(run_dir) / LINEAGE_FILE
    stops = []
    for n, e in iter_jsonl(path):
        if e.get("event") == "stopped":
            if not isinstance(e.get("reason"), str):
                warn(f"{path} line {n}: a stopped record whose reason is not a string, skipped")
                continue
            stops.append(e)
    return stops[-1] if stops else None


def show_json(run_dir: Path) -> dict[str, Any]:
    """`lineage show --json`: one entry per attempt; plan_path and model_path are absolute,
    so a script can open them from wherever it runs."""
    keys = ("generation", "attempt", "status", "parent", "plan_path", "model_path", "params",
            "metrics", "gate", "proposer", "code_origin", "timings", "reason")
    root = Path(run_dir).resolve()
    done = attempts(run_dir)
    gens = []
    for e in done:
        g = {k: getattr(e, k) for k in keys}
        for k in ("plan_path", "model_path"):
            g[k] = None if g[k] is None else str(root / g[k])
        # how this model's own proposals fared once trained: its children's outcomes
        kids = [c for c in done if c.parent == e.id]
        g["children"] = {"attempts": len(kids), "promoted": sum(c.status == "promoted" for c in kids)}
        gens.append(g)
    return {"run_dir": str(root), "generations": gens, "stopped": last_stop(run_dir)}


def show_table(run_dir: Path) -> str:
    data = show_json(run_dir)
    losses = sorted({k for g in data["generations"]
                     for k in ((g.get("metrics") or {}).get("heldout_loss") or {})})
    head = (["gen", "att", "status", "params", "code"] + [f"loss:{k}" for k in losses]
            + ["arith", "valid_plans", "win_vs_rand", "margin", "exposure", "contam", "children", "gate"])
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
                       _num((m.get("proposer") or {}).get("win_rate_vs_random")),
                       _num((m.get("safety") or {}).get("refusal_margin")),
                       _num((m.get("safety") or {}).get("canary_exposure_max")),
                       _num((m.get("contamination") or {}).get("max")),
                       (f"{g['children']['promoted']}/{g['children']['attempts']}" if g["children"]["attempts"] else "-"),
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


# ---------------------------------------------------------------------- several lineages
# The metrics a comparison shows first (paths in eval.json); safety.* metrics follow.
HEADLINE = ("heldout_loss.mean", "arithmetic.exact_match", "proposer.valid_plan_rate")


def flat_metrics(metrics: dict) -> dict[str, float]:
    """A record's numeric metrics as {"heldout_loss.mean": 4.3, ...}."""
    out: dict[str, float] = {}

    def walk(tree: dict, prefix: str) -> None:
        for k, v in tree.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{prefix}{k}"] = float(v)

    walk(metrics or {}, "")
    return out


def describe(run_dir: Path) -> dict[str, Any]:
    """Name, proposer and label of one lineage (labels tell two `smoke` lineages apart)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
    name = (cfg.get("lineage") or {}).get("name") or run_dir.name
    proposer = (cfg.get("proposer") or {}).get("name") or "?"
    return {"run_dir": str(run_dir), "name": name, "proposer": proposer,
            "label": f"{run_dir.name} ({name}, proposer={proposer})"}


def safety_metrics(metrics: list[dict]) -> list[str]:
    """The safety metric paths any of these metric trees holds."""
    keys = {k for m in metrics for k in flat_metrics(m)
            if k.startswith(("safety.", "contamination."))
            and not k.endswith(("_items", ".samples", ".problems", "_candidates"))}  # counts, not metrics
    return sorted(keys) + (["heldout_loss.safety"] if any("heldout_loss.safety" in flat_metrics(m) for m in metrics) else [])


def compare_json(run_dirs: list[Path]) -> dict[str, Any]:
    """Several lineages side by side: per lineage a summary and, per generation, the
    promoted attempt's params and metrics (None where the lineage has none)."""
    out = []
    all_records: list[AttemptRecord] = []
    for rd in run_dirs:
        recs = attempts(Path(rd))
        all_records += recs
        stop = last_stop(Path(rd))
        prom = [r for r in recs if r.status == "promoted"]
        per_gen = {}
        for r in prom:
            per_gen[r.generation] = {"attempt": r.attempt, "params": r.params, **flat_metrics(r.metrics)}
        counts = {s: sum(1 for r in recs if r.status == s) for s in STATUSES}
        last = prom[-1] if prom else None
        first = prom[0] if prom else None
        summary = {"generations": 1 + max((r.generation for r in prom), default=-1), "attempts": len(recs), **counts,
                   "final_generation": None if last is None else last.generation,
                   "final_params": None if last is None else last.params,
                   "stopped": stop.get("reason") if stop else None}
        if last is not None:
            fm, f0 = flat_metrics(last.metrics), flat_metrics(first.metrics)
            summary["final"] = {k: fm.get(k) for k in HEADLINE}
            summary["loss_change_vs_gen0"] = (None if "heldout_loss.mean" not in fm or "heldout_loss.mean" not in f0
                                              else fm["heldout_loss.mean"] - f0["heldout_loss.mean"])
        out.append({**describe(Path(rd)), "summary": summary, "per_generation": per_gen})
    metrics = ["params"] + [k for k in HEADLINE if any(k in flat_metrics(r.metrics) for r in all_records)]
    metrics += [k for k in safety_metrics([r.metrics for r in all_records]) if k not in metrics]
    return {"lineages": out, "metrics": metrics}


def compare_table(run_dirs: list[Path]) -> str:
    """`recursive lineage compare`: a summary row per lineage, then one row per
    (generation, metric) with one column per lineage."""
    data = compare_json(run_dirs)
    ls = data["lineages"]
    head = ["lineage", "proposer", "gens", "attempts", "promoted", "rejected", "failed", "final params",
            "final loss", "loss vs gen0", "arith", "valid_plans", "stopped"]
    rows = [head]
    for lin in ls:
        s = lin["summary"]
        fin = s.get("final") or {}
        rows.append([lin["label"], lin["proposer"], str(s["generations"]), str(s["attempts"]), str(s["promoted"]),
                     str(s["rejected"]), str(s["failed"]), f"{s['final_params']:,}" if s.get("final_params") else "-",
                     _num(fin.get("heldout_loss.mean")), _signed(s.get("loss_change_vs_gen0")),
                     _num(fin.get("arithmetic.exact_match")), _num(fin.get("proposer.valid_plan_rate")),
                     (s.get("stopped") or "-")[:40]])
    lines = _align(rows)
    names = [f"[{i + 1}]" for i in range(len(ls))]
    rows = [["gen", "metric"] + [f"{n} {lin['label']}" for n, lin in zip(names, ls)]]
    gens = sorted({g for lin in ls for g in lin["per_generation"]})
    for g in gens:
        for m in data["metrics"]:
            vals = [(lin["per_generation"].get(g) or {}).get(m) for lin in ls]
            if all(v is None for v in vals):
                continue
            rows.append([str(g), m] + [(f"{int(v):,}" if m == "params" and v is not None else _num(v)) for v in vals])
    return "\n".join(lines + [""] + _align(rows))


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _signed(x: Any) -> str:
    return "-" if x is None else f"{x:+.3f}"
