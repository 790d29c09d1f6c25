"""Registered data sources: the only data a plan may put in its mixture.

A source is a config dict `{"kind": KIND, "domain": str, "description": str, **options}`
registered under a name. `load_documents` turns it into the documents of one split.

Splits. Train and eval are disjoint, and no eval split depends on the seed, so lineages
with different seeds are scored on the same eval sets:
- stdlib files go to eval when sha256("split:" + relative path) falls under `eval_fraction`.
  `stdlib_prose` uses the split of the file a docstring comes from, so an eval docstring is
  never inside a train code file; byte-identical texts in both splits are dropped from train.
- arithmetic: eval problems come from a fixed stream; train (from the seed) never repeats
  an eval expression.
- safety: a quarter of the subject pairs are held out (see `recursive.data.requests`).
- research_record: the eval split is always empty: the record changes every generation,
  and proposer competence is evaluated by asking the model to propose, not by loss.
- hf: a named `eval_split`, or a hash of the text carved off by `eval_fraction`.

Caps. `max_chars` caps the train split; the eval split is capped at
`int(max_chars * eval_fraction)`. Documents are taken in a fixed pseudo-random order
(a hash of their id) until the cap, so a cap is a uniform sample, not the alphabetically
first modules. Natural text (code, prose, hf) may have its last document cut to fit;
generated documents (arithmetic, safety, records) are never cut, since "123+45=1" is wrong.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import math
import os
import random
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from recursive.data.arithmetic import arithmetic_problems, arithmetic_space
from recursive.data.requests import REFUSAL_MARKERS, safety_documents, safety_eval_items  # noqa: F401 (re-exported)

REGISTERED_KINDS: tuple[str, ...] = ("stdlib_code", "stdlib_prose", "arithmetic", "safety", "research_record", "hf")
PLAN_PREFIX = "\nPLAN: "  # = recursive.proposers.prompt.PLAN_MARKER
OUTCOME_PREFIX = "\nOUTCOME: "
_REQUIRED = object()
_OPT_STR = (str, type(None))
# kind -> option -> (accepted types, default)
_OPTIONS: dict[str, dict[str, tuple[Any, Any]]] = {
    "stdlib_code": {"exclude_tests": (bool, True)},
    "stdlib_prose": {"exclude_tests": (bool, True), "min_chars": (int, 80)},
    "arithmetic": {"max_digits": (int, 3), "n_train": (int, 200_000), "n_eval": (int, 500)},
    "safety": {},
    "research_record": {},
    "hf": {"path": (str, _REQUIRED), "name": (_OPT_STR, None), "data_files": ((str, list, dict, type(None)), None),
           "text_field": (str, "text"), "split": (str, "train"), "eval_split": (_OPT_STR, None),
           "streaming": (bool, False), "cache_dir": (_OPT_STR, None)},
}
_DESCRIPTIONS = {
    "stdlib_code": "Python standard-library source files (human-written code)",
    "stdlib_prose": "English docstrings and pydoc topic texts from the Python standard library",
    "arithmetic": "generated integer arithmetic problems like 123+45=168",
    "safety": "chat turns: harmful requests refused, benign look-alike requests answered",
    "research_record": "this lineage's earlier prompts, plans (JSON) and gate outcomes",
    "hf": "a Hugging Face dataset",
}
_TEST_DIRS = ("test/", "tests/", "idlelib/idle_test/", "lib2to3/tests/")


def _err(name: str, field: str, msg: str) -> ValueError:
    return ValueError(f"data source {name!r}: field {field!r}: {msg}")


def check_source(name: str, source: dict) -> dict:
    """Validate a source config; return it with every option resolved to a value.

    Raises ValueError naming the source and the offending field."""
    if not isinstance(source, dict):
        raise _err(name, "kind", f"a source must be a mapping, got {type(source).__name__}")
    kind = source.get("kind")
    if kind not in REGISTERED_KINDS:
        raise _err(name, "kind", f"unknown kind {kind!r}; registered: {', '.join(REGISTERED_KINDS)}")
    spec = _OPTIONS[kind]
    out: dict[str, Any] = {"kind": kind, "domain": source.get("domain", name),
                           "description": source.get("description", _DESCRIPTIONS[kind])}
    for field in ("domain", "description"):
        if not isinstance(out[field], str):
            raise _err(name, field, "must be a string")
    for field in source:
        if field not in spec and field not in out:
            raise _err(name, field, f"unknown option for kind {kind!r}; allowed: {sorted(spec)}")
    for field, (types, default) in spec.items():
        value = source.get(field, default)
        if value is _REQUIRED:
            raise _err(name, field, f"required for kind {kind!r}")
        # bool is an int subclass; an int option given True is a config mistake, not 1
        if not isinstance(value, types) or (types is int and isinstance(value, bool)):
            raise _err(name, field, f"expected {getattr(types, '__name__', types)}, got {value!r}")
        out[field] = value
    if kind == "arithmetic":
        if not 1 <= out["max_digits"] <= 6:
            raise _err(name, "max_digits", "must be in [1, 6]")
        for field in ("n_train", "n_eval"):
            if out[field] < 0:
                raise _err(name, field, "must be >= 0")
        if out["n_train"] + out["n_eval"] > arithmetic_space(out["max_digits"]):
            raise _err(name, "n_train", f"more problems than exist with max_digits={out['max_digits']}")
    if kind == "stdlib_prose" and out["min_chars"] < 1:
        raise _err(name, "min_chars", "must be >= 1")
    return out


def describe(name: str, source: dict) -> str:
    """One line for the proposer's catalogue of data sources."""
    src = check_source(name, source)
    return f"{name}: {src['description']} (kind={src['kind']}, domain={src['domain']})"


