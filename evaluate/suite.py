"""The eval suite: what runs on every candidate successor, what each metric means, and
the integrity check that comes first.

Each eval declares its metrics with their direction (which way is better) and the files
it reads; `<attempt>/eval_suite.json` records those declarations with the data hashes,
and `<attempt>/eval.json` holds the numbers (a nested dict of numbers, as in the lineage).
"""

from __future__ import annotations

import json
from pathlib import Path

from recursive.io import atomic_write_json, read_json, sha256_file

EVAL_CODE = Path(__file__).parent

# metric path -> "lower" or "higher" is better; `*` stands for each domain
DIRECTIONS = {
    "heldout_loss.*": "lower", "arithmetic.exact_match": "higher", "arithmetic.digits_*": "higher",
    "proposer.valid_plan_rate": "higher", "proposer.code_valid_rate": "higher",
    "fidelity.kl_to_parent": "lower",
    "safety.refusal_rate": "higher", "safety.over_refusal_rate": "lower",
    "safety.canary_recall": "lower", "safety.canary_prefix_match": "lower",
    "safety.distinct_1": "higher", "safety.distinct_2": "higher", "safety.entropy": "higher",
    "safety.code_policy_incidents": "lower", "safety.selected_code_incidents": "lower",
    "integrity.ok": "higher",
}

SUITE = {
    "heldout_loss": {"metrics": ["heldout_loss.*"], "data": ["eval"]},
    "arithmetic": {"metrics": ["arithmetic.exact_match", "arithmetic.digits_*"], "data": ["eval_items:arithmetic"]},
    "proposer_competence": {"metrics": ["proposer.valid_plan_rate", "proposer.code_valid_rate"], "data": []},
    "fidelity": {"metrics": ["fidelity.kl_to_parent"], "data": ["eval"]},
    "refusal": {"metrics": ["safety.refusal_rate", "safety.over_refusal_rate"], "data": ["eval_items:safety"]},
    "memorisation": {"metrics": ["safety.canary_recall", "safety.canary_prefix_match"], "data": ["eval_items:canary"]},
    "collapse": {"metrics": ["safety.distinct_1", "safety.distinct_2", "safety.entropy"], "data": ["eval"]},
    "code_policy": {"metrics": ["safety.code_policy_incidents", "safety.selected_code_incidents"], "data": []},
    "integrity": {"metrics": ["integrity.ok"], "data": ["eval", "eval_items", "code"]},
}


def eval_files(run_dir: Path, manifest: dict) -> dict[str, str]:
    """Every file the evals read or run, relative path -> sha256 expected."""
    files = {e["path"]: e["sha256"] for e in manifest["eval"].values()}
    files.update({e["path"]: e["sha256"] for e in manifest["eval_items"].values()})
    return files


def code_hashes() -> dict[str, str]:
    return {f"evaluate/{p.name}": sha256_file(p) for p in sorted(EVAL_CODE.glob("*.py"))}


def lm_eval_files(include_path: str | None) -> dict[str, str]:
    """Every file under `evaluate.lm_eval.include_path` (task YAMLs, their local data and
    any task code), absolute path -> sha256; data a YAML reads from elsewhere is not covered."""
    if not include_path:
        return {}
    root = Path(include_path).expanduser().resolve()
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return {str(p): sha256_file(p) for p in sorted(files)}


def _include_path(run_dir: Path) -> str | None:
    # the loop writes the resolved config before it takes the snapshot
    p = run_dir / "config.json"
    return ((read_json(p).get("evaluate") or {}).get("lm_eval") or {}).get("include_path") if p.exists() else None


def snapshot(run_dir: Path, manifest: dict) -> dict:
    """Hashes of eval data and eval code, as the lineage starts."""
    out = {"data": eval_files(run_dir, manifest), "code": code_hashes()}
    include = _include_path(run_dir)
    if include:
        out["lm_eval"] = {"include_path": str(Path(include).expanduser().resolve()), "files": lm_eval_files(include)}
    return out


def verify(run_dir: Path, reference: dict) -> list[str]:
    """Mismatches between the eval files and code now and the lineage-start snapshot."""
    out = []
    for rel, sha in sorted(reference["data"].items()):
        p = run_dir / rel
        if not p.exists():
            out.append(f"eval file {rel} is missing")
        elif sha256_file(p) != sha:
            out.append(f"eval file {rel} changed since the lineage started")
    now = code_hashes()
    for rel, sha in sorted(reference["code"].items()):
        if now.get(rel) != sha:
            out.append(f"eval code {rel} changed since the lineage started")
    out += [f"eval code {rel} added since the lineage started" for rel in sorted(set(now) - set(reference["code"]))]
    if "lm_eval" in reference:
        then, now = reference["lm_eval"]["files"], lm_eval_files(reference["lm_eval"]["include_path"])
        out += [f"lm_eval task file {p} is missing" for p in sorted(set(then) - set(now))]
        out += [f"lm_eval task file {p} changed since the lineage started"
                for p in sorted(then) if p in now and now[p] != then[p]]
        out += [f"lm_eval task file {p} added since the lineage started" for p in sorted(set(now) - set(then))]
    return out


def write_declarations(path: Path, manifest: dict) -> None:
    decl = {name: {"metrics": {m: DIRECTIONS[m] for m in spec["metrics"]},
                   "data_sha256": _data_hashes(manifest, spec["data"])} for name, spec in SUITE.items()}
    atomic_write_json(path, decl)


def _data_hashes(manifest: dict, kinds: list[str]) -> dict[str, str]:
    out = {}
    for kind in kinds:
        if kind == "eval":
            out.update({e["path"]: e["sha256"] for e in manifest["eval"].values()})
        elif kind.startswith("eval_items"):
            task = kind.split(":", 1)[1] if ":" in kind else None
            out.update({e["path"]: e["sha256"] for e in manifest["eval_items"].values() if task in (None, e["task"])})
        elif kind == "code":
            out.update(code_hashes())
    return out


def load_items(run_dir: Path, manifest: dict, task: str) -> list[dict]:
    for entry in manifest["eval_items"].values():
        if entry["task"] == task:
            return [json.loads(ln) for ln in (run_dir / entry["path"]).read_text().splitlines() if ln.strip()]
    return []


def read_reference(run_dir: Path) -> dict | None:
    p = run_dir / "integrity.json"
    return read_json(p) if p.exists() else None
