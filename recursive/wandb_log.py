"""Mirror of the lineage into Weights & Biases (the run directory stays the truth).

Each decided attempt becomes three wandb runs, one per stage (job_type propose, train,
evaluate), built from the files in the attempt folder, grouped by lineage, tagged with
status, proposer and generation. Artifacts: the plan (plan.json + proposal), the recipe
code, the data manifest, the model and the eval report (eval.json + gate.json). Every run
logs one point keyed by `generation` (wandb's charts plot metrics against it).

Offline (the default; files under <run_dir>/wandb) wandb cannot call `use_artifact`
(notes/FACTS.md), so each artifact's metadata names its inputs: the parent model's
artifact name, digest and run id, and within the attempt the plan/recipe/manifest it was
built from. Online, the same inputs become real `use_artifact` edges; `replay` (the CLI's
`recursive lineage sync-wandb RUN_DIR`) rebuilds a finished lineage that way on a server.
`logger=none` gives a no-op mirror (nanochat's DummyWandb habit).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from recursive import lineage
from recursive.attempt import Attempt, AttemptRecord
from recursive.config import flatten
from recursive.io import atomic_write_json, read_json

MARKER = "wandb_mirrored.json"
SYNC_MARKER = "wandb_synced.json"
STAGES = ("propose", "train", "evaluate")
# per-run overhead kept small (three runs per attempt): no system stats, console capture,
# pip freeze or code saving; env.json in the run directory has the packages and git revision,
# and only the train run collects wandb's own metadata (git, host)
_SETTINGS = dict(x_disable_stats=True, console="off", x_save_requirements=False, save_code=False, disable_code=True,
                 disable_job_creation=True)
_LEAN = dict(_SETTINGS, x_disable_meta=True, x_disable_machine_info=True, disable_git=True)


class NullMirror:
    def attempt(self, record: AttemptRecord, d: Path) -> None:
        return None


def lineage_key(run_dir: Path) -> str:
    return hashlib.sha256(str(run_dir).encode()).hexdigest()[:8]


class WandbMirror:
    """`attempt(record, attempt_dir)` mirrors one decided attempt; idempotent via MARKER,
    stage by stage (a crash between two stages resumes at the next one)."""

    def __init__(self, cfg: dict, run_dir: Path, mode: str | None = None, marker: str = MARKER,
                 project: str | None = None, entity: str | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.name = cfg["lineage"]["name"]
        self.prefix = lineage_key(self.run_dir)
        self.group = f"{self.name}-{self.prefix}"
        lc = cfg.get("logger") or {}
        self.mode = mode or lc.get("mode", "offline")
        self.project = project or lc.get("project", "recursive")
        self.entity = entity or lc.get("entity")
        self.marker = marker
        self.proposer = (cfg.get("proposer") or {}).get("name")
        self.strict = False  # True: a mirror failure raises (tests, sync-wandb)
        self.link_inputs = self.mode == "online"  # real use_artifact edges (wandb refuses them offline)
        self.seconds: list[float] = []  # wall time per mirrored attempt (reported in docs/lineage.md)

    # ------------------------------------------------------------------ names
    def run_id(self, g: int, a: int, stage: str) -> str:
        return f"{self.group}-g{g:03d}-a{a:02d}-{stage}"

    def artifact_name(self, kind: str, g: int, a: int) -> str:
        return f"{self.group}-{kind}-g{g:03d}-a{a:02d}"

    # ------------------------------------------------------------------ mirror
    def attempt(self, record: AttemptRecord, d: Path) -> None:
        """Mirror one attempt. A failure is reported and left for the next resume (the marker
        stays incomplete): the run directory is the truth, wandb must not stop a lineage."""
        try:
            self._attempt(record, Path(d))
        except Exception as e:  # noqa: BLE001
            if self.strict:
                raise
            print(f"[recursive] wandb mirror of gen {record.generation} attempt {record.attempt} "
                  f"failed ({type(e).__name__}: {e}); the run directory is complete, the mirror is retried on "
                  "resume", file=sys.stderr, flush=True)

    def _attempt(self, record: AttemptRecord, d: Path) -> None:
        marker = read_json(d / self.marker) if (d / self.marker).exists() else {}
        if marker.get("complete", bool(marker)):  # a marker without "complete" predates stage runs
            return
        t0 = time.perf_counter()
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        marker.update(complete=False, mode=self.mode, group=self.group)
        stages = marker.setdefault("stages", {})
        arts = marker.setdefault("artifacts", {})
        parent_link = self._parent_link(record)
        for stage in STAGES:
            if stage in stages:
                continue
            built = self._stage(wandb, stage, record, d, parent_link, arts)
            if built is None:
                stages[stage] = None  # nothing on disk for this stage (a failed attempt)
            else:
                stages[stage] = built
            atomic_write_json(d / self.marker, marker)
        marker["complete"] = True
        marker["seconds"] = round(time.perf_counter() - t0, 3)
        self.seconds.append(marker["seconds"])
        atomic_write_json(d / self.marker, marker)

    def _parent_link(self, record: AttemptRecord) -> dict | None:
        """The parent's model artifact: name, digest (from its marker, else computed from its
        files, which gives the same digest), run id and the lineage record's sha256."""
        if not record.parent:
            return None
        pg, pa = record.parent_key
        pd = Attempt(self.run_dir, pg, pa).dir
        pm = read_json(pd / self.marker) if (pd / self.marker).exists() else {}
        if not pm.get("artifacts", {}).get("model") and (pd / MARKER).exists():
            pm = read_json(pd / MARKER)
        model = (pm.get("artifacts") or {}).get("model") or {}
        pmodel = Attempt(self.run_dir, pg, pa).model
        digest = model.get("digest") or (dir_digest(pmodel) if pmodel.is_dir() else None)
        prec = lineage.find(self.run_dir, pg, pa)
        return {"parent": record.parent, "parent_model_artifact": self.artifact_name("model", pg, pa),
                "parent_model_digest": digest, "parent_run_id": self.run_id(pg, pa, "train"),
                "parent_model_sha256": None if prec is None else prec.model_sha256}

    def _files(self, stage: str, at: Attempt) -> dict[str, list[tuple[str, Path]]]:
        """artifact kind -> files for this stage, only those on disk."""
        want = {"propose": {"plan": [at.plan, at.proposal, at.candidates, at.prompt], "recipe": [at.recipe]},
                "train": {"data_manifest": [self.run_dir / "data" / "manifest.json", at.train_spec],
                          "model": [at.model]},
                "evaluate": {"eval_report": [at.eval, at.gate_json, at.gate_txt]}}[stage]
        out: dict[str, list[tuple[str, Path]]] = {}
        for kind, names in want.items():
            paths = []
            for p in names:
                if p.is_dir() and any(p.iterdir()):
                    paths.append(("dir", p))
                elif p.is_file():
                    paths.append(("file", p))
            if paths and (kind != "model" or (at.model / "config.json").exists()):
                out[kind] = paths
        return out

    def _stage(self, wandb, stage: str, record: AttemptRecord, d: Path, parent: dict | None,
               arts: dict) -> dict | None:
        at = Attempt.from_dir(d)
        files = self._files(stage, at)
        started = {"propose": True, "train": at.train_spec.exists() or at.train_metrics.exists(),
                   "evaluate": at.eval.exists()}[stage]
        if not started:
            return None  # a failed attempt stopped before this stage
        g, a = record.generation, record.attempt
        timings = record.timings or (read_json(at.timings) if at.timings.exists() else {})
        tags = [record.status, f"proposer:{record.proposer}", f"gen:{g}", f"lineage:{self.name}", stage]
        config = {"generation": g, "attempt": a, "stage": stage, "lineage": self.name, "run_dir": str(self.run_dir),
                  "status": record.status, "proposer": record.proposer, "code_origin": record.code_origin,
                  "lineage_proposer": self.proposer, **(parent or {"parent": None})}
        if stage == "propose" and at.plan.exists():
            config["plan"] = read_json(at.plan)
        run = wandb.init(project=self.project, entity=self.entity, group=self.group, job_type=stage,
                         name=f"gen{g}-a{a}-{stage}", id=self.run_id(g, a, stage), dir=str(self.run_dir),
                         mode=self.mode, tags=tags, config=config, resume="allow",
                         settings=wandb.Settings(**(_SETTINGS if stage == "train" else _LEAN)))
        try:
            run.define_metric("generation")
            run.define_metric("*", step_metric="generation")
            point: dict[str, Any] = {"generation": g, f"seconds/{stage}": timings.get(stage)}
            if stage == "propose":
                cands = (read_json(at.proposal) if at.proposal.exists() else {}).get("candidates") or []
                point.update({"propose/candidates": len(cands),
                              "propose/valid_candidates": sum(1 for c in cands if c.get("valid")),
                              "params_planned": record.params})
            elif stage == "train":
                tm = read_json(at.train_metrics) if at.train_metrics.exists() else {}
                point.update({f"train/{k}": v for k, v in tm.items() if k != "curve"})
                point["params"] = record.params
            else:
                point.update({f"metrics/{k}": v for k, v in flatten(record.metrics or {}).items()})
                point.update({"params": record.params, "promoted": int(record.status == "promoted"),
                              f"seconds/gate": timings.get("gate")})
                for c in record.gate.get("criteria") or []:
                    key = f"gate/{criterion_metric(c)}/{criterion_against(c)}"
                    point[f"{key}/bound"], point[f"{key}/passed"] = c.get("bound"), int(bool(c.get("passed")))
            run.log({k: v for k, v in point.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            run.summary["status"] = record.status
            run.summary["gate_reasons"] = "; ".join(record.gate.get("reasons") or [])
            # inputs: the parent model (it proposed this plan / teaches this child), and the
            # artifacts of the stages before this one in the same attempt
            inputs = {}
            if parent and parent.get("parent_model_digest") and stage in ("propose", "train"):
                inputs["parent_model"] = {"name": parent["parent_model_artifact"], "digest": parent["parent_model_digest"]}
            upstream = {"train": ("plan", "recipe"), "evaluate": ("model",)}.get(stage, ())
            inputs.update({k: {"name": arts[k]["name"], "digest": arts[k]["digest"]} for k in upstream if k in arts})
            if self.link_inputs:
                for ref in inputs.values():
                    run.use_artifact(f"{ref['name']}:latest")
            built = {}
            for kind, paths in files.items():
                meta = {"generation": g, "attempt": a, "lineage": self.name, "status": record.status,
                        "inputs": inputs, **(parent or {"parent": None})}
                if kind == "model":
                    meta.update(sha256=record.model_sha256, params=record.params)
                art = wandb.Artifact(self.artifact_name(kind, g, a), type=kind, metadata=meta)
                for how, p in paths:
                    if how == "dir":
                        art.add_dir(str(p), name=p.name, policy="immutable")
                    else:
                        art.add_file(str(p), name=str(p.relative_to(d)) if p.is_relative_to(d) else p.name,
                                     policy="immutable")
                run.log_artifact(art, tags=[f"gen{g}", record.status])
                arts[kind] = built[kind] = {"name": art.name.split(":")[0], "digest": art.digest}
            return {"run_id": self.run_id(g, a, stage), "artifacts": built}
        finally:
            run.finish()


def criterion_metric(c: dict) -> str:
    """The metric a gate criterion bounds ({"metric", "against"} today; {"name", "kind"} in
    lineages recorded before the gate became configurable)."""
    return str(c.get("metric") or c.get("name") or "?")


def criterion_against(c: dict) -> str:
    return str(c.get("against") or c.get("kind") or "?")


def dir_digest(path: Path) -> str:
    """The digest wandb gives an artifact holding this directory under its own name
    (the same files give the same digest, online or offline)."""
    import wandb

    art = wandb.Artifact("digest", type="model")
    art.add_dir(str(path), name=Path(path).name)
    return art.manifest.digest()


def make_mirror(cfg: dict, run_dir: Path):
    return NullMirror() if cfg["logger"].get("name") == "none" else WandbMirror(cfg, run_dir)


# ---------------------------------------------------------------------- replay (sync-wandb)
def server_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").rstrip("/")


def reachable(url: str, timeout: float = 5.0) -> str | None:
    """None when the wandb server answers, else why not."""
    import requests

    try:
        requests.get(url + "/healthz", timeout=timeout)
        return None
    except requests.RequestException as e:
        return f"{type(e).__name__}: {str(e)[:200]}"


def replay(run_dir: Path, mode: str = "online", project: str | None = None, entity: str | None = None) -> list[dict]:
    """Replay every decided attempt of a lineage, oldest first, as stage runs with real
    `use_artifact` edges (online). Idempotent per attempt through SYNC_MARKER."""
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json")
    mirror = WandbMirror(cfg, run_dir, mode=mode, marker=SYNC_MARKER, project=project, entity=entity)
    mirror.strict = True
    done = []
    for rec in lineage.attempts(run_dir):
        d = rec.where(run_dir).dir
        mirror.attempt(rec, d)
        done.append(read_json(d / SYNC_MARKER))
    return done


# ---------------------------------------------------------------------- reading .wandb files
def read_wandb_file(path: Path) -> Iterator[Any]:
    """Records of an offline `.wandb` file (wandb_internal_pb2.Record), decoded from the
    LevelDB-log framing: a 7-byte file header (":W&B", 0xBEE1, version), 32 KiB blocks,
    7-byte record headers (crc32, length, type full/first/middle/last); notes/FACTS.md."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a wandb datastore file")
    pos, buf = 7, b""
    block = 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk = data[pos:pos + length]
        pos += length
        if kind == 0 and length == 0:
            continue
        if kind in (1, 2):  # full, first
            buf = chunk
        else:  # middle, last
            buf += chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec
            buf = b""


def offline_artifacts(run_dir: Path) -> list[dict]:
    """Every artifact logged in <run_dir>/wandb/offline-run-*: run id, name, type, digest
    and metadata, read back from the .wandb files themselves."""
    out = []
    for f in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        for rec in read_wandb_file(f):
            if rec.WhichOneof("record_type") == "artifact":
                art = rec.artifact
                out.append({"run_id": art.run_id, "name": art.name, "type": art.type, "digest": art.digest,
                            "metadata": json.loads(art.metadata) if art.metadata else {}})
    return out
