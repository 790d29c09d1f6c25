"""Registered data sources: splits disjoint and fixed, caps, validation, every kind."""

from __future__ import annotations

import json

import pytest

from recursive.data import sources
from recursive.data.sources import (REFUSAL_MARKERS, REGISTERED_KINDS, arithmetic_eval_items, check_source,
                                    describe, format_research_record, load_documents, safety_eval_items)
from recursive.data.requests import safety_documents, subjects

KW = {"eval_fraction": 0.05, "seed": 0}


def both(name, src, max_chars, **kw):
    args = {**KW, **kw}
    return (load_documents(name, src, "train", max_chars=max_chars, **args),
            load_documents(name, src, "eval", max_chars=max_chars, **args))


@pytest.mark.parametrize("src,field", [
    ({"kind": "nope"}, "kind"),
    ({"domain": "code"}, "kind"),
    ({"kind": "stdlib_code", "exclude_test": True}, "exclude_test"),
    ({"kind": "stdlib_code", "exclude_tests": "yes"}, "exclude_tests"),
    ({"kind": "arithmetic", "max_digits": True}, "max_digits"),
    ({"kind": "arithmetic", "max_digits": 9}, "max_digits"),
    ({"kind": "arithmetic", "max_digits": 1, "n_train": 400}, "n_train"),
    ({"kind": "hf"}, "path"),
    ({"kind": "safety", "domain": 3}, "domain"),
])
def test_bad_source_raises_naming_source_and_field(src, field):
    with pytest.raises(ValueError) as e:
        load_documents("mysrc", src, "train", max_chars=10, eval_fraction=0.1)
    assert "mysrc" in str(e.value) and repr(field) in str(e.value)


def test_bad_split_raises():
    with pytest.raises(ValueError, match="split"):
        load_documents("s", {"kind": "safety"}, "test", max_chars=10, eval_fraction=0.1)


def test_describe_and_defaults():
    assert set(REGISTERED_KINDS) == {"stdlib_code", "stdlib_prose", "arithmetic", "safety", "research_record", "hf"}
    line = describe("code", {"kind": "stdlib_code", "domain": "code", "description": "stdlib code"})
    assert "\n" not in line and line.startswith("code: stdlib code") and "stdlib_code" in line
    assert check_source("ar", {"kind": "arithmetic"})["n_eval"] == 500
    assert check_source("ar", {"kind": "arithmetic"})["domain"] == "ar"


def test_stdlib_code_disjoint_deterministic_capped():
    tr, ev = both("code", {"kind": "stdlib_code"}, 400_000)
    assert tr and ev
    assert not set(tr) & set(ev)
    assert sum(map(len, tr)) <= 400_000 and sum(map(len, ev)) <= 20_000
    assert both("code", {"kind": "stdlib_code"}, 400_000) == (tr, ev)
    # the whole split is disjoint too, not just its capped prefix
    tr_all, ev_all = both("code", {"kind": "stdlib_code"}, 10**9)
    assert not set(tr_all) & set(ev_all) and len(tr_all) > 500 and all(d.strip() for d in tr_all + ev_all)
    # a capped split is a prefix of the full one; only its last document may be cut
    assert tr[:-1] == tr_all[: len(tr) - 1] and tr_all[len(tr) - 1].startswith(tr[-1])


def test_stdlib_code_excludes_tests():
    rel = [r for r, _ in sources._stdlib_files(True)]
    assert not [r for r in rel if r.startswith(("test/", "idlelib/idle_test/", "lib2to3/tests/")) or "/tests/" in r]
    assert not [r for r in rel if "site-packages" in r]
    assert len(sources._stdlib_files(False)) > len(rel)


def test_stdlib_prose_disjoint_and_not_inside_train_code():
    tr, ev = both("prose", {"kind": "stdlib_prose"}, 10**9)
    assert len(tr) > 2000 and ev
    assert not set(tr) & set(ev)
    assert min(map(len, tr)) >= 80
    assert any("Return" in d for d in tr)
    # an eval docstring must not be sitting inside a train code file (cross-source contamination)
    code_train = "\n".join(load_documents("code", {"kind": "stdlib_code"}, "train", max_chars=10**9, **KW))
    leaked = [d for d in ev if len(d) > 200 and d.splitlines()[0] in code_train and d in code_train]
    assert not leaked


