"""The lineage's tokenizer: byte-level BPE trained locally, shared by every generation.

Byte-level means no unknown tokens and an exact round trip for any text (code, unicode,
runs of whitespace). Digits are split one per token before BPE, as Llama and Mistral do:
with merged multi-digit tokens ("123" as one id) a small model cannot learn carrying, and
arithmetic exact match is one of the gate's capability evals.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
MIN_VOCAB = 256 + 1  # every byte plus the special token


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and save it with `save_pretrained(out_dir)`.

    `<|endoftext|>` (id 0) is the only special token and serves as eos, bos and pad. The
    tokenizer adds no special tokens on its own: shard writers append eos explicitly.
    Deterministic: the same texts give the same tokenizer.json."""
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be an int >= {MIN_VOCAB}, got {vocab_size!r}")
    backend = Tokenizer(models.BPE())  # no unk token: every byte is in the alphabet
    backend.pre_tokenizer = _pre_tokenizer()
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        # cleanup would delete spaces before punctuation and break the exact round trip
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000_000,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out_dir)
    return tok


def load_tokenizer(path: Path | str) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by `train_tokenizer` (or any Hugging Face tokenizer dir/name)."""
    return AutoTokenizer.from_pretrained(str(path))
