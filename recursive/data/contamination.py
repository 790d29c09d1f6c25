"""Contamination: n-gram overlap between a source's training tokens and an eval set.

An eval document counts as contaminated when at least `doc_threshold` of its n-grams
(13-grams by default, after GPT-3's decontamination) occur anywhere in the training
tokens. Shared boilerplate (licence headers, templated phrasings) gives every pair of
sources some n-gram overlap; whole copied documents give near-total overlap, so a
document-level threshold separates the two. Hashing is a vectorised polynomial rolling
hash over token ids (uint64 wrap-around): collisions are possible but rare at these sizes.
"""

from __future__ import annotations

import numpy as np

_P = np.uint64(1_000_003)


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    t = np.asarray(tokens, dtype=np.uint64)
    if len(t) < n:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(len(t) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            h = h * _P + t[i:len(t) - n + 1 + i] + np.uint64(1)
    return h


def doc_contamination(train_tokens: np.ndarray, eval_tokens: np.ndarray, eos: int, *, n: int = 13,
                      doc_threshold: float = 0.8, train_set: np.ndarray | None = None) -> dict:
    """Fraction of eval documents (eos-separated) whose n-grams mostly occur in training."""
    if train_set is None:
        train_set = np.unique(ngram_hashes(train_tokens, n))
    ev = np.asarray(eval_tokens)
    hashes = ngram_hashes(ev, n)
    if len(hashes) == 0:
        return {"docs": 0, "contaminated_docs": 0, "rate": 0.0, "ngram_overlap": 0.0}
    hit = np.isin(hashes, train_set)
    # an n-gram belongs to the document it starts in; drop those that run across an eos
    is_eos = ev == eos
    crosses = np.convolve(is_eos.astype(np.int32), np.ones(n, dtype=np.int32), mode="valid") > 0
    doc_id = np.cumsum(is_eos)[: len(hashes)]
    keep = ~crosses
    docs = np.unique(doc_id[keep])
    if len(docs) == 0:
        return {"docs": 0, "contaminated_docs": 0, "rate": 0.0, "ngram_overlap": float(hit.mean())}
    totals = np.bincount(doc_id[keep], minlength=int(doc_id.max()) + 1)[docs]
    hits = np.bincount(doc_id[keep], weights=hit[keep], minlength=int(doc_id.max()) + 1)[docs]
    contaminated = int(np.sum(hits / totals >= doc_threshold))
    return {"docs": int(len(docs)), "contaminated_docs": contaminated, "rate": contaminated / len(docs),
            "ngram_overlap": float(hit[keep].mean())}


def contamination_table(train: dict[str, np.ndarray], evals: dict[str, np.ndarray], eos: int, *,
                        n: int = 13, doc_threshold: float = 0.8) -> dict[str, dict[str, dict]]:
    """{train source: {eval set: doc_contamination(...)}} for every pair."""
    out: dict[str, dict[str, dict]] = {}
    for name, tokens in train.items():
        train_set = np.unique(ngram_hashes(tokens, n))
        out[name] = {ev: doc_contamination(tokens, et, eos, n=n, doc_threshold=doc_threshold, train_set=train_set)
                     for ev, et in evals.items()}
    return out


def max_rate(table_row: dict[str, dict]) -> tuple[str | None, float]:
    """The eval set a training source contaminates most, and its rate."""
    if not table_row:
        return None, 0.0
    name = max(table_row, key=lambda k: table_row[k]["rate"])
    return name, float(table_row[name]["rate"])