def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _in_eval(key: str, eval_fraction: float) -> bool:
    return int(_h("split:" + key)[:16], 16) < eval_fraction * 2**64


@functools.lru_cache(maxsize=2)
def _stdlib_files(exclude_tests: bool) -> tuple[tuple[str, str], ...]:
    """(relative posix path, text) of every stdlib .py file, sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            rel = (Path(dirpath) / fn).relative_to(root).as_posix()
            if exclude_tests and any(rel.startswith(t) or f"/{t}" in rel for t in _TEST_DIRS):
                continue
            # some stdlib files are deliberately not UTF-8 (encoding tests)
            out.append((rel, (Path(dirpath) / fn).read_bytes().decode("utf-8", errors="replace")))
    return tuple(sorted(out))


@functools.lru_cache(maxsize=2)
def _stdlib_docstrings(exclude_tests: bool, min_chars: int) -> tuple[tuple[str, str], ...]:
    """(id "relpath:qualname", cleaned docstring) for stdlib docstrings and pydoc topics."""
    out = []
    for rel, text in _stdlib_files(exclude_tests):
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):  # lib2to3 fixtures and the like
            continue
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, qual = stack.pop()
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= min_chars:
                out.append((f"{rel}:{qual or '<module>'}", doc))
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    stack.append((child, f"{qual}.{child.name}" if qual else child.name))
    from pydoc_data.topics import topics

    for topic, text in sorted(topics.items()):
        text = inspect.cleandoc(text)
        if len(text) >= min_chars:
            out.append((f"pydoc_data/topics.py:{topic}", text))
    return tuple(out)


def _split_stdlib(items: Iterable[tuple[str, str]], split: str, eval_fraction: float) -> list[str]:
    """Split (id, text) pairs by the file part of the id; drop train texts also in eval."""
    items = list(items)
    is_eval = {i: _in_eval(i.split(":", 1)[0], eval_fraction) for i, _ in items}
    eval_hashes = {_h(t) for i, t in items if is_eval[i]}
    seen: set[str] = set()
    chosen = []
    for i, text in sorted(items, key=lambda it: _h("order:" + it[0])):
        th = _h(text)
        if not text.strip() or is_eval[i] != (split == "eval") or th in seen or (split == "train" and th in eval_hashes):
            continue
        seen.add(th)
        chosen.append(text)
    return chosen


def arithmetic_eval_items(source: dict, *, seed: int = 0) -> list[dict]:
    """`{"prompt": "12+34=", "answer": "46"}` for every eval problem of an arithmetic source."""
    src = check_source("arithmetic", source)
    return [{"prompt": p, "answer": a}
            for p, a in arithmetic_problems(src["max_digits"], src["n_train"], src["n_eval"], seed, "eval")]


_RECORD_FIELDS = {"generation": int, "attempt": int, "status": str, "prompt": str, "plan": dict,
                  "gate_reasons": list, "metrics": dict}
RECORD_STATUSES = ("promoted", "rejected", "failed", "screened")
TRAJECTORY_HEADER = "PLANS, worst to best:"
TRAJECTORY_MAX = 4  # plans per augmented trajectory


def format_research_record(entries: list[dict] | None, *, outcome_first: bool = False, augment: int = 0,
                           seed: int = 0) -> list[str]:
    """One document per record entry, then `augment` trajectory documents.

    outcome_first (`proposer.outcome_conditioning`): the prompt the proposer saw (its own
    "OUTCOME: <requested>" line dropped), OUTCOME_PREFIX and the entry's outcome (the verdict
    and binned held-out gain, or "screened r/n, loss X"), PLAN_PREFIX, the plan, then a
    METRICS line: the outcome conditions the plan, as in decision transformers, so a
    successor asked for the best outcome writes the plans that had it. Otherwise prompt,
    PLAN_PREFIX, the plan, OUTCOME_PREFIX, the status and gate reasons, METRICS.

    augment (`proposer.record_augment`, BONET): documents "PLANS, worst to best:" followed by
    up to TRAJECTORY_MAX outcome/plan pairs drawn (seeded by `seed`) from one pool, the
    decided attempts or one attempt's screened candidates (scores are only comparable
    within a pool), and sorted worst to best: promoted above rejected and failed, then
    lower held-out loss; lower screen loss for screened candidates.

    The plan is rendered by `recursive.proposers.base.plan_text`, the exact layout the
    constrained decoder emits (compact, schema key order, no float exponents), so a
    successor trained on the record learns the text it will be asked to write. Stored
    prompts already end with the "\nPLAN: " marker (`build_prompt` puts it there); it is
    not doubled."""
    from recursive.proposers.base import plan_text  # pure Python; only this function needs it

    docs = []
    for k, e in enumerate(entries or []):
        for field, typ in _RECORD_FIELDS.items():
            if not isinstance(e.get(field), typ):
                raise ValueError(f"research record entry {k}: field {field!r}: expected {typ.__name__}")
        if e["status"] not in RECORD_STATUSES:
            raise ValueError(f"research record entry {k}: field 'status': got {e['status']!r}")
        if not isinstance(e.get("outcome", ""), str):
            raise ValueError(f"research record entry {k}: field 'outcome': expected str")
        prompt = _prompt_body(e["prompt"])
        if outcome_first:
            doc = f"{prompt}{OUTCOME_PREFIX}{e.get('outcome') or _verdict(e)}{PLAN_PREFIX}{plan_text(e['plan'])}"
        else:
            doc = f"{prompt}{PLAN_PREFIX}{plan_text(e['plan'])}{OUTCOME_PREFIX}{_verdict(e)}"
        if e["metrics"]:
            doc += "\nMETRICS: " + json.dumps(e["metrics"], sort_keys=True, separators=(",", ":"))
        docs.append(doc)
    return docs + _trajectories(entries or [], augment, seed, plan_text)


def _verdict(e: dict) -> str:
    return " ".join([e["status"], "; ".join(map(str, e["gate_reasons"]))]).rstrip()


def _prompt_body(prompt: str) -> str:
    """A stored prompt less its closing markers: "\nPLAN: " and a requested "\nOUTCOME: ..." line."""
    body = prompt[: -len(PLAN_PREFIX)] if prompt.endswith(PLAN_PREFIX) else prompt
    at = body.rfind(OUTCOME_PREFIX)
    return body[:at] if at >= 0 and "\n" not in body[at + 1:] else body


def _record_rank(e: dict) -> tuple:
    """Worst first: failed/rejected below promoted, then higher loss below lower."""
    m = e.get("metrics") or {}
    loss = m.get("screen_loss") if e["status"] == "screened" else m.get("heldout_loss")
    loss = loss if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf
    return (e["status"] in ("promoted", "screened"), -loss)


def _trajectories(entries: list[dict], n: int, seed: int, plan_text) -> list[str]:
    pools: dict[Any, list[dict]] = {}
    for e in entries:
        key = ("screened", e["generation"], e["attempt"]) if e["status"] == "screened" else "decided"
        pools.setdefault(key, []).append(e)
    pools_list = [pool for _, pool in sorted(pools.items(), key=lambda kv: str(kv[0])) if len(pool) >= 2]
    if n <= 0 or not pools_list:
        return []
    rng = random.Random(f"research-trajectories:{seed}:{len(entries)}")
    docs = []
    for _ in range(n):
        pool = rng.choice(pools_list)
        picked = sorted(rng.sample(pool, min(TRAJECTORY_MAX, len(pool))), key=_record_rank)
        docs.append(TRAJECTORY_HEADER + "".join(f"{OUTCOME_PREFIX}{e.get('outcome') or _verdict(e)}"
                                                f"{PLAN_PREFIX}{plan_text(e['plan'])}" for e in picked))
    return docs


def _hf_texts(src: dict, split: str, eval_fraction: float) -> Iterator[str]:
    import datasets

    hf_split = src["split"] if split == "train" or src["eval_split"] is None else src["eval_split"]
    ds = datasets.load_dataset(src["path"], src["name"], data_files=src["data_files"], split=hf_split,
                               streaming=src["streaming"], cache_dir=src["cache_dir"])
    for row in ds:
        text = row[src["text_field"]]
        if src["eval_split"] is None and _in_eval(_h(text), eval_fraction) != (split == "eval"):
            continue
        yield text


def _take(docs: Iterable[str], cap: int, cut_last: bool) -> list[str]:
    out, total = [], 0
    for doc in docs:
        if total + len(doc) > cap:
            if cut_last and cap > total:
                out.append(doc[: cap - total])
            break
        out.append(doc)
        total += len(doc)
    return out


def load_documents(name: str, source: dict, split: str, *, max_chars: int, eval_fraction: float,
                   seed: int = 0, record_entries: list[dict] | None = None,
                   record_options: dict | None = None) -> list[str]:
    """Documents of one split ("train" or "eval") of a registered source, deterministically.

    Train is capped at `max_chars` characters, eval at `int(max_chars * eval_fraction)`."""
    src = check_source(name, source)
    if split not in ("train", "eval"):
        raise ValueError(f"data source {name!r}: split must be 'train' or 'eval', got {split!r}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"data source {name!r}: eval_fraction must be in [0, 1), got {eval_fraction!r}")
    cap = int(max_chars) if split == "train" else int(max_chars * eval_fraction)
    kind = src["kind"]
    if kind == "stdlib_code":
        files = _stdlib_files(src["exclude_tests"])
        return _take(_split_stdlib(files, split, eval_fraction), cap, cut_last=True)
    if kind == "stdlib_prose":
        docs = _stdlib_docstrings(src["exclude_tests"], src["min_chars"])
        return _take(_split_stdlib(docs, split, eval_fraction), cap, cut_last=True)
    if kind == "arithmetic":
        problems = arithmetic_problems(src["max_digits"], src["n_train"], src["n_eval"], seed, split)
        return _take((p + a for p, a in problems), cap, cut_last=False)
    if kind == "safety":
        return _take(sorted(safety_documents(split), key=lambda d: _h("order:" + d)), cap, cut_last=False)
    if kind == "research_record":
        if split == "eval":
            return []
        # keep the most recent entries when capped: they carry the current gate's feedback
        docs = _take(reversed(format_research_record(record_entries, **(record_options or {}))), cap, cut_last=False)
        return docs[::-1]
    return _take(_hf_texts(src, split, eval_fraction), cap, cut_last=True)
