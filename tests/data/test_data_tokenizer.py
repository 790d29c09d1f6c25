"""The lineage tokenizer: exact round trip, deterministic training, one special token."""

from __future__ import annotations

import pytest

from recursive.data.sources import load_documents
from recursive.data.tokenizer import EOS, load_tokenizer, train_tokenizer

TRICKY = [
    "def f(x):\n\treturn  x  # tabs\tand  double  spaces   \n\n\n",
    "naïve café ✓ 日本語 emoji 🐍 \u00a0nbsp \u200b zero-width\r\nCRLF",
    "    indented = {'a': [1, 2.5e-3]}\n        deeper()\n",
    "123+45=168\n-7*8=-56",
    " leading space and trailing space ",
    f"literal special {EOS} in text",
    "",
]


@pytest.fixture(scope="module")
def corpus():
    return (load_documents("code", {"kind": "stdlib_code"}, "train", max_chars=300_000, eval_fraction=0.05)
            + load_documents("ar", {"kind": "arithmetic"}, "train", max_chars=20_000, eval_fraction=0.05))


@pytest.fixture(scope="module")
def tok_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(corpus, 1024, out)
    return out


def test_round_trip_exact(tok_dir, corpus):
    tok = load_tokenizer(tok_dir)
    for text in TRICKY + corpus[:20]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok("", add_special_tokens=False)["input_ids"] == []


def test_special_tokens_and_no_auto_specials(tok_dir):
    tok = load_tokenizer(tok_dir)
    eos = tok.convert_tokens_to_ids(EOS)
    assert tok.eos_token_id == tok.bos_token_id == tok.pad_token_id == eos
    assert len(tok) == 1024
    ids = tok("hello world")["input_ids"]
    assert eos not in ids  # shard writers add eos themselves


def test_digits_are_single_tokens(tok_dir):
    tok = load_tokenizer(tok_dir)
    pieces = tok.convert_ids_to_tokens(tok("12345+678=13023", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("12345678") + list("13023")


def test_training_is_deterministic(corpus, tok_dir, tmp_path):
    train_tokenizer(iter(corpus), 1024, tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()


def test_vocab_too_small_raises(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["abc"], 100, tmp_path)
