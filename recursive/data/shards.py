"""Pre-tokenised shards and the mixture sampler that reads them.

A shard is a flat array of token ids (documents separated by eos) in `<name>.bin`, with
`<name>.json` beside it: `{"tokens", "documents", "dtype", "vocab_size", "sha256"}`.

The sampler is stateless on purpose: the batch at a step is a pure function of
(seed, step, batch_size), and rank r of a world of w takes rows r, r+w, r+2w, ... of that
batch. So DDP ranks together see exactly what one process sees, and resuming at step k needs
no saved sampler state (the trainer only has to remember k).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import numbers
import os
from pathlib import Path

import numpy as np
import torch


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file and os.replace: readers see old or new, never half."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def meta_path(path: Path) -> Path:
    """The `.json` meta file that sits beside a shard's `.bin`."""
    return Path(path).with_suffix(".json")


def write_shard(texts: list[str], tokenizer, path: Path) -> dict:
    """Tokenise `texts`, append eos after each, write the ids to `path` atomically.

    Writes the meta json beside it and returns it. uint16 when the vocabulary fits, else uint32."""
    path = Path(path)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos token")
    vocab = len(tokenizer)
    dtype = np.uint16 if vocab <= 65535 else np.uint32
    if hasattr(tokenizer, "backend_tokenizer"):  # the Rust batch path, without offsets
        ids = [e.ids for e in tokenizer.backend_tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]
    else:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    total = sum(len(x) for x in ids) + len(ids)
    flat = np.fromiter(itertools.chain.from_iterable(itertools.chain(x, (eos,)) for x in ids), dtype=dtype, count=total)
    data = flat.tobytes()
    meta = {"tokens": int(total), "documents": len(ids), "dtype": np.dtype(dtype).name, "vocab_size": vocab,
            "sha256": hashlib.sha256(data).hexdigest()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    atomic_write_bytes(meta_path(path), json.dumps(meta, indent=1).encode())
    return meta


def open_shard(path: Path) -> np.ndarray:
    """Memory-map a shard read-only, with the dtype its meta json names.

    An empty shard cannot be memory-mapped; it comes back as an empty in-memory array."""
    path = Path(path)
    meta = json.loads(meta_path(path).read_text())
    dtype = np.dtype(meta["dtype"])
    if meta["tokens"] == 0:
        return np.empty(0, dtype=dtype)
    arr = np.memmap(path, dtype=dtype, mode="r")
    if arr.shape[0] != meta["tokens"]:
        raise ValueError(f"shard {path}: {arr.shape[0]} tokens on disk, meta says {meta['tokens']}")
    return arr


class MixtureSampler:
    """Random windows of `context + 1` tokens drawn from weighted shards.

    Each row picks a source with probability weight / sum(weights), then a uniform start
    offset in that shard. Sources with weight 0 or no weight are never sampled and do not
    change which rows the others get."""

    def __init__(self, shards: dict[str, Path], weights: dict[str, float], context: int, batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be a positive multiple of world_size {world_size}")
        if context < 1:
            raise ValueError(f"context must be >= 1, got {context}")
        for name, w in weights.items():
            if not isinstance(w, numbers.Real) or isinstance(w, bool) or not np.isfinite(w) or w < 0:
                raise ValueError(f"weight of source {name!r} must be a finite number >= 0, got {w!r}")
            if w > 0 and name not in shards:
                raise ValueError(f"source {name!r} has weight {w} but no shard")
        # sorted so that the draw does not depend on dict order
        self.names = sorted(n for n, w in weights.items() if w > 0)
        if not self.names:
            raise ValueError("all mixture weights are 0")
        self.data = {n: open_shard(shards[n]) for n in self.names}
        for n in self.names:
            if len(self.data[n]) < context + 1:
                raise ValueError(f"shard of source {n!r} has {len(self.data[n])} tokens, "
                                 f"fewer than context + 1 = {context + 1}")
        w = np.array([float(weights[n]) for n in self.names])
        self.probs = w / w.sum()
        self.n_starts = np.array([len(self.data[n]) - context for n in self.names], dtype=np.int64)
        self.context, self.batch_size, self.seed = context, batch_size, seed
        self.rank, self.world_size = rank, world_size

    def _draw(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Source index and start offset of every row of the global batch at `step`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        rng = np.random.default_rng([self.seed, step])
        src = rng.choice(len(self.names), size=self.batch_size, p=self.probs)
        starts = rng.integers(0, self.n_starts[src])
        return src, starts

    def batch(self, step: int) -> torch.LongTensor:
        """This rank's rows of the batch at `step`: shape (batch_size // world_size, context + 1)."""
        src, starts = self._draw(step)
        rows = range(self.rank, self.batch_size, self.world_size)
        out = np.empty((len(rows), self.context + 1), dtype=np.int64)
        for j, i in enumerate(rows):
            out[j] = self.data[self.names[src[i]]][starts[i]: starts[i] + self.context + 1]
        return torch.from_numpy(out)

    def source_counts(self, step: int) -> dict[str, int]:
        """How many rows of this rank's batch at `step` come from each source (for logging)."""
        src, _ = self._draw(step)
        counts = np.bincount(src[self.rank:: self.world_size], minlength=len(self.names))
        return {n: int(c) for n, c in zip(self.names, counts)}
