"""prepare_data: layout, manifest, content-hash cache, invalidation; research shards."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from recursive.data.prepare import build_research_shard, prepare_data
from recursive.data.shards import MixtureSampler, open_shard
from recursive.data.tokenizer import load_tokenizer

CFG = {
    "vocab_size": 512,
    "max_chars_per_source": 40_000,
    "eval_fraction": 0.1,
    "sources": {
        "code": {"kind": "stdlib_code", "domain": "code", "description": "stdlib code"},
        "prose": {"kind": "stdlib_prose", "domain": "prose", "description": "stdlib prose"},
        "arithmetic": {"kind": "arithmetic", "domain": "arithmetic", "max_digits": 2, "n_train": 2000, "n_eval": 50},
        "safety": {"kind": "safety", "domain": "safety"},
        "research": {"kind": "research_record", "domain": "research"},
    },
}


def mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    return run, prepare_data(CFG, run)


def test_layout_and_manifest(built):
    run, m = built
    assert json.loads((run / "data" / "manifest.json").read_text())["config_sha256"] == m["config_sha256"]
    assert set(m["train"]) == {"code", "prose", "arithmetic", "safety"}  # research is per generation
    assert set(m["eval"]) == {"code", "prose", "arithmetic", "safety"}
    assert m["per_generation"] == {"research": {"kind": "research_record", "domain": "research"}}
    assert m["train"]["code"]["path"] == "data/train/code.bin" and m["eval"]["code"]["path"] == "eval/code.bin"
    assert m["vocab_size"] == 512 and m["tokenizer"] == "data/tokenizer"
    for section in ("train", "eval"):
        for name, e in m[section].items():
            p = run / e["path"]
            assert hashlib.sha256(p.read_bytes()).hexdigest() == e["sha256"]
            assert len(open_shard(p)) == e["tokens"] > 0 and e["domain"] == CFG["sources"][name]["domain"]
    tok = load_tokenizer(run / m["tokenizer"])
    assert len(tok) == 512
    assert set(m["catalogue"]) == set(CFG["sources"]) and "stdlib code" in m["catalogue"]["code"]


def test_eval_items(built):
    run, m = built
    arith = [json.loads(l) for l in (run / m["eval_items"]["arithmetic"]["path"]).read_text().splitlines()]
    assert len(arith) == 50 and all(eval(it["prompt"][:-1]) == int(it["answer"]) for it in arith)  # noqa: S307
    safety = [json.loads(l) for l in (run / m["eval_items"]["safety"]["path"]).read_text().splitlines()]
    assert safety and {it["harmful"] for it in safety} == {True, False}
    # nothing the evaluator scores is in the training data
    tok = load_tokenizer(run / m["tokenizer"])
    train_arith = tok.decode(open_shard(run / m["train"]["arithmetic"]["path"]).tolist()).split("<|endoftext|>")
    assert not {d.split("=")[0] for d in train_arith} & {it["prompt"][:-1] for it in arith}
    train_safety = tok.decode(open_shard(run / m["train"]["safety"]["path"]).tolist())
    assert not [it for it in safety if it["prompt"] in train_safety]


def test_eval_prompts_tokenize_as_prefixes_of_training_text(built):
    """A prompt must end on a token boundary of the text the model trained on, or a model
    that learned the task still fails exact match (e.g. "=-" merged into one token)."""
    run, m = built
    tok = load_tokenizer(run / m["tokenizer"])
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    for line in (run / m["eval_items"]["arithmetic"]["path"]).read_text().splitlines():
        it = json.loads(line)
        p = enc(it["prompt"])
        assert enc(it["prompt"] + it["answer"])[: len(p)] == p, it
    for line in (run / m["eval_items"]["safety"]["path"]).read_text().splitlines()[:40]:
        it = json.loads(line)
        p = enc(it["prompt"])
        assert enc(it["prompt"] + " I can't help with that.")[: len(p)] == p, it


def test_second_call_is_cached_and_touches_nothing(built):
    run, m = built
    before = mtimes(run)
    again = prepare_data(copy.deepcopy(CFG), run)
    assert again.get("cached") and mtimes(run) == before
    assert {k: v for k, v in again.items() if k != "cached"} == m
    # a description does not change the data, so it does not invalidate the cache
    cfg = copy.deepcopy(CFG)
    cfg["sources"]["code"]["description"] = "reworded"
    assert prepare_data(cfg, run).get("cached")
    # keys outside the data (the seed plan's mixture) are ignored
    assert prepare_data({**CFG, "seed_mixture": {"code": 1.0}}, run).get("cached")


def test_config_change_and_corruption_rebuild(tmp_path):
    m1 = prepare_data(CFG, tmp_path)
    cfg = copy.deepcopy(CFG)
    cfg["sources"]["arithmetic"]["n_eval"] = 40
    del cfg["sources"]["safety"]
    m2 = prepare_data(cfg, tmp_path)
    assert m2["config_sha256"] != m1["config_sha256"] and not m2.get("cached")
    assert "safety" not in m2["train"] and not (tmp_path / "data/train/safety.bin").exists()
    assert not (tmp_path / "eval/safety.jsonl").exists()
    assert m2["eval_items"]["arithmetic"]["items"] == 40
    # a damaged shard is noticed by its hash and rebuilt
    shard = tmp_path / m2["train"]["code"]["path"]
    shard.write_bytes(b"\0\0" + shard.read_bytes()[2:])
    m3 = prepare_data(cfg, tmp_path)
    assert not m3.get("cached") and hashlib.sha256(shard.read_bytes()).hexdigest() == m2["train"]["code"]["sha256"]
    # a source that stops producing eval items loses its .jsonl but keeps its eval shard meta
    cfg["sources"]["arithmetic"] = {"kind": "stdlib_prose"}
    m4 = prepare_data(cfg, tmp_path, seed=1)
    assert m4["config_sha256"] != m3["config_sha256"] and "arithmetic" not in m4["eval_items"]
    assert not (tmp_path / "eval/arithmetic.jsonl").exists() and (tmp_path / "eval/arithmetic.json").exists()


def test_bad_config_raises(tmp_path):
    with pytest.raises(ValueError, match="'bogus'"):
        prepare_data({**CFG, "sources": {"bogus": {"kind": "web"}}}, tmp_path)
    with pytest.raises(ValueError, match="missing keys"):
        prepare_data({k: v for k, v in CFG.items() if k != "eval_fraction"}, tmp_path)
    assert not (tmp_path / "data").exists()


def test_research_shard(built, tmp_path):
    run, m = built
    tok = load_tokenizer(run / m["tokenizer"])
    assert build_research_shard([], tok, tmp_path / "r.bin") is None
    assert build_research_shard(None, tok, tmp_path / "r.bin") is None and not (tmp_path / "r.bin").exists()
    entry = {"generation": 0, "attempt": 0, "status": "promoted", "prompt": "Propose.", "plan": {"a": 1},
             "gate_reasons": [], "metrics": {}}
    meta = build_research_shard([entry], tok, tmp_path / "r.bin", min_tokens=257)
    assert meta["tokens"] >= 257
    text = tok.decode(open_shard(tmp_path / "r.bin").tolist())
    assert text.startswith('Propose.\nPLAN: {"a":1}\nOUTCOME: promoted<|endoftext|>')
    shards = {n: run / e["path"] for n, e in m["train"].items()} | {"research": tmp_path / "r.bin"}
    s = MixtureSampler(shards, {"code": 0.5, "research": 0.5}, context=256, batch_size=4, seed=0)
    assert s.batch(0).shape == (4, 257)
