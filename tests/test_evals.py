"""The eval suite and gate on real (tiny) models and real prepared data."""

import json
import subprocess
import sys

import pytest

from recursive.config import compose_config
from recursive.data.prepare import prepare_data
from recursive.data.sources import load_documents
from recursive.evaluate.gate import gate
from recursive.evaluate.capability import load_model
from recursive.evaluate import safety
from recursive.evaluate.suite import load_items
from recursive.io import atomic_write_json, atomic_write_text
from recursive.run_config import seed_plan
from recursive.validate import Limits
from recursive.plan import DataSpec
from recursive.validate import validate_plan

SMALL = ["experiment=smoke", "data.max_chars_per_source=100000"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cfg = compose_config(SMALL)
    run_dir = tmp_path_factory.mktemp("run")
    return cfg, run_dir, prepare_data(cfg["data"], run_dir)


def train(tmp_path, cfg, run_dir, manifest, mixture, steps=150):
    seed = seed_plan(cfg)
    plan = seed.model_copy(update={"hparams": seed.hparams.model_copy(update={"steps": steps, "lr": 0.01}),
                                   "data": DataSpec(mixture=mixture)})
    d = tmp_path / "-".join(f"{k}{v}" for k, v in mixture.items())
    atomic_write_text(d / "plan.json", plan.to_json())
    shards = {n: str(run_dir / manifest["train"][n]["path"]) for n in mixture}
    atomic_write_json(d / "train_spec.json", {"tokenizer": str(run_dir / manifest["tokenizer"]), "shards": shards,
                                              "mixture": plan.normalized_mixture(), "teacher": None, "threads": 2,
                                              "precision": "fp32", "log_every": 50})
    proc = subprocess.run([sys.executable, "-m", "recursive.train", str(d)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return d / "model"


def test_dropping_the_refusal_source_fails_the_refusal_criterion(tmp_path, prepared):
    cfg, run_dir, manifest = prepared
    items = load_items(run_dir, manifest, "safety")
    with_safety = train(tmp_path, cfg, run_dir, manifest, {"safety": 0.6, "prose": 0.4})
    without = train(tmp_path, cfg, run_dir, manifest, {"prose": 1.0})
    ref = {"safety": safety.refusal(*load_model(with_safety), items, 40)}
    child = {"safety": safety.refusal(*load_model(without), items, 40)}
    assert ref["safety"]["refusal_rate"] >= 0.5  # it learned to refuse held-out harmful requests
    assert child["safety"]["refusal_rate"] == 0.0  # it never saw a refusal
    verdict = gate(child, ref, ref, {"refusal_vs_gen0": cfg["evaluate"]["gate"]["refusal_vs_gen0"]})
    assert not verdict["passed"]
    assert any("refusal_vs_gen0" in r and "safety.refusal_rate" in r for r in verdict["reasons"])


def test_contaminated_source_is_refused_before_training(tmp_path):
    # an HF-style source (local jsonl) that quietly contains the prose eval documents
    cfg = compose_config(SMALL)
    prose = cfg["data"]["sources"]["prose"]
    eval_docs = load_documents("prose", prose, "eval", max_chars=cfg["data"]["max_chars_per_source"],
                               eval_fraction=cfg["data"]["eval_fraction"])
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in eval_docs + ["unrelated text " * 20] * 50))
    cfg = compose_config(SMALL + [f"+data.sources.web={{kind: hf, domain: prose, path: json, "
                                  f"data_files: '{corpus}', cache_dir: '{tmp_path / 'hf'}'}}"])
    run_dir = tmp_path / "run"
    manifest = prepare_data(cfg["data"], run_dir)
    assert manifest["contamination"]["web"]["prose"]["rate"] > 0.9
    assert all(r["rate"] == 0 for name, row in manifest["contamination"].items() if name != "web"
               for r in row.values())
    plan = seed_plan(cfg).model_dump(mode="json")
    limits = Limits.from_config(cfg, manifest["vocab_size"], None, manifest)
    assert validate_plan(plan, limits)[1] == []  # the seed mixture does not use `web`
    plan["data"]["mixture"]["web"] = 0.1
    _, problems = validate_plan(plan, limits)
    assert [p.field for p in problems] == ["data.mixture.web"]
    assert "contaminated" in problems[0].message and "prose" in problems[0].message


def test_memorisation_eval_finds_planted_canaries(prepared):
    cfg, run_dir, manifest = prepared
    canaries = load_items(run_dir, manifest, "canary")
    assert len(canaries) == cfg["data"]["canaries"]["count"]
    prose_train = (run_dir / manifest["train"]["prose"]["path"])
    from recursive.data.shards import open_shard
    from recursive.data.tokenizer import load_tokenizer
    text = load_tokenizer(run_dir / manifest["tokenizer"]).decode(open_shard(prose_train)[:].tolist())
    for c in canaries:
        assert text.count(f"{c['prefix']} {c['secret']}") == cfg["data"]["canaries"]["repeats"]
    assert not any(c["secret"] in (run_dir / e["path"]).read_bytes().decode("latin-1")
                   for c in canaries for e in manifest["eval"].values())


def test_changed_eval_file_fails_the_gate_and_is_recorded(tmp_path):
    """The lineage starts (data prepared, eval suite hashed), then an eval set is changed:
    the restart detects it before data preparation could quietly rebuild the file, records
    it in the lineage, and generation 0 fails the gate on integrity."""
    from recursive.loop import Orchestrator
    cfg = compose_config(SMALL + ["hparams.steps=20", "budget.min_train_tokens=0", "logger=none",
                                  f"run_dir={tmp_path / 'run'}"])
    first = Orchestrator(cfg)
    first.rd.open()
    first.rd.release()  # the first orchestrator is gone (its process would have ended)
    eval_bin = sorted((first.rd.path / "eval").glob("*.bin"))[0]
    data = bytearray(eval_bin.read_bytes())
    data[:64] = bytes(64)
    eval_bin.write_bytes(bytes(data))
    result = Orchestrator(cfg).run()
    assert result["status"] == "stopped" and "generation 0 did not pass the gate" in result["reason"]
    events = [json.loads(x) for x in (first.rd.path / "lineage.jsonl").read_text().splitlines()]
    breach = [e for e in events if e["event"] == "integrity"]
    assert breach and eval_bin.name in breach[0]["problems"][0]
    gen0 = [e for e in events if e["event"] == "attempt"][0]
    assert gen0["status"] == "rejected" and gen0["metrics"]["integrity"]["ok"] == 0
    assert any(r.startswith("FAIL integrity") for r in gen0["gate"]["reasons"])
