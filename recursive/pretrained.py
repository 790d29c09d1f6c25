"""Generation 0 from a Hugging Face checkpoint (`model=pretrained model.name_or_path=...`).

The checkpoint is not trained again: generation 0's `model/` holds its tensors (loaded and
saved with `save_pretrained`, dtype kept), its tokenizer is the lineage's tokenizer (shards,
eval splits, research record and every child use it; the lineage trains none), and its
config is the lineage's *base*: the family every child is built in (train/families.py).
A checkpoint that is not a supported decoder-only causal LM is refused in one line before
any data is prepared.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

from recursive.errors import ConfigError

KEYS = {"name_or_path", "context", "revision"}


def is_pretrained(model_section: dict) -> bool:
    return isinstance(model_section, dict) and "name_or_path" in model_section


def section_problems(model_section: dict) -> list[str]:
    """The `model` config of model=pretrained, checked without touching the checkpoint."""
    out = []
    extra = sorted(set(model_section) - KEYS)
    if extra:
        out.append(f"config value model.{extra[0]}: not a key of model=pretrained (keys: {', '.join(sorted(KEYS))}; "
                   "the architecture is the checkpoint's)")
    src = model_section.get("name_or_path")
    if not isinstance(src, str) or not src.strip() or src == "???":
        out.append(f"config value model.name_or_path must be a checkpoint directory or a hub name, got {src!r}")
    ctx = model_section.get("context", 256)
    if ctx not in (64, 128, 256, 512, 1024, 2048, 4096):
        out.append(f"config value model.context must be one of 64, 128, 256, 512, 1024, 2048, 4096, got {ctx!r}")
    return out


@functools.lru_cache(maxsize=16)
def _read_config(src: str, revision: str | None) -> str:
    from transformers import AutoConfig
    try:
        cfg = AutoConfig.from_pretrained(src, revision=revision)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"model.name_or_path={src}: cannot read its config.json "
                          f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    return json.dumps(cfg.to_dict(), sort_keys=True, default=str)


def base_config(model_section: dict) -> dict:
    """The checkpoint's config as a plain dict; ConfigError (one line) when it cannot start a
    lineage: missing, not a decoder-only causal LM, or a family the loop does not support."""
    from recursive.train.families import refusal
    src = str(model_section["name_or_path"])
    cfg = json.loads(_read_config(src, model_section.get("revision")))
    why = refusal(cfg, src)
    if why is not None:
        raise ConfigError(why)
    return cfg


def model_section(model_section: dict) -> dict:
    """The plan `model` section (ModelSpec dict) that describes the checkpoint."""
    from recursive.train.families import spec_from_config
    cfg = base_config(model_section)
    ctx = int(model_section.get("context", 256))
    limit = cfg.get("max_position_embeddings") or cfg.get("n_positions")
    if limit:  # the child trains at most at the positions the family was built for
        ctx = min(ctx, max(c for c in (64, 128, 256, 512, 1024, 2048, 4096) if c <= int(limit)))
    return spec_from_config(cfg, ctx)


def tokenizer_source(model_section: dict) -> str:
    return str(model_section["name_or_path"])


def import_checkpoint(model_section: dict, out_dir: Path) -> dict:
    """Write generation 0's model/ from the checkpoint (same tensors, same dtype, with its
    tokenizer) atomically; returns what train_metrics.json records for it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    src, rev = str(model_section["name_or_path"]), model_section.get("revision")
    model = AutoModelForCausalLM.from_pretrained(src, revision=rev, dtype="auto")
    tok = AutoTokenizer.from_pretrained(src, revision=rev)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    n = sum(p.numel() for p in model.parameters())
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"pretrained": src, "revision": rev, "model_type": model_section.get("model_type") or
            json.loads(_read_config(src, rev))["model_type"], "params": n, "dtype": dtype,
            "steps": 0, "tokens": 0, "seconds": 0.0}


def describe(model_section: dict) -> dict[str, Any]:
    return {"name_or_path": model_section["name_or_path"], "revision": model_section.get("revision")}
