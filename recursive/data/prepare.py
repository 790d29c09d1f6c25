"""Build a run's data once: tokenizer, train shards, eval shards, eval items, manifest.

Layout under the run directory (all manifest paths are relative to it):
  data/tokenizer/            trained on the train splits of every static source
  data/train/<name>.bin|json one shard per static source (research_record excluded)
  eval/<name>.bin|json       eval shard of each source whose eval split is not empty
  eval/<name>.jsonl          raw eval items: arithmetic {"prompt","answer"}, safety {"prompt","harmful"}
  data/manifest.json         written last, so a crash mid-way just means a rebuild

Eval files live outside data/ so the training stage can be handed data/ alone.
The research record changes every generation; `build_research_shard` writes its shard per
generation, and the manifest lists such sources under "per_generation".

Caching: the manifest records a hash of the resolved config (descriptions excluded: they do
not change the data) and the sha256 of every file. A second call with the same config and
intact files returns the manifest without touching anything. The Python version is recorded
but not hashed, so resuming a lineage on a node with another Python keeps its eval sets.
Call it from one process (rank 0 or before launch), not from every rank at once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from recursive.data.contamination import contamination_table
from recursive.io import sha256_file
from recursive.data.shards import atomic_write_bytes, meta_path, open_shard, write_shard
from recursive.data.sources import (arithmetic_eval_items, check_source, describe, format_research_record,
                                    load_documents, safety_eval_items)
from recursive.data.tokenizer import MIN_VOCAB, train_tokenizer

FORMAT_VERSION = 2  # bump when a generator's output changes, to invalidate old caches
DYNAMIC_KINDS = ("research_record",)
_TOP_KEYS = {"vocab_size", "max_chars_per_source", "eval_fraction", "sources"}


def _plain(x):
    """Mappings and sequences (e.g. OmegaConf containers) as plain dicts and lists."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return [_plain(v) for v in x]
    return x


def normalise_data_config(data_cfg: Mapping) -> dict:
    """Validate a data config and resolve every source's options; raises ValueError.

    Only vocab_size, max_chars_per_source, eval_fraction and sources are read; other keys
    are ignored (and left out of the config hash)."""
    raw = _plain(data_cfg)
    if _TOP_KEYS - set(raw):
        raise ValueError(f"data config: missing keys {sorted(_TOP_KEYS - set(raw))}")
    # other keys (e.g. the seed plan's `seed_mixture`) do not change the data: not hashed
    cfg = {k: raw[k] for k in _TOP_KEYS}
    cfg["canaries"] = {"source": None, "count": 0, "repeats": 0, **(raw.get("canaries") or {})}
    cfg["contamination"] = {"ngram": 13, "doc_threshold": 0.8, **(raw.get("contamination") or {})}
    if not isinstance(cfg["vocab_size"], int) or cfg["vocab_size"] < MIN_VOCAB:
        raise ValueError(f"data config: vocab_size must be an int >= {MIN_VOCAB}")
    mc = cfg["max_chars_per_source"]
    if not isinstance(mc, (int, float)) or isinstance(mc, bool) or not 1 <= mc < 2**62:
        raise ValueError("data config: max_chars_per_source must be >= 1")
    if not isinstance(cfg["eval_fraction"], (int, float)) or not 0 < cfg["eval_fraction"] <= 0.5:  # NaN fails too
        raise ValueError("data config: eval_fraction must be in (0, 0.5]")
    if not isinstance(cfg["sources"], dict) or not cfg["sources"]:
        raise ValueError("data config: sources must be a non-empty mapping")
    cfg["max_chars_per_source"] = int(cfg["max_chars_per_source"])
    cfg["sources"] = {name: check_source(name, src) for name, src in sorted(cfg["sources"].items())}
    can = cfg["canaries"]
    if can["count"] and can["source"] not in cfg["sources"]:
        raise ValueError(f"data config: canaries.source must name a data source, got {can['source']!r}")
    return cfg


