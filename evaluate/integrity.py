"""The tamper-evidence check: hashes of the eval data, the eval code (every `evaluate/*.py`)
and any lm-eval task files, taken once when the lineage starts (`snapshot`, written to
`<run_dir>/integrity.json`) and compared before every evaluation (`verify`); a mismatch is
an integrity breach that fails every later gate of the run directory.
"""

from __future__ import annotations

from pathlib import Path

from recursive.io import read_json, sha256_file

EVAL_CODE = Path(__file__).parent


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


def read_reference(run_dir: Path) -> dict | None:
    p = run_dir / "integrity.json"
    return read_json(p) if p.exists() else None
