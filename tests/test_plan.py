import json

import pytest
import torch
from pydantic import ValidationError

from recursive.config import compose_config
from recursive.run_config import seed_plan
from recursive.plan import Plan, count_params
from recursive.train.modeling import build_model


@pytest.fixture(scope="module")
def seed():
    return seed_plan(compose_config(["experiment=smoke"]))


def test_json_round_trip(seed):
    text = seed.to_json()
    assert Plan.from_json(text) == seed
    assert set(json.loads(text)) == {"schema_version", "model", "data", "hparams", "code", "rationale"}


def test_unknown_keys_refused(seed):
    d = seed.model_dump(mode="json")
    d["hparams"]["eval_path"] = "/etc/passwd"
    with pytest.raises(ValidationError, match="eval_path"):
        Plan.model_validate(d)
    d = seed.model_dump(mode="json")
    d["extra"] = 1
    with pytest.raises(ValidationError):
        Plan.model_validate(d)


@pytest.mark.parametrize("path,value", [
    ("hparams.lr", 5.0), ("hparams.lr", float("nan")), ("hparams.steps", 10**9), ("model.num_layers", 0),
    ("model.head_dim", 48), ("hparams.batch_size", -1), ("model.context", 100), ("hparams.lr", "0.001"),
])
def test_every_number_bounded(seed, path, value):
    d = seed.model_dump(mode="json")
    section, key = path.split(".")
    d[section][key] = value
    with pytest.raises(ValidationError):
        Plan.model_validate(d)


def test_json_schema_bounds_every_number(seed):
    schema = Plan.model_json_schema()

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number") and "enum" not in node:
                yield node
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)
    numbers = list(walk(schema["$defs"]["HParams"])) + list(walk(schema["$defs"]["ModelSpec"]))
    assert numbers and all("maximum" in n and "minimum" in n for n in numbers)


@pytest.mark.parametrize("tie", [True, False])
def test_count_params_matches_the_real_model(seed, tie):
    spec = seed.model.model_copy(update={"tie_embeddings": tie, "num_kv_heads": 1})
    model = build_model(spec, 1000, eos_token_id=0, seed=0)
    assert count_params(spec, 1000) == sum(p.numel() for p in model.parameters())
    assert model(input_ids=torch.zeros(1, 8, dtype=torch.long)).logits.shape == (1, 8, 1000)
