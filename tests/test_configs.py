"""Every YAML in configs/ composes (litgpt's test_config_hub habit)."""

from pathlib import Path

import pytest

from recursive.config import ConfigError, compose_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GROUP_FILES = sorted(p for p in CONFIGS.glob("*/*.yaml"))


def test_there_are_groups():
    assert {p.parent.name for p in GROUP_FILES} >= {"model", "data", "proposer", "train", "evaluate",
                                                     "launcher", "logger", "experiment"}


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_yaml_composes(path, tmp_path):
    extra = []
    if (path.parent.name, path.stem) == ("proposer", "replay"):  # replay needs its plan files
        (tmp_path / "plan.json").write_text("{}")
        extra = [f"proposer.plans=[{tmp_path / 'plan.json'}]"]
        with pytest.raises(ConfigError, match="proposer.plans must be a non-empty list"):
            compose_config([f"{path.parent.name}={path.stem}"])
    if (path.parent.name, path.stem) == ("model", "pretrained"):  # needs the checkpoint to start from
        extra = ["model.name_or_path=/path/to/checkpoint"]
        with pytest.raises(ConfigError, match="model.name_or_path"):
            compose_config([f"{path.parent.name}={path.stem}"])
    cfg = compose_config([f"{path.parent.name}={path.stem}"] + extra)
    assert cfg["run_dir"] and cfg["lineage"]["generations"] >= 0


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="experiment"):
        compose_config(["experiment=does_not_exist"])
    with pytest.raises(ConfigError, match="lineage.generations"):
        compose_config(["lineage.generations=many"])
    with pytest.raises(ConfigError, match="param_ratio"):
        compose_config(["budget.param_ratio=1.5"])


def test_gpu_experiment_seed_plan_is_30_to_120m_params_at_context_512_and_in_its_budget():
    """experiment=gpu (one H100/H200, generation 0 + 3 in 15 minutes): no GPU in CI, so its
    seed plan is checked here as `recursive run` checks it before any work."""
    import torch
    from transformers import LlamaForCausalLM

    from recursive.run_config import seed_plan, seed_plan_problems, typed
    from recursive.train.modeling import llama_config
    cfg = compose_config(["experiment=gpu"])
    assert cfg["train"]["precision"] == "bf16" and cfg["train"]["compile"] is True
    plan = seed_plan(cfg)
    with torch.device("meta"):  # counted on the instantiated model, nothing allocated
        model = LlamaForCausalLM(llama_config(plan.model, cfg["data"]["vocab_size"], eos_token_id=0))
    n = sum(p.numel() for p in model.parameters())
    assert 30e6 <= n <= 120e6, n
    assert plan.model.context >= 512 and cfg["evaluate"]["context"] >= 512
    assert plan.train_tokens() <= cfg["budget"]["max_train_tokens"]
    assert seed_plan_problems(typed(cfg)) == []
    # a checkpoint as generation 0 composes with it; its children train at context 512
    pre = compose_config(["experiment=gpu", "model=pretrained", "model.name_or_path=/path/to/checkpoint"])
    assert pre["model"]["context"] == 512 and pre["train"]["precision"] == "bf16"
