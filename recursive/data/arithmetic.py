"""Generated arithmetic: one problem per document, "123+45=168".

A problem is an index into every distinct expression (a+b, a-b with a >= b, a*b; operands
below N = 10**max_digits), so drawing indices without replacement gives distinct problems
with no retry loop. Subtraction keeps a >= b because a negative answer puts "=-" in the
text, which BPE merges into one token: a prompt ending in "=" would then never be followed
by the "-" token the model saw in training, and exact match would fail on a tokenizer
artefact rather than on arithmetic.
"""

from __future__ import annotations

import numpy as np

# The eval problems come from a fixed stream, not the lineage seed: lineages with different
# seeds are then scored on the same problems and can be compared side by side.
_EVAL_SEED = 20261127


def arithmetic_space(max_digits: int) -> int:
    """How many distinct problems exist with operands of up to `max_digits` digits."""
    n = 10**max_digits
    return 2 * n * n + n * (n + 1) // 2


def _decode(idx: np.ndarray, n: int) -> list[tuple[str, str]]:
    nn = n * n
    out_a, out_b = (idx // n) % n, idx % n  # "+" block [0, nn) and "*" block [nn, 2nn)
    t = np.maximum(idx - 2 * nn, 0)  # "-" block: triangular index of the pair a >= b
    a = ((np.sqrt(8 * t.astype(np.float64) + 1) - 1) // 2).astype(np.int64)
    a = np.where(a * (a + 1) // 2 > t, a - 1, a)  # float sqrt can be off by one either way
    a = np.where((a + 1) * (a + 2) // 2 <= t, a + 1, a)
    sub = idx >= 2 * nn
    out_a, out_b = np.where(sub, a, out_a), np.where(sub, t - a * (a + 1) // 2, out_b)
    op = np.where(sub, 1, np.where(idx < nn, 0, 2))
    result = np.where(op == 0, out_a + out_b, np.where(op == 1, out_a - out_b, out_a * out_b))
    sym = "+-*"
    return [(f"{x}{sym[o]}{y}=", str(r))
            for o, x, y, r in zip(op.tolist(), out_a.tolist(), out_b.tolist(), result.tolist())]


def arithmetic_problems(max_digits: int, n_train: int, n_eval: int, seed: int, split: str) -> list[tuple[str, str]]:
    """(prompt "a+b=", answer) pairs of one split, in a seeded random order.

    Eval is drawn first from a fixed stream, so it stays put when n_train or the seed
    changes; train (from `seed`) skips every eval expression."""
    n = 10**max_digits
    space = arithmetic_space(max_digits)
    eval_idx = np.random.default_rng([_EVAL_SEED, 1]).choice(space, size=n_eval, replace=False)
    if split == "eval":
        return _decode(eval_idx, n)
    draw = np.random.default_rng([seed, 2]).choice(space, size=min(space, n_train + n_eval), replace=False)
    return _decode(draw[~np.isin(draw, eval_idx)][:n_train], n)
