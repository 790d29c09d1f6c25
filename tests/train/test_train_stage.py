"""The training stage runs the plan's recipe for real and saves a loadable model."""

import json
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM

from recursive.io import atomic_write_json, atomic_write_text
from recursive.plan import Plan
from recursive.train.modeling import build_model


def run_stage(tmp_path, prepared, plan: Plan):
    cfg, run_dir, manifest, _ = prepared
    d = tmp_path / "attempt"
    atomic_write_text(d / "plan.json", plan.to_json())
    shards = {n: str(run_dir / e["path"]) for n, e in manifest["train"].items()}
    mixture = {n: 1 / len(shards) for n in shards}
    atomic_write_json(d / "train_spec.json", {"tokenizer": str(run_dir / manifest["tokenizer"]), "shards": shards,
                                              "mixture": mixture, "teacher": None, "threads": 1,
                                              "precision": "fp32", "log_every": 1})
    proc = subprocess.run([sys.executable, "-m", "recursive.train", str(d)], capture_output=True, text=True,
                          timeout=300)
    return d, proc


def test_trains_and_saves_a_loadable_model(tmp_path, prepared):
    _, _, _, plan = prepared
    d, proc = run_stage(tmp_path, prepared, plan)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((d / "train_metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["world_size"] == 1 and metrics["tokens_per_s"] > 0
    assert metrics["curve"][-1]["loss"] < metrics["curve"][0]["loss"]
    model = AutoModelForCausalLM.from_pretrained(d / "model")
    assert sum(p.numel() for p in model.parameters()) == metrics["params"]


def test_the_recipe_schedule_is_really_used(tmp_path, prepared):
    _, run_dir, manifest, plan = prepared
    frozen = plan.code.replace("def lr_lambda(step, total_steps, warmup_steps):",
                               "def lr_lambda(step, total_steps, warmup_steps):\n    return 0.0")
    d, proc = run_stage(tmp_path, prepared, plan.model_copy(update={"code": frozen}))
    assert proc.returncode == 0, proc.stderr[-2000:]
    trained = AutoModelForCausalLM.from_pretrained(d / "model")
    init = build_model(plan.model, trained.config.vocab_size, eos_token_id=trained.config.eos_token_id,
                       seed=plan.hparams.seed)
    # lr multiplier 0 from the recipe: AdamW leaves every weight where initialisation put it
    for (name, a), b in zip(init.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_recipe_loss_is_really_used(tmp_path, prepared):
    _, _, _, plan = prepared
    nan_loss = plan.code.replace('    w = hp["distill_weight"]\n', '    return ce * float("nan")\n    w = hp["distill_weight"]\n')
    assert nan_loss != plan.code
    d, proc = run_stage(tmp_path, prepared, plan.model_copy(update={"code": nan_loss}))
    assert proc.returncode == 2
    err = json.loads((d / "train_error.json").read_text())["error"]
    assert "recipe loss() returned" in err and not (d / "model").exists()