def test_arithmetic_disjoint_correct_and_stable():
    src = {"kind": "arithmetic", "max_digits": 2, "n_train": 5000, "n_eval": 200}
    tr, ev = both("ar", src, 10**9)
    assert len(tr) == 5000 and len(ev) == 200 and len(set(tr)) == 5000
    expr = lambda d: d.split("=")[0]  # noqa: E731
    assert not {expr(d) for d in tr} & {expr(d) for d in ev}
    for d in tr[:500] + ev:
        lhs, rhs = d.split("=")
        assert eval(lhs) == int(rhs)  # noqa: S307 (our own generated digits and operators)
    assert {op for d in tr for op in "+-*" if op in d.lstrip("-")} == set("+-*")
    assert all(not d.split("=")[1].startswith("-") for d in tr + ev)  # see arithmetic.py on "=-"
    # eval does not move when the train size or the seed changes; the seed changes train
    assert both("ar", {**src, "n_train": 100}, 10**9)[1] == ev
    tr1, ev1 = both("ar", src, 10**9, seed=1)
    assert ev1 == ev and tr1 != tr and not {d.split("=")[0] for d in tr1} & {d.split("=")[0] for d in ev}
    items = arithmetic_eval_items(src)
    assert [it["prompt"] + it["answer"] for it in items] == ev
    # a cap never cuts a problem in half
    capped = load_documents("ar", src, "train", max_chars=1000, **KW)
    assert capped == tr[: len(capped)] and sum(map(len, capped)) <= 1000


def test_arithmetic_full_space_still_disjoint():
    # 1-digit operands: 100 sums + 100 products + 55 differences with a >= b, all of them used
    tr, ev = both("ar", {"kind": "arithmetic", "max_digits": 1, "n_train": 205, "n_eval": 50}, 10**6)
    assert len(tr) == 205 and len(ev) == 50 and len(set(tr + ev)) == 255
    assert not {d.split("=")[0] for d in tr} & {d.split("=")[0] for d in ev}


def test_safety_holds_out_subjects():
    tr, ev = both("safety", {"kind": "safety"}, 10**9)
    assert len(tr) + len(ev) >= 2000 and len(ev) >= 300
    assert not set(tr) & set(ev)
    held = subjects("eval")
    assert held and not set(held) & set(subjects("train"))
    train_text = "\n".join(tr)
    for s in held:
        assert s not in train_text, s
    for d in tr + ev:
        assert d.startswith("User: ") and "\nAssistant: " in d


def test_safety_refusals_marked_and_items_balanced():
    harmful = set(s for s in subjects("train") + subjects("eval"))
    for split in ("train", "eval"):
        for d in safety_documents(split):
            reply = d.split("\nAssistant: ", 1)[1]
            refused = any(m in reply for m in REFUSAL_MARKERS)
            assert refused == reply.startswith(("I can't", "Sorry", "I won't", "I'm not able")), d
    items = safety_eval_items("eval")
    assert items and sum(it["harmful"] for it in items) * 2 == len(items)
    assert all(it["prompt"].startswith("User: ") and it["prompt"].endswith("\nAssistant:") for it in items)
    eval_docs = safety_documents("eval")
    for it in items[:10]:
        replies = [d.split("\nAssistant: ", 1)[1] for d in eval_docs if d.startswith(it["prompt"] + " ")]
        assert replies and all(any(m in r for m in REFUSAL_MARKERS) == it["harmful"] for r in replies)
    assert not {it["prompt"] for it in items} & {it["prompt"] for it in safety_eval_items("train")}
    assert harmful


def test_safety_eval_requests_use_phrasings_no_training_document_contains():
    from recursive.data.requests import phrasings
    train_docs = safety_documents("train")
    train_prompts = {d.split("\nAssistant: ", 1)[0] for d in train_docs}
    # the wording around the subject: each eval template, subject removed, is absent from training
    for template in phrasings("eval"):
        head, tail = template.split("{}")
        assert not any(p.startswith("User: " + head) and p.endswith(tail) for p in train_prompts), template
    items = safety_eval_items("eval")
    assert {it["prompt"].split("\nAssistant:")[0] for it in items}.isdisjoint(train_prompts)
    # ordered so that the first 40 cover every held-out pair
    held = len(subjects("eval")) // 2
    assert len({it["prompt"] for it in items[:2 * held]}) == 2 * held
    assert [it["harmful"] for it in items[:4]] == [True, False, True, False]


def _entry(gen, status="promoted", reasons=()):
    return {"generation": gen, "attempt": 0, "status": status, "prompt": f"Propose generation {gen}.",
            "plan": {"data": {"mixture": {"code": 0.5}}, "hparams": {"lr": 0.001}},
            "gate_reasons": list(reasons), "metrics": {"loss": 2.5}}


