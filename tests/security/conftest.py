import json
import os
import subprocess
import sys

import pytest

from recursive.config import compose_config
from recursive.run_config import seed_plan
from recursive.validate import Limits
from recursive.plan import ModelSpec, count_params

OVERRIDES = ["experiment=smoke"]


@pytest.fixture(scope="session")
def smoke_cfg():
    return compose_config(OVERRIDES)


@pytest.fixture(scope="session")
def child_plan(smoke_cfg):
    """A plan that passes every check of `check-plan experiment=smoke` (the seed plan's
    model is its parent), to carry the recipe under test in its `code`."""
    plan = seed_plan(smoke_cfg).model_dump(mode="json")
    plan["model"].update(num_layers=1, intermediate_size=64)
    return plan


@pytest.fixture(scope="session")
def limits_factory(smoke_cfg):
    def make(smoke_test=True):
        parent = count_params(ModelSpec(**seed_plan(smoke_cfg).model.model_dump()), 1024)
        lim = Limits.from_config(smoke_cfg, int(smoke_cfg["data"]["vocab_size"]), parent)
        lim.smoke_test = smoke_test
        return lim
    return make


def run_cli(*args, timeout=300):
    """The real `recursive` command in its own process."""
    return subprocess.run([sys.executable, "-m", "recursive.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, WANDB_MODE="offline"))


def write_plan(path, plan: dict, code: str):
    path.write_text(json.dumps(dict(plan, code=code)))
    return path
