"""Shards on disk and the stateless mixture sampler."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
import torch

from recursive.data.shards import MixtureSampler, open_shard, write_shard


class IntTokenizer:
    """Stand-in tokenizer: a text is its space-separated token ids; eos is 0."""

    eos_token_id = 0

    def __init__(self, vocab: int = 1000):
        self.vocab = vocab

    def __len__(self):
        return self.vocab

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[int(t) for t in text.split()] for text in texts]}


def shard_of(tmp_path, name, ids, vocab=1000):
    """Write a one-document shard whose tokens are `ids` (then eos)."""
    path = tmp_path / f"{name}.bin"
    write_shard([" ".join(map(str, ids))], IntTokenizer(vocab), path)
    return path


def test_write_shard_tokens_eos_sha_and_meta(tmp_path):
    path = tmp_path / "s.bin"
    meta = write_shard(["1 2 3", "", "4 5"], IntTokenizer(), path)
    arr = open_shard(path)
    assert arr.dtype == np.uint16 and arr.tolist() == [1, 2, 3, 0, 0, 4, 5, 0]
    assert meta == json.loads(path.with_suffix(".json").read_text())
    assert meta["tokens"] == 8 and meta["documents"] == 3 and meta["dtype"] == "uint16"
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.bin", "s.json"]  # no temp files left


def test_write_shard_uint32_for_big_vocab(tmp_path):
    path = tmp_path / "big.bin"
    meta = write_shard(["70000 1"], IntTokenizer(100_000), path)
    assert meta["dtype"] == "uint32" and open_shard(path).tolist() == [70000, 1, 0]


def test_write_shard_with_real_tokenizer(tmp_path):
    from recursive.data.tokenizer import train_tokenizer

    texts = ["def f():\n    return 1\n", "naïve ✓ text", "12+3=15"] * 20
    tok = train_tokenizer(texts, 300, tmp_path / "tok")
    meta = write_shard(texts, tok, tmp_path / "r.bin")
    arr = open_shard(tmp_path / "r.bin")
    assert meta["tokens"] == len(arr) and int((arr == tok.eos_token_id).sum()) == len(texts)
    assert tok.decode(arr.tolist()) == "<|endoftext|>".join(texts) + "<|endoftext|>"


def test_empty_shard_opens(tmp_path):
    write_shard([], IntTokenizer(), tmp_path / "e.bin")
    assert len(open_shard(tmp_path / "e.bin")) == 0


@pytest.fixture
def two(tmp_path):
    # tokens of "a" are 1..4999 and of "b" 10001..14999 (then eos), so a row shows its source
    return {"a": shard_of(tmp_path, "a", range(1, 5000), 20000),
            "b": shard_of(tmp_path, "b", range(10001, 15000), 20000)}


def test_batch_shape_windows_and_determinism(two):
    s = MixtureSampler(two, {"a": 1, "b": 1}, context=16, batch_size=8, seed=3)
    x = s.batch(5)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.long and x.shape == (8, 17)
    # every row is a contiguous window of one shard (ids run +1, or end in the eos)
    for row in x.tolist():
        assert all(b == a + 1 or b == 0 for a, b in zip(row, row[1:]))
    again = MixtureSampler(two, {"b": 1, "a": 1}, context=16, batch_size=8, seed=3)
    assert torch.equal(again.batch(5), x)  # neither a new object nor dict order matters
    assert not torch.equal(s.batch(6), x)
    assert not torch.equal(MixtureSampler(two, {"a": 1, "b": 1}, 16, 8, seed=4).batch(5), x)


def test_weights_respected(two):
    s = MixtureSampler(two, {"a": 0.9, "b": 0.1}, context=8, batch_size=100, seed=0)
    rows = torch.cat([s.batch(k) for k in range(40)])
    frac_b = (rows[:, 0] > 10000).float().mean().item()
    assert abs(frac_b - 0.1) < 0.02  # 4000 rows: 3 standard deviations is about 0.014
    counts = [s.source_counts(k) for k in range(40)]
    assert sum(c["b"] for c in counts) == int((rows[:, 0] > 10000).sum())


def test_zero_and_missing_weight_never_sampled(two, tmp_path):
    shards = {**two, "c": shard_of(tmp_path, "c", range(16000, 16100), 20000)}
    for weights in ({"a": 1.0, "b": 0.0, "c": 0.0}, {"a": 1.0}):
        s = MixtureSampler(shards, weights, context=8, batch_size=64, seed=0)
        rows = torch.cat([s.batch(k) for k in range(20)])
        assert int(rows.max()) < 5000  # only "a" tokens (1..4999, eos 0)
        assert s.source_counts(0) == {"a": 64}
    # a zero-weight source does not shift the rows the others get
    assert torch.equal(MixtureSampler(shards, {"a": 1, "b": 1, "c": 0}, 8, 16, 1).batch(2),
                       MixtureSampler(two, {"a": 1, "b": 1}, 8, 16, 1).batch(2))


def test_ranks_union_equals_single_process(two):
    full = MixtureSampler(two, {"a": 2, "b": 1}, context=12, batch_size=12, seed=7).batch(9)
    parts = [MixtureSampler(two, {"a": 2, "b": 1}, 12, 12, 7, rank=r, world_size=4).batch(9) for r in range(4)]
    assert all(p.shape == (3, 13) for p in parts)
    for r in range(4):
        assert torch.equal(full[r::4], parts[r])


def test_sampler_errors_name_the_problem(two, tmp_path):
    short = {**two, "tiny": shard_of(tmp_path, "tiny", [1, 2, 3])}
    with pytest.raises(ValueError, match="tiny"):
        MixtureSampler(short, {"a": 1, "tiny": 1}, context=8, batch_size=4, seed=0)
    MixtureSampler(short, {"a": 1, "tiny": 0}, context=8, batch_size=4, seed=0)  # unweighted: fine
    with pytest.raises(ValueError, match="world_size"):
        MixtureSampler(two, {"a": 1}, context=8, batch_size=6, seed=0, rank=0, world_size=4)
    with pytest.raises(ValueError, match="all mixture weights are 0"):
        MixtureSampler(two, {"a": 0, "b": 0}, context=8, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="ghost"):
        MixtureSampler(two, {"ghost": 1}, context=8, batch_size=4, seed=0)
    with pytest.raises(ValueError, match="'b'"):
        MixtureSampler(two, {"a": 1, "b": -1}, context=8, batch_size=4, seed=0)


def test_sampler_is_fast(tmp_path):
    path = shard_of(tmp_path, "big", np.arange(2_000_000) % 999 + 1)
    s = MixtureSampler({"big": path}, {"big": 1}, context=1024, batch_size=64, seed=0)
    t = time.perf_counter()
    for k in range(50):
        s.batch(k)
    assert time.perf_counter() - t < 2.0
