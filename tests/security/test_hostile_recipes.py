"""Every recipe of the hostile corpus is refused by the static policy or the smoke test, by
`recursive check-plan` and by the loop's proposal stage (`propose.judge`, which replaces the
code with the parent's); every benign recipe is accepted by all of them."""

import contextlib
import io
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from recursive import cli
from recursive.propose import judge
from recursive.proposers.base import Candidate
from recursive.recipe import check_policy, load_recipe, smoke_test

from .conftest import OVERRIDES, run_cli, write_plan
from .corpus import BENIGN, HOSTILE, SEED

STATIC = [h for h in HOSTILE if h[2] == "static"]
RUNTIME = [h for h in HOSTILE if h[2] == "runtime"]
LOOP_BENIGN = 6  # benign recipes also sent through the loop's judge (two smoke tests each)


def test_corpus_size_and_coverage():
    assert len(HOSTILE) >= 50
    assert len({h[0] for h in HOSTILE}) == len(HOSTILE)
    assert set(Counter(h[1] for h in HOSTILE)) >= {
        "import", "introspection", "dynamic-code", "read", "write", "native", "frames", "signals",
        "monkeypatch", "bomb"}


@pytest.mark.parametrize("name,category,kind,source", STATIC, ids=[h[0] for h in STATIC])
def test_static_policy_refuses(name, category, kind, source):
    issues = check_policy(source)
    assert issues, f"{name} passed the static policy"
    # a code-policy incident, not a mere failure to write a recipe (evaluate/safety.py's rule)
    assert any("not allowed" in str(i) and "top-level" not in str(i) for i in issues), issues
    with pytest.raises(ValueError, match="code policy"):
        load_recipe(source)


@pytest.mark.parametrize("name,category,kind,source", RUNTIME, ids=[h[0] for h in RUNTIME])
def test_runtime_attacks_pass_the_policy_and_fail_the_smoke_test(name, category, kind, source, runtime_results):
    assert check_policy(source) == []
    assert any(p.startswith("smoke test") for p in runtime_results[name]["judge"]["code_problems"]), \
        runtime_results[name]["judge"]


def _check_plan_in_process(path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["check-plan", str(path), *OVERRIDES])
    return rc, out.getvalue() + err.getvalue()


def _judge(source, parent_code, limits):
    plan = json.loads(json.dumps(_judge.plan))
    plan["code"] = source
    cand = Candidate(index=0, text=json.dumps(plan), plan=plan, logprob=0.0, n_tokens=1, seconds=0.0)
    return judge([cand], parent_code, limits)[0]


@pytest.fixture(scope="module")
def runtime_results(tmp_path_factory, child_plan, limits_factory):
    """Runtime attacks are slow (each smoke test runs until a limit stops it): check-plan runs
    in this process while the loop's judge checks the same recipes in a worker thread."""
    d = tmp_path_factory.mktemp("runtime")
    _judge.plan = child_plan
    limits = limits_factory()
    order = sorted(RUNTIME, key=lambda h: "hog" not in h[0])
    out: dict = {name: {} for name, *_ in RUNTIME}
    with ThreadPoolExecutor(1) as pool:
        futures = {name: pool.submit(_judge, source, SEED, limits) for name, _, _, source in reversed(order)}
        for name, _, _, source in order:
            out[name]["cli"] = _check_plan_in_process(write_plan(d / f"{name}.json", child_plan, source))
        for name, fut in futures.items():
            out[name]["judge"] = fut.result()
    return out


@pytest.fixture(scope="module")
def benign_results(tmp_path_factory, child_plan, limits_factory):
    """Benign recipes through check-plan (in this process) while the loop's judge checks them
    in a worker thread: each path runs its own smoke test."""
    d = tmp_path_factory.mktemp("benign")
    _judge.plan = child_plan
    limits = limits_factory()
    out: dict = {}
    with ThreadPoolExecutor(1) as pool:
        futures = {name: pool.submit(_judge, source, "", limits) for name, source in BENIGN[:LOOP_BENIGN]}
        for name, source in BENIGN:
            out[name] = {"cli": _check_plan_in_process(write_plan(d / f"{name}.json", child_plan, source))}
        for name, fut in futures.items():
            out[name]["judge"] = fut.result()
    return out


@pytest.mark.parametrize("name,category,kind,source", STATIC, ids=[h[0] for h in STATIC])
def test_check_plan_refuses_static(name, category, kind, source, tmp_path, child_plan):
    rc, out = _check_plan_in_process(write_plan(tmp_path / "plan.json", child_plan, source))
    assert rc == 1, out
    assert ": code: line" in out and "not allowed" in out, out


@pytest.mark.parametrize("name", [h[0] for h in RUNTIME])
def test_check_plan_refuses_runtime(name, runtime_results):
    rc, out = runtime_results[name]["cli"]
    assert rc == 1, out
    assert ": code: smoke test" in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize("name,category,kind,source", STATIC, ids=[h[0] for h in STATIC])
def test_loop_replaces_static(name, category, kind, source, child_plan, limits_factory):
    _judge.plan = child_plan
    res = _judge(source, SEED, limits_factory(smoke_test=False))
    assert res["code_origin"] == "inherited" and not res["code_valid"]
    assert any("not allowed" in p for p in res["code_problems"]), res["code_problems"]
    assert res["valid"], res["problems"]  # the plan goes on with the parent's recipe


@pytest.mark.parametrize("name", [h[0] for h in RUNTIME])
def test_loop_replaces_runtime(name, runtime_results):
    res = runtime_results[name]["judge"]
    assert res["code_origin"] == "inherited" and not res["code_valid"]
    assert res["code_problems"]
    assert res["valid"], res["problems"]


@pytest.mark.parametrize("name,source", BENIGN, ids=[b[0] for b in BENIGN])
def test_benign_recipes_accepted(name, source, benign_results):
    assert check_policy(source) == []
    rc, out = benign_results[name]["cli"]
    assert rc == 0 and ": valid (" in out, out
    if name not in dict(BENIGN[:LOOP_BENIGN]):
        return  # check-plan (above) runs the same check_policy + smoke_test the loop runs
    res = benign_results[name]["judge"]
    assert res["code_origin"] == "proposed" and res["code_valid"] and res["valid"], res


def test_benign_recipe_accepted_by_real_check_plan_process(tmp_path, child_plan):
    proc = run_cli("check-plan", str(write_plan(tmp_path / "p.json", child_plan, BENIGN[3][1])), *OVERRIDES)
    assert proc.returncode == 0 and "valid (" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["import-os", "dunder-import", "subclass-walk", "torch-from-file",
                                  "grad-fn-walk-to-params", "patch-cross-entropy"])
def test_static_refused_by_real_check_plan_process(name, tmp_path, child_plan):
    source = {h[0]: h[3] for h in HOSTILE}[name]
    proc = run_cli("check-plan", str(write_plan(tmp_path / "p.json", child_plan, source)), *OVERRIDES)
    assert proc.returncode == 1 and ": code: line" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
