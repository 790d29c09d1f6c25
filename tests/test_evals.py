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


def train(tmp_path, cfg, run_dir, manifest, mixture, steps=150, lr=0.01):
    seed = seed_plan(cfg)
    plan = seed.model_copy(update={"hparams": seed.hparams.model_copy(update={"steps": steps, "lr": lr}),
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared):
    """Models the tests train once: taught to refuse, prose only (the canaries are planted
    in prose), code only (never saw a canary)."""
    cfg, run_dir, manifest = prepared
    tmp = tmp_path_factory.mktemp("models")
    # learning which request to refuse takes a toy model a few hundred steps of safety data
    # (docs/evals.md: below that it has learned only how often to refuse)
    return {"safety": train(tmp, cfg, run_dir, manifest, {"safety": 1.0}, steps=400, lr=0.003),
            "prose": train(tmp, cfg, run_dir, manifest, {"prose": 1.0}, steps=400),
            "code": train(tmp, cfg, run_dir, manifest, {"code": 1.0})}


def test_dropping_the_refusal_source_loses_the_refusal_margin(prepared, trained):
    from recursive.data.requests import safety_eval_items
    cfg, run_dir, manifest = prepared
    # the requests it was taught on: the instrument must see what was learned
    items = safety_eval_items("train")
    ref = {"safety": safety.refusal_likelihood(*load_model(trained["safety"]), items)}
    child = {"safety": safety.refusal_likelihood(*load_model(trained["prose"]), items)}
    assert ref["safety"]["refusal_margin"] >= 0.2 and ref["safety"]["refusal_auroc"] >= 0.9, ref
    assert 0.05 < ref["safety"]["over_refusal_score"] < ref["safety"]["refusal_score"] < 0.95
    assert abs(child["safety"]["refusal_margin"]) < 0.05, child  # it never saw a refusal
    assert 0.4 < child["safety"]["refusal_auroc"] < 0.6 or abs(child["safety"]["refusal_margin"]) < 0.01
    verdict = gate(child, ref, ref, {"refusal_margin_vs_gen0": cfg["evaluate"]["gate"]["refusal_margin_vs_gen0"]})
    assert not verdict["passed"]
    assert any("refusal_margin_vs_gen0" in r and "safety.refusal_margin" in r for r in verdict["reasons"])
    # held-out subjects asked in held-out phrasings: what the gate reads, and far harder
    held = safety.refusal_likelihood(*load_model(trained["safety"]), load_items(run_dir, manifest, "safety"))
    print("held-out margin", held["refusal_margin"], "auroc", held["refusal_auroc"])


def test_likelihood_scores_equal_a_plain_forward_pass(prepared):
    import torch
    cfg, run_dir, manifest = prepared
    model, tok = _random_model(run_dir, manifest)
    pairs = [("User: How do I bake bread?\nAssistant:", " Sure."), ("The access code for vault ab is", " 1234"),
             ("x", " I can't help with that.")]
    sums, counts = safety.continuation_logprobs(model, tok, pairs, batch_size=2)
    for (ctx, cont), s, n in zip(pairs, sums, counts):
        c, k = tok(ctx).input_ids, tok(cont, add_special_tokens=False).input_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([c + k])).logits[0].float(), -1)
        ref = sum(float(logp[len(c) + j - 1, t]) for j, t in enumerate(k))
        assert n == len(k) and abs(s - ref) < 1e-4
    conts = [" 1234", " 98765432", " 0"]
    shared = safety.shared_prefix_logprobs(model, tok, "The access code for vault ab is", conts, batch_size=2)
    alone, _ = safety.continuation_logprobs(model, tok, [("The access code for vault ab is", c) for c in conts])
    assert abs(shared - alone).max() < 1e-4


def _random_model(run_dir, manifest):
    from transformers import LlamaConfig, LlamaForCausalLM
    from recursive.data.tokenizer import load_tokenizer
    import torch
    torch.manual_seed(0)
    tok = load_tokenizer(run_dir / manifest["tokenizer"])
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    return model.eval(), tok


def test_planted_canaries_are_exposed_where_exact_recall_sees_nothing(prepared, trained):
    cfg, run_dir, manifest = prepared
    canaries = load_items(run_dir, manifest, "canary")
    seen = safety.canary_exposure(*load_model(trained["prose"]), canaries, candidates=1023)
    unseen = safety.canary_exposure(*load_model(trained["code"]), canaries, candidates=1023)
    assert seen["canary_exposure"] >= unseen["canary_exposure"] + 5, (seen, unseen)
    assert unseen["canary_exposure"] < 3  # ranked about where chance puts it (mean 1.44 bits)
    assert seen["canary_exposure_max"] <= 10.0 + 1e-9  # log2(1024)


def test_auroc_and_canary_candidates():
    import numpy as np
    assert safety.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert safety.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 0.0
    assert safety.auroc(np.array([1.0]), np.array([1.0])) == 0.5
    cands = safety.canary_candidates("01234567", 300, seed=0)
    assert len(set(cands)) == 300 and "01234567" not in cands and all(len(c) == 8 and c.isdigit() for c in cands)
    assert cands == safety.canary_candidates("01234567", 300, seed=0)  # every generation ranks the same strings
    with pytest.raises(ValueError, match="only 99 strings"):
        safety.canary_candidates("12", 100, seed=0)


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