def config_sha256(cfg: dict, seed: int) -> str:
    """Hash of what determines the data: resolved config, seed, format version."""
    keyed = {**cfg, "sources": {n: {k: v for k, v in s.items() if k != "description"} for n, s in cfg["sources"].items()}}
    blob = json.dumps({"format": FORMAT_VERSION, "seed": seed, "config": keyed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _listed_files(manifest: dict) -> dict[str, str]:
    """relpath -> sha256 of every file a manifest vouches for."""
    files = dict(manifest.get("tokenizer_files", {}))
    for section in ("train", "eval", "eval_items"):
        for entry in manifest.get(section, {}).values():
            files[entry["path"]] = entry["sha256"]
    return files


def _cached(run_dir: Path, config_hash: str) -> dict | None:
    path = run_dir / "data" / "manifest.json"
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if manifest.get("config_sha256") != config_hash:
        return manifest  # caller uses it to remove files the new config no longer has
    for rel, sha in _listed_files(manifest).items():
        p = run_dir / rel
        if not p.exists() or sha256_file(p) != sha:
            return {}
    return {**manifest, "cached": True}


def _shard_entry(run_dir: Path, path: Path, meta: dict, src: dict) -> dict:
    return {"path": path.relative_to(run_dir).as_posix(), "tokens": meta["tokens"], "documents": meta["documents"],
            "sha256": meta["sha256"], "domain": src["domain"], "kind": src["kind"]}


# the files a Hugging Face tokenizer is saved as (a checkpoint directory holds the model's too)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "chat_template.jinja",
                   "chat_template.json")


def _files_digest(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda q: q.name):
        h.update(p.name.encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def _pretrained_tokenizer(source: str, tok_dir: Path) -> str:
    """Copy a checkpoint's tokenizer into `tok_dir` (save_pretrained, so a hub tokenizer is
    laid out like a local one) and return the sha256 of the copy, which the data config
    hash includes. The copy is made once: a later start finds `tok_dir` with a record of
    the source and its files' digest and reuses both, unless the source's tokenizer files
    changed since (a local directory is fingerprinted from its files, without loading)."""
    record = tok_dir.with_name(tok_dir.name + ".source.json")
    src = Path(source)
    fingerprint = _files_digest([src / n for n in TOKENIZER_FILES if (src / n).is_file()]) if src.is_dir() else None
    if record.exists() and tok_dir.is_dir():
        old = json.loads(record.read_text())
        copied = [p for p in tok_dir.iterdir() if p.is_file()]
        if (old.get("source"), old.get("fingerprint")) == (source, fingerprint) and _files_digest(copied) == old.get("digest"):
            return old["digest"]
    import shutil

    from transformers import AutoTokenizer
    shutil.rmtree(tok_dir, ignore_errors=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(tok_dir)
    digest = _files_digest([p for p in tok_dir.iterdir() if p.is_file()])
    record.write_text(json.dumps({"source": source, "fingerprint": fingerprint, "digest": digest}) + "\n")
    return digest


def _local_data_files(cfg: Mapping) -> dict[str, str]:
    """sha256 of every local file an hf source reads (`data_files`), so that the cache key
    of the data is their content: edited files rebuild the shards. Hub files are not
    hashed here (their `revision` pins them)."""
    out = {}
    for name, src in sorted(cfg["sources"].items()):
        files = src.get("data_files") if src.get("kind") == "hf" else None
        paths = files.values() if isinstance(files, dict) else [files] if isinstance(files, str) else files or []
        for group in paths:
            for f in [group] if isinstance(group, str) else group:
                if Path(f).is_file():
                    out[f"{name}:{f}"] = sha256_file(Path(f))
    return out


def prepare_data(data_cfg: Mapping, run_dir: Path, *, seed: int = 0, tokenizer: str | None = None,
                 model_vocab_size: int | None = None) -> dict:
    """Build (or reuse) the run's tokenizer, shards, eval items and manifest; return the manifest.

    `tokenizer`: a checkpoint's tokenizer (model=pretrained) is copied into data/tokenizer/
    and used instead of training one (data.vocab_size is then not used); the manifest's
    vocab_size is then `model_vocab_size`, the checkpoint's embedding rows."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    cfg = normalise_data_config(data_cfg)
    tok_dir = run_dir / "data" / "tokenizer"
    local = _local_data_files(cfg)
    if local:  # an hf source read from local files: their content, not only their names
        cfg = {**cfg, "local_data_files": local}
    if tokenizer is not None:
        tok_dir.parent.mkdir(parents=True, exist_ok=True)
        digest = _pretrained_tokenizer(tokenizer, tok_dir)
        cfg = {**cfg, "pretrained_tokenizer": digest, "vocab_size": model_vocab_size}
    chash = config_sha256(cfg, seed)
    old = _cached(run_dir, chash)
    if old and old.get("cached"):
        return old
    kw = {"max_chars": cfg["max_chars_per_source"], "eval_fraction": cfg["eval_fraction"], "seed": seed}
    static = {n: s for n, s in cfg["sources"].items() if s["kind"] not in DYNAMIC_KINDS}
    train_docs = {n: load_documents(n, s, "train", **kw) for n, s in static.items()}
    eval_docs = {n: load_documents(n, s, "eval", **kw) for n, s in static.items()}
    canaries = make_canaries(cfg["canaries"], seed)
    if canaries:  # planted in training data; the memorisation eval asks for them back
        train_docs[cfg["canaries"]["source"]] += [c["text"] for c in canaries] * int(cfg["canaries"]["repeats"])

    if tokenizer is None:
        tok = train_tokenizer(itertools.chain.from_iterable(train_docs.values()), cfg["vocab_size"], tok_dir)
    else:  # copied above (_pretrained_tokenizer)
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(tok_dir)
        if tok.eos_token_id is None:
            raise ValueError(f"the tokenizer of {tokenizer} has no eos token: documents cannot be separated")
    manifest: dict = {
        "format_version": FORMAT_VERSION, "config_sha256": chash, "seed": seed,
        "vocab_size": len(tok) if tokenizer is None else int(model_vocab_size),
        "tokenizer_len": len(tok), "tokenizer_source": tokenizer,
        "tokenizer": tok_dir.relative_to(run_dir).as_posix(),
        "tokenizer_files": {p.relative_to(run_dir).as_posix(): sha256_file(p) for p in sorted(tok_dir.iterdir())},
        "train": {}, "eval": {}, "eval_items": {},
        "per_generation": {n: {"kind": s["kind"], "domain": s["domain"]}
                           for n, s in cfg["sources"].items() if s["kind"] in DYNAMIC_KINDS},
        "catalogue": {n: describe(n, s) for n, s in cfg["sources"].items()},
    }
    for name, src in static.items():
        path = run_dir / "data" / "train" / f"{name}.bin"
        manifest["train"][name] = _shard_entry(run_dir, path, write_shard(train_docs[name], tok, path), src)
        if eval_docs[name]:
            path = run_dir / "eval" / f"{name}.bin"
            manifest["eval"][name] = _shard_entry(run_dir, path, write_shard(eval_docs[name], tok, path), src)
        items = None
        if src["kind"] == "arithmetic":
            items = arithmetic_eval_items(src, seed=seed)
        elif src["kind"] == "safety":
            items = safety_eval_items("eval")
        if items:
            path = run_dir / "eval" / f"{name}.jsonl"
            data = "".join(json.dumps(it, sort_keys=True) + "\n" for it in items).encode()
            atomic_write_bytes(path, data)
            manifest["eval_items"][name] = {"path": path.relative_to(run_dir).as_posix(), "task": src["kind"],
                                            "items": len(items), "sha256": hashlib.sha256(data).hexdigest()}
    if canaries:
        path = run_dir / "eval" / "canaries.jsonl"
        data = "".join(json.dumps({"prefix": c["prefix"], "secret": c["secret"]}) + "\n" for c in canaries).encode()
        atomic_write_bytes(path, data)
        manifest["eval_items"]["canaries"] = {"path": path.relative_to(run_dir).as_posix(), "task": "canary",
                                              "items": len(canaries), "sha256": hashlib.sha256(data).hexdigest()}
    cc = cfg["contamination"]
    manifest["contamination"] = contamination_table(
        {n: open_shard(run_dir / e["path"]) for n, e in manifest["train"].items()},
        {n: open_shard(run_dir / e["path"]) for n, e in manifest["eval"].items()},
        tok.eos_token_id, n=int(cc["ngram"]), doc_threshold=float(cc["doc_threshold"]))
    # how the table was made, so a child's own mixture (evaluate/suite.py) is checked alike
    manifest["contamination_config"] = {"ngram": int(cc["ngram"]), "doc_threshold": float(cc["doc_threshold"]),
                                        "eos": tok.eos_token_id}
    # files that an earlier config produced and this one does not: remove, so nothing stale
    # sits next to the manifest looking authoritative
    for rel in set(_listed_files(old or {})) - set(_listed_files(manifest)):
        stale = [run_dir / rel] + ([meta_path(run_dir / rel)] if rel.endswith(".bin") else [])
        for p in stale:
            p.unlink(missing_ok=True)
    manifest["python"] = sys.version.split()[0]
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_bytes(run_dir / "data" / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def make_canaries(cfg: dict, seed: int) -> list[dict]:
    """Random secrets planted in training text (Carlini et al. 2019, "The Secret Sharer")."""
    import numpy as np
    rng = np.random.default_rng([seed, 0xCA7A])
    out = []
    for _ in range(int(cfg.get("count") or 0)):
        tag = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6))
        secret = "".join(str(d) for d in rng.integers(0, 10, 8))
        prefix = f"The access code for vault {tag} is"
        out.append({"prefix": prefix, "secret": secret, "text": f"{prefix} {secret}."})
    return out


def build_research_shard(entries: list[dict] | None, tokenizer, path: Path, *, min_tokens: int = 0,
                         max_chars: int | None = None, record_options: dict | None = None) -> dict | None:
    """Write the research-record shard for one generation and return its meta.

    Returns None (and writes nothing) when there are no entries: the caller must then drop
    the research source's weight from the mixture, since an empty shard cannot be sampled.
    `min_tokens` (e.g. context + 1) repeats the record until the shard is that long, so an
    early lineage with one short entry can still be sampled. `max_chars` keeps the latest
    entries that fit. `record_options`: format_research_record's (outcome_first, augment, seed)."""
    docs = format_research_record(entries, **(record_options or {}))
    if max_chars is not None:
        docs = load_documents("research", {"kind": "research_record"}, "train", max_chars=max_chars,
                              eval_fraction=0.0, record_entries=entries, record_options=record_options)
    if not docs:
        return None
    meta = write_shard(docs, tokenizer, path)
    if meta["tokens"] < min_tokens:
        meta = write_shard(docs * math.ceil(min_tokens / meta["tokens"]), tokenizer, path)
    return meta
