"""Opening a run directory for the orchestrator: one holder at a time, the same config as
before, the environment recorded, eval integrity checked, data prepared.

`RunDir` is what every stage shares: the typed config, the data manifest, the tokenizer,
the launcher and the wandb mirror, plus the few lineage-wide facts the stages read
(the seed plan, the budget for a parent, the integrity breaches so far).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from recursive import lineage
from recursive.config import dump_yaml, resume_conflicts
from recursive.errors import ConfigError, StageError
from recursive.io import atomic_write_json, atomic_write_text
from recursive.launch import make_launcher
from recursive.launch.local import hold_lock
from recursive.plan import Plan
from recursive.run_config import RunConfig, seed_plan
from recursive.validate import Limits

LOCK_FILE, ENV_FILE = "orchestrator.lock", "env.json"
BASE_FILE = "base_config.json"  # model=pretrained: the family config every child is built from
MARKER = ".recursive-run"  # written into every run directory `recursive run` creates


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def log(msg: str) -> None:
    print(f"[recursive {datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


class RunDir:
    def __init__(self, cfg: RunConfig, tree: dict):
        self.cfg, self.tree = cfg, tree  # typed, and the same as config.json's plain tree
        self.path = Path(cfg.run_dir).resolve()
        self._lock = None
        self.mirror = None

    # ---------------------------------------------------------------- set-up
    def claim(self) -> None:
        """Refuse a directory `recursive run` did not create (nothing is written into it):
        a run directory is new, empty, marked (MARKER), or one written before the marker
        existed (a config.json that is a lineage's config)."""
        p = self.path
        if not p.exists() or (p / MARKER).exists():
            return
        if not p.is_dir():
            raise ConfigError(f"run_dir {p} exists and is not a directory; choose a new run_dir")
        names = sorted(x.name for x in p.iterdir())
        if not names:
            return
        stored = p / lineage.CONFIG_FILE
        if stored.exists():
            read_stored_config(stored)  # a damaged config.json is refused in one line
            return  # a run directory from before the marker
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise ConfigError(f"run_dir {p} exists and holds files `recursive run` did not create ({shown}); "
                          "choose a new run_dir (nothing was written)")

    def open(self) -> "RunDir":
        self.claim()
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / MARKER).exists():
            atomic_write_text(self.path / MARKER, "created by `recursive run`; a run directory of recursive\n")
        self._lock = hold_lock(self.path / LOCK_FILE)
        if self._lock is None:
            holder = (self.path / LOCK_FILE).read_text().strip() or "?"
            raise StageError(f"another `recursive run` holds {self.path} ({holder}); two orchestrators "
                             "on one run directory would duplicate attempts: wait for it or stop it")
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"pid {os.getpid()} on {platform.node()} since {now()}\n")
        self._lock.flush()
        stored_path = self.path / lineage.CONFIG_FILE
        if stored_path.exists():
            conflicts = resume_conflicts(read_stored_config(stored_path), self.tree)
            if conflicts:
                raise ConfigError(f"run_dir {self.path} was started with a different configuration "
                                  f"(differs in: {', '.join(conflicts[:8])}); use a new run_dir or the same overrides")
        atomic_write_json(stored_path, self.tree)
        atomic_write_text(self.path / "config.yaml", dump_yaml(self.tree))
        if not (self.path / ENV_FILE).exists():
            atomic_write_json(self.path / ENV_FILE, environment())
        from recursive.data.prepare import prepare_data  # heavy imports only when running
        from recursive.evaluate import integrity
        reference = integrity.read_reference(self.path)
        if reference is not None:
            # before prepare_data, which would quietly rebuild a changed eval file
            self.check_integrity(when="lineage restart")
        self.base, tok_src = self._base(), None
        if self.base is not None:  # model=pretrained: the checkpoint's tokenizer is the lineage's
            from recursive import pretrained
            tok_src = pretrained.tokenizer_source(self.cfg.model)
        t0 = time.perf_counter()
        self.manifest = prepare_data(self.tree["data"], self.path, seed=self.cfg.lineage.seed, tokenizer=tok_src,
                                     model_vocab_size=None if self.base is None else int(self.base["vocab_size"]))
        self.prepare_seconds = time.perf_counter() - t0
        if reference is None:  # the lineage starts: this is what every evaluation is checked against
            atomic_write_json(self.path / "integrity.json", integrity.snapshot(self.path, self.manifest))
        self.vocab_size = int(self.manifest["vocab_size"])
        from recursive.wandb_log import make_mirror
        self.mirror = make_mirror(self.tree, self.path)
        self.launcher = make_launcher(self.cfg, log)
        return self

    def release(self) -> None:
        """Let go of the run directory (another orchestrator, or another one in this
        process, may take it); the kernel does the same when the process ends."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()

    def _base(self) -> dict | None:
        """The lineage's family config (model=pretrained: generation 0's checkpoint config,
        kept in BASE_FILE from the first start so that a resume builds the same children);
        None: the built-in Llama."""
        from recursive import pretrained
        if not pretrained.is_pretrained(self.cfg.model):
            return None
        path = self.path / BASE_FILE
        if path.exists():
            import json
            return json.loads(path.read_text())
        base = pretrained.base_config(self.cfg.model)
        atomic_write_json(path, base)
        return base

    # ---------------------------------------------------------------- lineage-wide facts
    @property
    def tokenizer(self) -> Path:
        return self.path / self.manifest["tokenizer"]

    def seed_plan(self) -> Plan:
        return seed_plan(self.cfg)

    def limits(self, parent_params: int | None, parent_model: dict | None = None,
               generation: int | None = None) -> Limits:
        """The budget for a child (of generation `generation`: budget.equal_compute's target)
        of a parent with `parent_params` and plan model section `parent_model` (None: generation 0)."""
        limits = Limits.from_config(self.cfg, self.vocab_size, parent_params, self.manifest, base=self.base,
                                    parent_model=parent_model, generation=generation)
        if parent_params is None and self.base is not None:
            from recursive.validate import for_checkpoint
            return for_checkpoint(limits)
        return limits

    def check_integrity(self, when: str) -> list[str]:
        """Compare eval data and code with the lineage-start snapshot; a breach is recorded in
        the lineage and fails every later gate of this run directory."""
        from recursive.evaluate import integrity
        problems = integrity.verify(self.path, integrity.read_reference(self.path))
        if problems:
            lineage.append(self.path, {"event": "integrity", "when": when, "problems": problems, "time": now()})
            log(f"INTEGRITY BREACH ({when}): " + "; ".join(problems))
        return problems

    def breaches(self) -> list[str]:
        return [p for e in lineage.events(self.path) if e.get("event") == "integrity" for p in e.get("problems") or []]


def read_stored_config(path: Path) -> dict:
    """A run directory's config.json, or ConfigError naming the file and what is wrong."""
    import json
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not the JSON config `recursive run` writes ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:120]}); use a new run_dir, or restore the file") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("lineage"), dict):
        raise ConfigError(f"{path} is not the config of a lineage (expected a JSON object with a 'lineage' "
                          f"section, got {type(cfg).__name__}); use a new run_dir, or restore the file")
    return cfg


def stdlib_digest() -> str:
    """sha256 of the running interpreter's standard-library sources: the embedded default
    data is read from them, so figures differ across Python versions (README)."""
    import hashlib
    from recursive.data.sources import _stdlib_files
    h = hashlib.sha256()
    for rel, text in _stdlib_files(True):  # the files the stdlib sources read (tests excluded)
        h.update(rel.encode() + b"\0" + hashlib.sha256(text.encode("utf-8", "replace")).digest())
    return h.hexdigest()


def environment() -> dict:
    """What env.json records: the interpreter, packages and git revision that ran."""
    pkgs = {}
    for name in ("torch", "transformers", "accelerate", "deepspeed", "hydra-core", "wandb", "tokenizers",
                 "pydantic", "xgrammar", "numpy", "recursive"):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    return {"python": sys.version, "platform": platform.platform(), "packages": pkgs, "git_revision": rev,
            "stdlib_sha256": stdlib_digest(), "argv": sys.argv, "time": now()}
