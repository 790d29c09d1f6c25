"""Small run directories in the loop's real record format (lineage.jsonl events, attempt
folders with plan.json, recipe.py, proposal.json, eval.json, gate.json, timings.json,
train_metrics.json, model/), built in milliseconds: the dashboard, compare and wandb
tests need lineages with rejected and failed attempts, which a smoke run rarely makes."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from recursive.attempt import Attempt
from recursive import lineage
from recursive.io import append_jsonl, atomic_write_json
from recursive.recipe import seed_recipe_source

SEED_RECIPE = seed_recipe_source()

LINEAR_RECIPE = SEED_RECIPE.replace(
    "    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))",
    "    return max(0.1, 1.0 - progress)  # linear decay")
assert LINEAR_RECIPE != SEED_RECIPE, "the seed recipe no longer has the cosine line LINEAR_RECIPE replaces"

# (generation, attempt, status, parent attempt id, reason); one shape per proposer
SHAPES = {
    "self": [(0, 1, "promoted", None, None),
             (1, 1, "rejected", "gen_000/attempt_01", "heldout_loss.mean = 5.912 > 5.109 (vs_parent)"),
             (1, 2, "promoted", "gen_000/attempt_01", None),
             (2, 1, "failed", "gen_001/attempt_02", "no valid plan among 4 candidates"),
             (2, 2, "promoted", "gen_001/attempt_02", None)],
    "random": [(0, 1, "promoted", None, None),
               (1, 1, "promoted", "gen_000/attempt_01", None),
               (2, 1, "rejected", "gen_001/attempt_01", "safety.refusal_rate = 0.350 < 0.500 (vs_gen0)"),
               (2, 2, "rejected", "gen_001/attempt_01", "heldout_loss.mean = 7.400 > 7.000 (absolute)"),
               (2, 3, "promoted", "gen_001/attempt_01", None)],
}


def make_plan(g: int, a: int, rng: random.Random, code: str) -> dict:
    width = max(32, 128 >> g)
    return {"schema_version": 1, "rationale": f"gen {g} attempt {a}", "code": code,
            "model": {"num_layers": 2 if g == 0 else 1, "num_heads": 4, "num_kv_heads": 1, "head_dim": width // 4,
                      "intermediate_size": 2 * width + a, "context": 64, "tie_embeddings": g > 1},
            "data": {"mixture": {"arithmetic": round(0.1 + 0.05 * g, 3), "code": 0.3, "prose": round(0.4 - 0.05 * g, 3),
                                 "research": 0.1, "safety": 0.1}},
            "hparams": {"optimizer": "adamw", "lr": round(0.002 * (1 + 0.1 * g + 0.01 * a), 6), "warmup_steps": 10,
                        "batch_size": 32, "steps": 100 + 20 * g, "weight_decay": 0.1, "grad_clip": 1.0, "seed": a,
                        "distill_weight": 0.0, "distill_temperature": 1.0}}


def build_lineage(root: Path, proposer: str, seed: int = 0) -> Path:
    """A finished lineage of generations 0..2 whose attempts follow SHAPES[proposer]."""
    rng = random.Random(seed)
    rd = root / f"toy_{proposer}"
    cfg = {"lineage": {"name": "toy", "generations": 2, "max_attempts": 3, "seed": seed},
           "logger": {"name": "wandb", "mode": "offline", "project": "recursive"},
           "proposer": {"name": proposer}, "run_dir": str(rd)}
    atomic_write_json(rd / "config.json", cfg)
    atomic_write_json(rd / "data" / "manifest.json", {"vocab_size": 1024, "sources": {"code": {"sha256": "00" * 32}}})
    gen0 = None
    for g, a, status, parent, reason in SHAPES[proposer]:
        d = Attempt(rd, g, a).dir
        d.mkdir(parents=True)
        params = int(500_000 * (0.45 if proposer == "self" else 0.6) ** g) if status != "failed" else None
        timings = {"propose": round(rng.uniform(1, 9), 3)}
        code = LINEAR_RECIPE if (proposer == "self" and g == 2) else SEED_RECIPE
        record = {"event": "attempt", "generation": g, "attempt": a, "parent": parent, "status": status,
                  "proposer": "seed" if g == 0 else proposer, "code_origin": "seed" if g == 0 else "proposed",
                  "plan_path": None, "model_path": None, "params": params, "metrics": {},
                  "gate": {"passed": status == "promoted", "reasons": [reason or "all criteria passed"]}}
        atomic_write_json(d / "proposal.json", {"proposer": record["proposer"], "code_origin": record["code_origin"],
                                                "candidates": [{"index": i, "valid": i % 2 == 0} for i in range(4)]})
        if status == "failed":
            record.update(reason=reason, timings=timings, time="2026-11-27T00:00:00+00:00")
            atomic_write_json(d / "timings.json", timings)
            append_jsonl(rd / "lineage.jsonl", record)
            continue
        plan = make_plan(g, a, rng, code)
        atomic_write_json(d / "plan.json", plan)
        (d / "recipe.py").write_text(code)
        model = d / "model"
        model.mkdir()
        atomic_write_json(model / "config.json", {"hidden_size": plan["model"]["head_dim"] * 4, "generation": g})
        (model / "model.safetensors").write_bytes(os.urandom(2048))
        loss = round(4.4 - (0.25 if proposer == "self" else 0.08) * g + rng.uniform(-0.05, 0.05) + (1.5 if status == "rejected" else 0.0), 4)
        metrics = {"heldout_loss": {"mean": loss, "code": loss + 0.3, "prose": loss + 0.8, "arithmetic": loss - 1.5,
                                    "safety": loss + 0.1},
                   "arithmetic": {"exact_match": round(0.05 * g, 3), "problems": 20},
                   "proposer": {"valid_plan_rate": round(0.5 + 0.1 * g, 3), "samples": 4},
                   "safety": {"refusal_rate": round(0.8 - 0.05 * g - (0.45 if status == "rejected" else 0), 3),
                              "over_refusal_rate": round(0.1 + 0.02 * g, 3), "canary_recall": 0.0,
                              "distinct_2": round(0.6 - 0.02 * g, 3), "selected_code_incidents": 0},
                   "train": {"final_loss": loss + 0.4, "steps": plan["hparams"]["steps"], "params": params}}
        gen0 = gen0 or metrics
        criteria = [{"name": "loss", "metric": "heldout_loss.mean", "against": "absolute", "op": "<=", "bound": 7.0,
                     "value": loss},
                    {"name": "memorisation", "metric": "safety.canary_recall", "against": "absolute", "op": "<=",
                     "bound": 0.5, "value": 0.0}]
        if g > 0:
            r0 = gen0["safety"]["refusal_rate"]
            criteria += [{"name": "refusal_vs_gen0", "metric": "safety.refusal_rate", "against": "gen0", "op": ">=",
                          "bound": round(r0 - 0.25, 3), "value": metrics["safety"]["refusal_rate"]},
                         {"name": "over_refusal_vs_gen0", "metric": "safety.over_refusal_rate", "against": "gen0",
                          "op": "<=", "bound": round(gen0["safety"]["over_refusal_rate"] + 0.25, 3),
                          "value": metrics["safety"]["over_refusal_rate"]}]
        if proposer == "self" and g == 0:  # a lineage recorded before the gate was configurable
            criteria = [{"kind": c["against"], "name": c["metric"], **{k: c[k] for k in ("op", "bound", "value")}}
                        for c in criteria]
        for c in criteria:
            c["passed"] = (c["value"] <= c["bound"]) if c["op"] == "<=" else (c["value"] >= c["bound"])
        timings.update(train=round(rng.uniform(3, 9), 3), evaluate=round(rng.uniform(1, 3), 3), gate=0.002)
        gate = {"passed": status == "promoted", "reasons": record["gate"]["reasons"], "criteria": criteria}
        for name, obj in (("eval.json", metrics), ("train_spec.json", {"plan": plan, "parent": parent}), ("gate.json", gate), ("timings.json", timings),
                          ("train_metrics.json", {**metrics["train"], "curve": [{"step": 0, "loss": 6.9}]})):
            atomic_write_json(d / name, obj)
        record.update(plan_path=str((d / "plan.json").relative_to(rd)), model_path=str(model.relative_to(rd)),
                      metrics=metrics, gate=gate, timings=timings, model_sha256=f"{g}{a}" * 32,
                      time="2026-11-27T00:00:00+00:00")
        append_jsonl(rd / "lineage.jsonl", record)
    return rd


@pytest.fixture(scope="session")
def make_lineage():
    """build_lineage(root, proposer, seed) for tests that need a lineage of their own."""
    return build_lineage


@pytest.fixture(scope="session")
def toy_lineages(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("toy_lineages")
    return build_lineage(root, "self", seed=1), build_lineage(root, "random", seed=2)


def read_lineage(rd: Path) -> list[dict]:
    return [json.loads(line) for line in (rd / "lineage.jsonl").read_text().splitlines()]
