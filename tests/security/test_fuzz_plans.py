"""Hypothesis fuzzing of plan parsing, validation and `recursive check-plan`: whatever the
input, a clear reason (a field and a message) or a valid plan, never an exception.

Figures (all deterministic: derandomize=True): parse_plan on raw bytes 400 cases, on JSON text
400, validate_plan (smoke test off) on arbitrary JSON 400 and on mutated valid plans 800,
check_policy on mutated and random recipe text 400 (2,400 in-process), the CLI code path
(cli.main, real smoke test) on 60 mutated plan files, the real CLI process on 10 files.
"""

import contextlib
import copy
import io
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recursive import cli
from recursive.recipe import PolicyIssue, check_policy
from recursive.validate import Problem, parse_plan, validate_plan

from .conftest import OVERRIDES, run_cli
from .corpus import SEED

FUZZ = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
# values that are wrong in interesting ways for a plan field
nasty = json_values | st.sampled_from([
    -1, 0, 1, 2**31, 2**63, 10**400, 1e308, -0.0, 1e-320, "", "adamw", "sgd", "../../etc/passwd", "nan",
    "Infinity", [], {}, {"code": 1.0}, True, 64, 4096, 0.5, "x" * 25_000, "\x00", "\ud800"])


def assert_clear(problems):
    assert problems, "invalid input without a reason"
    for p in problems:
        assert isinstance(p, Problem)
        assert isinstance(p.field, str) and p.field
        assert isinstance(p.message, str) and p.message.strip()
        assert "Traceback" not in str(p)


@settings(max_examples=400, **FUZZ)
@given(st.binary(max_size=300))
def test_parse_plan_raw_bytes(data):
    plan, problems = parse_plan(data)
    if plan is None:
        assert_clear(problems)


@settings(max_examples=400, **FUZZ)
@given(json_values)
def test_parse_plan_json_text(value):
    text = json.dumps(value)
    plan, problems = parse_plan(text)
    assert plan is None  # no random JSON is a complete plan
    assert_clear(problems)


@settings(max_examples=400, **FUZZ)
@given(value=json_values)
def test_validate_plan_arbitrary_json(value, limits_nosmoke):
    plan, problems = validate_plan(value, limits_nosmoke)
    assert plan is None
    assert_clear(problems)


@st.composite
def mutated_plans(draw, base):
    plan = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        # walk to a random container in the plan
        node = plan
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
            if not keys or draw(st.booleans()):
                break
            k = draw(st.sampled_from(keys))
            if not isinstance(node[k], (dict, list)):
                break
            node = node[k]
        if not isinstance(node, (dict, list)) or not node:
            continue
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        k = draw(st.sampled_from(keys))
        # deep copies: sampled_from hands out the same [] / {} objects every time, and a later
        # mutation of one would change what an earlier example drew (hypothesis calls it flaky)
        if op == "replace":
            node[k] = copy.deepcopy(draw(nasty))
        elif op == "delete":
            del node[k]
        elif isinstance(node, dict):
            node[draw(st.text(max_size=12))] = copy.deepcopy(draw(nasty))
    return plan


@pytest.fixture(scope="module")
def limits_nosmoke(limits_factory):
    return limits_factory(smoke_test=False)


def test_base_plan_is_valid(child_plan, limits_nosmoke):
    plan, problems = validate_plan(child_plan, limits_nosmoke)
    assert plan is not None and problems == []


def _mutation_test(child_plan, limits_nosmoke):
    @settings(max_examples=800, **FUZZ)
    @given(mutated_plans(child_plan))
    def run(mutant):
        plan, problems = validate_plan(mutant, limits_nosmoke)
        if problems:
            assert_clear(problems)
        else:
            assert plan is not None
            # a plan that passes is within every bound it was checked against
            assert all(math.isfinite(w) and 0 <= w <= 1 for w in plan.data.mixture.values())
    run()


def test_validate_plan_mutated_plans(child_plan, limits_nosmoke):
    _mutation_test(child_plan, limits_nosmoke)


recipe_text = st.one_of(
    st.text(max_size=400),
    st.builds(lambda i, j, s: SEED[:i] + s + SEED[j:], st.integers(0, len(SEED)), st.integers(0, len(SEED)),
              st.text(alphabet=st.sampled_from(list("_.()[]{}:=\n '\"\\#@*+-/%<>!,;ft0123xyzaosimport")),
                      max_size=40)),
)


@settings(max_examples=400, **FUZZ)
@given(recipe_text)
def test_check_policy_never_raises(source):
    issues = check_policy(source)
    assert isinstance(issues, list)
    for i in issues:
        assert isinstance(i, PolicyIssue) and isinstance(i.line, int) and i.message.strip()


def test_check_plan_cli_in_process_on_mutated_plans(child_plan, tmp_path):
    """The real `recursive check-plan` code path (cli.main) on 60 mutated plan files, with the
    real smoke test (about 1 s a case: every plan whose code passes the policy is smoke-tested)."""
    counts = {"valid": 0, "invalid": 0}

    @settings(max_examples=60, **FUZZ)
    @given(mutated_plans(child_plan) | st.binary(max_size=200).map(lambda b: {"__raw__": b}))
    def run(mutant):
        path = tmp_path / "plan.json"
        if isinstance(mutant, dict) and "__raw__" in mutant:
            path.write_bytes(mutant["__raw__"])
        else:
            path.write_text(json.dumps(mutant))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["check-plan", str(path), *OVERRIDES])
        text = out.getvalue() + err.getvalue()
        assert "Traceback" not in text
        lines = out.getvalue().strip().split("\n")  # one problem per line, whatever the keys hold
        assert lines and all(ln.startswith(f"{path}: ") for ln in lines), text
        if rc == 0:
            assert lines == [ln for ln in lines if ": valid (" in ln]
            counts["valid"] += 1
        else:
            assert rc == 1, text
            assert all(": " in ln[len(str(path)) + 2:] for ln in lines), text  # "field: message"
            counts["invalid"] += 1
    run()
    assert counts["invalid"] > 30 and counts["valid"] > 0, counts


@pytest.mark.parametrize("content", [
    b"", b"\xff\xfe", b"[]", b"{}", b'{"model": null}', b"NaN", b"[" * 100_000, b'{"code": "' + b"x" * 30_000 + b'"}',
    "{\"rationale\": \"\\ud800\"}".encode(), b'{"model": {"num_layers": 1e999}}'])
def test_check_plan_real_process_never_tracebacks(content, tmp_path):
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    proc = run_cli("check-plan", str(path), *OVERRIDES)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"{path}: "), proc.stdout
