"""Checkpoints the tests make themselves (nothing is downloaded): a random-initialised
causal LM of a given family, with its own byte-level BPE tokenizer trained by `tokenizers`
(a vocabulary unlike the embedded default's 1024/4096) and a chat template, saved with
`save_pretrained` the way a hub checkpoint is laid out."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _texts():
    """The training split of the smoke lineage's own sources: a tokenizer fitted to text like
    the lineage's, as a real checkpoint's is fitted to its pre-training data. (Fitted to
    stdlib code alone, templated safety requests split into many short tokens and the
    13-gram contamination check, which counts tokens, flags 1-2% of the safety eval.)"""
    from recursive.config import compose_config
    from recursive.data.prepare import normalise_data_config
    from recursive.data.sources import load_documents
    cfg = normalise_data_config(compose_config(["experiment=smoke"])["data"])
    kw = {"max_chars": cfg["max_chars_per_source"], "eval_fraction": cfg["eval_fraction"], "seed": 0}
    for name, src in cfg["sources"].items():
        if src["kind"] != "research_record":
            yield from load_documents(name, src, "train", **kw)


def make_tokenizer(out_dir: Path, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_texts(), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  clean_up_tokenization_spaces=False)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out_dir)
    return tok


def make_checkpoint(family: str, out_dir: Path, *, vocab_size: int = 700, seed: int = 0,
                    layers: int = 2, heads: int = 4, kv_heads: int = 2, head_dim: int = 32, ffn: int = 256) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config, Qwen3Config
    out_dir = Path(out_dir)
    tok = make_tokenizer(out_dir, vocab_size)
    common = dict(vocab_size=len(tok) + 12,  # padded embedding rows, as hub checkpoints often have
                  eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    hidden = heads * head_dim
    if family == "llama":
        cfg = LlamaConfig(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                          intermediate_size=ffn, num_hidden_layers=layers, max_position_embeddings=2048,
                          tie_word_embeddings=True, **common)
    elif family == "qwen2":
        cfg = Qwen2Config(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads,
                          intermediate_size=ffn, num_hidden_layers=layers, max_position_embeddings=2048,
                          tie_word_embeddings=False, **common)
    elif family == "qwen3":  # Qwen3-0.6B's shape: head_dim is not hidden / heads (here 2 x hidden / heads)
        cfg = Qwen3Config(hidden_size=hidden // 2, num_attention_heads=heads, num_key_value_heads=kv_heads,
                          head_dim=head_dim, intermediate_size=ffn, num_hidden_layers=layers,
                          max_position_embeddings=2048, tie_word_embeddings=True, **common)
    elif family == "gpt_neox":  # Pythia's family: fused query_key_value, parallel residual, untied head
        cfg = GPTNeoXConfig(hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn,
                            num_hidden_layers=layers, max_position_embeddings=2048, rotary_pct=0.25,
                            tie_word_embeddings=False, **common)
    elif family == "gpt2":
        cfg = GPT2Config(n_embd=hidden, n_head=heads, n_layer=layers, n_inner=ffn, n_positions=1024, **common)
    else:
        raise ValueError(family)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out_dir)
    return out_dir