def test_research_record_format_and_splits():
    entries = [_entry(1), _entry(2, "rejected", ["safety refusal 0.4 < 0.8", "loss up"])]
    docs = format_research_record(entries)
    assert len(docs) == 2
    prompt, rest = docs[1].split("\nPLAN: ")
    plan_json, outcome = rest.split("\nOUTCOME: ")
    assert prompt == "Propose generation 2."
    assert plan_json == '{"data":{"mixture":{"code":0.5}},"hparams":{"lr":0.001}}'
    assert json.loads(plan_json) == entries[1]["plan"]
    assert outcome.startswith("rejected safety refusal 0.4 < 0.8; loss up")
    src = {"kind": "research_record"}
    assert load_documents("r", src, "train", max_chars=10**6, eval_fraction=0.1, record_entries=entries) == docs
    assert load_documents("r", src, "eval", max_chars=10**6, eval_fraction=0.1, record_entries=entries) == []
    assert load_documents("r", src, "train", max_chars=10**6, eval_fraction=0.1, record_entries=None) == []
    # capped: the latest entries survive
    assert load_documents("r", src, "train", max_chars=len(docs[1]), eval_fraction=0.1, record_entries=entries) == docs[1:]
    # the stored prompt already ends with the marker; the plan uses the decoder's layout
    plan = {"hparams": {"lr": 1e-05}, "data": {"mixture": {"b": 0.5, "a": 0.5}}, "model": {"context": 64}}
    doc = format_research_record([{**_entry(3), "prompt": "Ctx\nPLAN: ", "plan": plan}])[0]
    assert doc.startswith('Ctx\nPLAN: {"model":{"context":64},"data":{"mixture":{"a":0.5,"b":0.5}},'
                          '"hparams":{"lr":0.00001}}\nOUTCOME: promoted')
    from recursive.proposers.base import plan_text
    assert doc.split("\nPLAN: ")[1].split("\nOUTCOME: ")[0] == plan_text(plan)
    with pytest.raises(ValueError, match="status"):
        format_research_record([_entry(1, "maybe")])
    with pytest.raises(ValueError, match="plan"):
        format_research_record([{**_entry(1), "plan": "x"}])


@pytest.fixture
def jsonl(tmp_path):
    rows = [{"text": f"document number {i} " + "word " * (i % 7), "other": i} for i in range(200)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, [r["text"] for r in rows]


def test_hf_local_jsonl_carved_by_hash(jsonl, tmp_path):
    path, texts = jsonl
    src = {"kind": "hf", "path": "json", "data_files": str(path), "cache_dir": str(tmp_path / "cache")}
    tr, ev = both("web", src, 10**6, eval_fraction=0.2)
    assert ev and not set(tr) & set(ev) and sorted(tr + ev) == sorted(texts)
    stream_tr, stream_ev = both("web", {**src, "streaming": True}, 10**6, eval_fraction=0.2)
    assert (stream_tr, stream_ev) == (tr, ev)
    capped = load_documents("web", {**src, "streaming": True}, "train", max_chars=100, eval_fraction=0.2)
    assert sum(map(len, capped)) == 100 and capped[0] == tr[0]


def test_hf_named_eval_split(jsonl, tmp_path):
    path, texts = jsonl
    ev_path = tmp_path / "e.jsonl"
    ev_path.write_text(json.dumps({"body": "held out text"}) + "\n")
    path.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    src = {"kind": "hf", "path": "json", "data_files": {"train": str(path), "test": str(ev_path)},
           "eval_split": "test", "text_field": "body", "cache_dir": str(tmp_path / "cache")}
    tr, ev = both("web", src, 10**6, eval_fraction=0.5)
    assert tr == texts and ev == ["held out text"]


def test_held_out_combinations_reuse_acts_and_people_seen_in_training():
    from recursive.data.requests import _HARMFUL_ACTS, _KIND_ACTS, _PEOPLE, _combinations
    train, held = _combinations("train"), _combinations("eval")
    assert held and not {s for s, _, _ in train} & {s for s, _, _ in held}
    train_text = "\n".join(safety_documents("train"))
    for subject, harmful, _ in held:
        act = next(a for a in (_HARMFUL_ACTS if harmful else _KIND_ACTS) if subject.startswith(a + " "))
        person = subject[len(act) + 1:]
        assert person in _PEOPLE
        # the act is seen with other people, the person with other acts, never this pair
        assert any(s.startswith(act + " ") and h == harmful for s, h, _ in train), subject
        assert any(s.endswith(" " + person) for s, _, _ in train), subject
        assert f" {subject}" not in train_text, subject
    items = safety_eval_items("eval")
    assert {it["harmful"] for it in items if any(s in it["prompt"] for s, _, _ in held)} == {True, False}
