"""Fixtures of the training-stage tests: one small prepared data set and tokenizer per session."""

import pytest

from recursive.config import compose_config
from recursive.data.prepare import prepare_data
from recursive.run_config import seed_plan


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    cfg = compose_config(["experiment=smoke", "data.max_chars_per_source=100000"])
    run_dir = tmp_path_factory.mktemp("train_run")
    manifest = prepare_data(cfg["data"], run_dir)
    plan = seed_plan(cfg).model_copy(update={"hparams": seed_plan(cfg).hparams.model_copy(update={"steps": 8})})
    return cfg, run_dir, manifest, plan
