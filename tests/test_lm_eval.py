"""lm-evaluation-harness tasks (evaluate.lm_eval) on a tiny model and a task on local data.

CI installs the `lm_eval` extra, so nothing here is skipped when the harness is missing:
that is an install error to fix, not a test to pass over."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from recursive.config import compose_config
from recursive.data.tokenizer import load_tokenizer, train_tokenizer
from recursive.evaluate import integrity
from recursive.evaluate.lm_harness import LMEvalError, run_lm_eval
from recursive.run_config import seed_plan
from recursive.train.modeling import build_model

FIXTURE = Path(__file__).parent / "fixtures" / "lm_eval"
TASK = "toy_choice"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # nothing here may reach the Hugging Face hub: the task's data and the model are local
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def local_task(root: Path) -> Path:
    """The fixture task copied under `root` with an absolute data path (datasets resolves a
    relative data_files entry against the working directory, not the YAML's folder) and a
    datasets cache of its own."""
    tasks = root / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE / "toy_choice.jsonl", tasks / "toy_choice.jsonl")
    text = (FIXTURE / "toy_choice.yaml").read_text()
    text = text.replace("test: toy_choice.jsonl", f"test: {tasks / 'toy_choice.jsonl'}\n  cache_dir: {root / 'hf'}")
    (tasks / "toy_choice.yaml").write_text(text)
    return tasks


def tiny_model(out: Path, tok_dir: Path) -> Path:
    """A random-init 1-layer Llama from the plan's model code, saved with its tokenizer."""
    tok = load_tokenizer(tok_dir)
    spec = seed_plan(compose_config(["experiment=smoke"])).model.model_copy(
        update={"num_layers": 1, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16, "intermediate_size": 64})
    build_model(spec, len(tok), eos_token_id=tok.eos_token_id, seed=0).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_eval_model")
    texts = [json.loads(ln)["question"] for ln in (FIXTURE / "toy_choice.jsonl").read_text().splitlines()] * 20
    train_tokenizer(texts, 300, root / "tok")
    return tiny_model(root / "model", root / "tok")


def test_local_task_scores_every_item_and_is_deterministic(tmp_path, model):
    tasks = local_task(tmp_path)
    first = run_lm_eval(model, [TASK], include_path=str(tasks), limit=10, batch_size=4)
    assert set(first) == {TASK}
    row = first[TASK]
    assert 0.0 <= row["acc"] <= 1.0 and 0.0 <= row["acc_norm"] <= 1.0
    assert row["samples"] == 10 and 0 <= row["stderr"]["acc"] <= 1
    assert set(row) == {"acc", "acc_norm", "samples", "stderr"}  # no ",none" suffixes, no alias string
    assert run_lm_eval(model, [TASK], include_path=str(tasks), limit=10, batch_size=2) == first


def test_unknown_task_names_the_task_and_the_include_path(tmp_path):
    tasks = local_task(tmp_path)
    with pytest.raises(LMEvalError, match=r"no_such_task.*include_path=.*tasks"):
        run_lm_eval(tmp_path / "no-model", [TASK, "no_such_task"], include_path=str(tasks))


def test_missing_harness_names_the_config_key_and_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(LMEvalError, match=r"evaluate\.lm_eval\.tasks.*pip install -e '\.\[lmeval\]'"):
        run_lm_eval(tmp_path, [TASK])


def test_task_files_are_in_the_integrity_snapshot(tmp_path):
    tasks = local_task(tmp_path / "outside")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"evaluate": {"lm_eval": {"include_path": str(tasks)}}}))
    manifest = {"eval": {}, "eval_items": {}}
    reference = integrity.snapshot(run_dir, manifest)
    assert str(tasks / "toy_choice.yaml") in reference["lm_eval"]["files"]
    assert integrity.verify(run_dir, reference) == []
    data = tasks / "toy_choice.jsonl"
    data.write_text(data.read_text().replace('"label": 0', '"label": 1'))
    (tasks / "extra.yaml").write_text("task: extra\n")
    problems = integrity.verify(run_dir, reference)
    assert any("toy_choice.jsonl" in p and "changed" in p for p in problems)
    assert any("extra.yaml" in p and "added" in p for p in problems)


def test_run_suite_reports_lm_eval_tasks(tmp_path):
    from recursive.data.prepare import prepare_data
    from recursive.evaluate.suite import run_suite
    cfg = compose_config(["experiment=smoke", "data.max_chars_per_source=100000",
                          "evaluate.eval_windows_per_domain=2", "evaluate.arithmetic_problems=2",
                          "evaluate.refusal_items=2", "evaluate.collapse_samples=1", "evaluate.collapse_tokens=4",
                          f"evaluate.lm_eval.tasks=[{TASK}]", f"evaluate.lm_eval.include_path='{local_task(tmp_path)}'",
                          "evaluate.lm_eval.limit=4"])
    run_dir = tmp_path / "run"
    manifest = prepare_data(cfg["data"], run_dir)
    path = tiny_model(tmp_path / "model", run_dir / manifest["tokenizer"])
    metrics = run_suite(path, None, run_dir, manifest, cfg["evaluate"], {})
    assert metrics["lm_eval"][TASK]["samples"] == 4 and 0 <= metrics["lm_eval"][TASK]["acc"] <= 1
    assert "heldout_loss" in metrics  # the suite's own evals still ran
