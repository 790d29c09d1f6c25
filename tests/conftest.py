import os

import pytest

# tests never reach a wandb server, and keep the recipe smoke test's torch single-threaded
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def child_plan():
    """A plan that passes `check-plan experiment=smoke` (the seed plan's model is its parent,
    this one is smaller); a fresh dict per test, so a test may change it."""
    from recursive.config import compose_config
    from recursive.run_config import seed_plan
    d = seed_plan(compose_config(["experiment=smoke"])).model_dump(mode="json")
    d["model"].update(num_layers=1, intermediate_size=64)
    return d
