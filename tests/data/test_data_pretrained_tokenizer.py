"""model=pretrained with a Hugging Face source (configs/data/hf_example.yaml): the source is
read through `datasets` (its `json` loader on a local file: nothing is downloaded),
tokenised with the checkpoint's tokenizer, and cached by content hash."""

from __future__ import annotations

import json

from recursive.config import compose_config
from recursive.data.prepare import prepare_data
from recursive.data.shards import open_shard

ROWS = [f"The web page number {i} talks about {w} and more {w}." for i, w in
        enumerate(["rivers", "bridges", "lamps", "kites", "owls", "ferns", "clocks", "maps"] * 25)]


def _checkpoint_tokenizer(out, vocab):
    """A checkpoint's tokenizer (the model files do not matter to data preparation)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(ROWS, trainer=trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")
    tok.save_pretrained(out)
    return tok


def _cfg(tmp_path, data_file):
    return {"vocab_size": 512, "max_chars_per_source": 40_000, "eval_fraction": 0.1, "sources": {
        "arithmetic": {"kind": "arithmetic", "domain": "arithmetic", "max_digits": 2, "n_train": 500, "n_eval": 20},
        "web": {"kind": "hf", "domain": "prose", "path": "json", "data_files": str(data_file), "text_field": "text",
                "cache_dir": str(tmp_path / "hf_cache")}}}


def test_hf_example_composes_with_model_pretrained():
    cfg = compose_config(["data=hf_example", "model=pretrained", "model.name_or_path=/path/to/checkpoint"])
    assert cfg["data"]["sources"]["web"]["kind"] == "hf" and cfg["model"]["name_or_path"] == "/path/to/checkpoint"


def test_hf_source_is_tokenised_with_the_checkpoint_tokenizer_and_cached(tmp_path):
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in ROWS))
    ckpt = tmp_path / "ckpt"
    tok = _checkpoint_tokenizer(ckpt, 300)
    run = tmp_path / "run"
    m = prepare_data(_cfg(tmp_path, data), run, tokenizer=str(ckpt), model_vocab_size=len(tok) + 4)
    assert m["tokenizer_source"] == str(ckpt) and m["vocab_size"] == len(tok) + 4 and m["tokenizer_len"] == len(tok)
    # the web shard is the documents in the checkpoint's ids, each followed by its eos
    ids = open_shard(run / m["train"]["web"]["path"]).astype(int).tolist()
    docs, cur = [], []
    for t in ids:
        if t == tok.eos_token_id:
            docs.append(cur)
            cur = []
        else:
            cur.append(t)
    assert docs and all(tok.decode(d) in ROWS for d in docs)
    assert docs[0] == tok(tok.decode(docs[0]), add_special_tokens=False).input_ids
    assert len(docs) + len(open_shard(run / m["eval"]["web"]["path"]).tolist()) > 0
    # a second start reuses everything, the copied tokenizer files included (no copy, no rewrite)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    again = prepare_data(_cfg(tmp_path, data), run, tokenizer=str(ckpt), model_vocab_size=len(tok) + 4)
    assert again.get("cached") and again["config_sha256"] == m["config_sha256"]
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    # another tokenizer in the checkpoint: a new content hash, the shards rebuilt in its ids
    tok2 = _checkpoint_tokenizer(ckpt, 400)
    m2 = prepare_data(_cfg(tmp_path, data), run, tokenizer=str(ckpt), model_vocab_size=len(tok2))
    assert not m2.get("cached") and m2["config_sha256"] != m["config_sha256"] and m2["tokenizer_len"] == len(tok2)
    assert m2["train"]["web"]["sha256"] != m["train"]["web"]["sha256"]
    # other text in the HF source: rebuilt too
    data.write_text("".join(json.dumps({"text": t + " Changed."}) + "\n" for t in ROWS))
    m3 = prepare_data(_cfg(tmp_path, data), run, tokenizer=str(ckpt), model_vocab_size=len(tok2))
    assert not m3.get("cached") and m3["train"]["web"]["sha256"] != m2["train"]["web"]["sha256"]
