"""Mirror of the lineage into Weights & Biases (the run directory stays the truth).

One wandb run per generation attempt, grouped by lineage, offline by default with its
files under <run_dir>/wandb. Offline mode cannot call `use_artifact` (FACTS.md), so each
child's artifacts carry the parent's model digest and run id in their metadata.
`logger=none` gives a no-op mirror (nanochat's DummyWandb habit).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from recursive import lineage
from recursive.config import flatten
from recursive.io import atomic_write_json, read_json

MARKER = "wandb_mirrored.json"


class NullMirror:
    def attempt(self, record: dict, d: Path) -> None:
        return None


class WandbMirror:
    def __init__(self, cfg: dict, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.group = cfg["lineage"]["name"]
        self.prefix = hashlib.sha256(str(run_dir).encode()).hexdigest()[:8]

    def run_id(self, g: int, a: int) -> str:
        return f"{self.group}-{self.prefix}-g{g:03d}-a{a:02d}"

    def attempt(self, record: dict, d: Path) -> None:
        if (d / MARKER).exists():
            return
        import wandb

        g, a = record["generation"], record["attempt"]
        parent = None
        if record.get("parent"):
            pg, pa = (int(x.split("_")[1]) for x in record["parent"].split("/"))
            parent = lineage.find(self.run_dir, pg, pa)
        os.environ.setdefault("WANDB_SILENT", "true")
        lc = self.cfg["logger"]
        run = wandb.init(project=lc.get("project", "recursive"), group=self.group, job_type="generation",
                         name=f"gen{g}-attempt{a}", id=self.run_id(g, a), dir=str(self.run_dir),
                         mode=lc.get("mode", "offline"), tags=[record["status"], f"proposer:{record['proposer']}"],
                         config={"generation": g, "attempt": a, "parent": record.get("parent"),
                                 "parent_run_id": None if parent is None else self.run_id(parent["generation"], parent["attempt"]),
                                 "proposer": record["proposer"], "code_origin": record.get("code_origin"),
                                 "plan": read_json(d / "plan.json") if (d / "plan.json").exists() else None},
                         settings=wandb.Settings(x_disable_stats=True, console="off"))
        try:
            metrics = {f"metrics/{k}": v for k, v in flatten(record.get("metrics") or {}).items()
                       if isinstance(v, (int, float))}
            run.log({"generation": g, "params": record.get("params") or 0,
                     "promoted": int(record["status"] == "promoted"), **metrics})
            run.summary["status"] = record["status"]
            run.summary["gate_reasons"] = "; ".join(record["gate"].get("reasons", []))
            links = {"parent": record.get("parent"),
                     "parent_model_sha256": None if parent is None else parent.get("model_sha256"),
                     "parent_run_id": None if parent is None else self.run_id(parent["generation"], parent["attempt"])}
            if (d / "plan.json").exists():
                art = wandb.Artifact(f"{self.group}-plan-g{g:03d}-a{a:02d}", type="plan", metadata=links)
                art.add_file(str(d / "plan.json"))
                art.add_file(str(d / "recipe.py"))
                run.log_artifact(art)
            if record["status"] != "failed" and (d / "model" / "config.json").exists():
                art = wandb.Artifact(f"{self.group}-model-g{g:03d}-a{a:02d}", type="model",
                                     metadata=dict(links, sha256=record.get("model_sha256"), params=record.get("params")))
                art.add_dir(str(d / "model"))
                run.log_artifact(art)
            for name in ("eval.json", "gate.json"):
                if (d / name).exists():
                    art = wandb.Artifact(f"{self.group}-{name.split('.')[0]}-g{g:03d}-a{a:02d}", type="eval_report",
                                         metadata=links)
                    art.add_file(str(d / name))
                    run.log_artifact(art)
        finally:
            run.finish()
        atomic_write_json(d / MARKER, {"run_id": self.run_id(g, a), "mode": lc.get("mode", "offline")})


def make_mirror(cfg: dict, run_dir: Path):
    return NullMirror() if cfg["logger"].get("name") == "none" else WandbMirror(cfg, run_dir)
