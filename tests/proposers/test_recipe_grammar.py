"""The recipe grammar (recursive/proposers/grammar.py): every program it produces passes the
recipe policy, loads and runs; the plan grammar built from it accepts plans whose code is a
grammar program and refuses any other code; the self proposer's code decoded under it is
valid, and a decoded edit is applied, checked and trained."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
import torch

from recursive.attempt import Attempt, AttemptRecord
from recursive.data.research import research_entries
from recursive.io import atomic_write_json, atomic_write_text
from recursive.lineage import record
from recursive.plan import Plan
from recursive.propose import judge
from recursive.proposers import grammar as g
from recursive.proposers.base import plan_text
from recursive.proposers.random_search import RandomProposer
from recursive.proposers.schema import proposal_schema
from recursive.recipe import apply_edits, check_policy, load_recipe, seed_recipe_source, smoke_test
from recursive.validate import Limits

xgr = pytest.importorskip("xgrammar")

SEED = seed_recipe_source()
# a character-level vocabulary: a random walk over its tokens is a random walk over the text
CHARS = [chr(i) for i in range(32, 127)] + ["\n"]
EOS = len(CHARS)


def char_compiler() -> "xgr.GrammarCompiler":
    return xgr.GrammarCompiler(xgr.TokenizerInfo(CHARS + ["<eos>"], stop_token_ids=[EOS]))


def xgrammar_walk(compiled, rng: random.Random, max_steps: int = 20_000) -> str:
    """Decode with xgrammar's own matcher, choosing uniformly among the tokens it allows."""
    m = xgr.GrammarMatcher(compiled)
    mask = xgr.allocate_token_bitmask(1, EOS + 1)
    out = []
    for _ in range(max_steps):
        m.fill_next_token_bitmask(mask)
        words = mask[0].tolist()
        allowed = [t for t in range(EOS + 1) if (words[t // 32] >> (t % 32)) & 1]
        t = rng.choice(allowed)
        assert m.accept_token(t)
        if t == EOS:
            return "".join(out)
        out.append(CHARS[t])
    raise AssertionError("the grammar did not terminate")


def accepts(compiled, text: str) -> bool:
    m = xgr.GrammarMatcher(compiled)
    return m.accept_string(text) and m.accept_token(EOS) and m.is_terminated()


def runs(source: str) -> None:
    """What the smoke test and the trainer ask of a recipe, in this process, over a grid
    wider than the smoke test's: lr in [0, 10] for every step up to total_steps, a finite
    scalar loss with finite gradients, with and without a teacher."""
    r = load_recipe(source)
    for total, warmup in ((1, 0), (100, 0), (100, 10), (100, 100), (7, 3)):
        for step in sorted({0, 1, warmup - 1, warmup, warmup + 1, total // 2, total - 1, total} - {-1}):
            v = r.lr_lambda(step, total, warmup)
            assert math.isfinite(v) and 0.0 <= v <= 10.0, (step, total, warmup, v)
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 32, (2, 8), generator=gen)
    labels[0, :3] = -100
    for teacher in (None, torch.randn(2, 8, 32, generator=gen)):
        for w, temp in ((0.0, 0.5), (0.5, 2.0), (1.0, 10.0)):  # the Plan's bounds and between
            hp = {"distill_weight": w, "distill_temperature": temp}
            logits = (3 * torch.randn(2, 8, 32, generator=gen)).requires_grad_()
            loss = r.loss(logits, labels, teacher, hp)
            assert loss.dim() == 0 and torch.isfinite(loss), (hp, loss)
            loss.backward()
            assert torch.isfinite(logits.grad).all()


def test_the_seed_is_a_grammar_module_and_every_slot_line_is_editable():
    canon = g.canonical_recipe(SEED)
    assert '"""' not in canon and "#" not in canon and canon.startswith("import math\n")
    assert g.is_grammar_module(SEED) and g.matches("module", canon)
    assert [slot for _, slot in g.editable_lines(SEED)] == list(g.SLOTS)
    assert not check_policy(canon)


def test_every_sampled_module_passes_the_policy_loads_and_runs():
    rng = random.Random(0)
    texts = {g.sample_module(rng) for _ in range(300)}
    assert len(texts) > 290  # the walk explores: these are not 300 copies of the seed
    for text in texts:
        assert not check_policy(text), (check_policy(text), text)
        assert g.is_grammar_module(text) and len(text) <= g.module_max_chars()
        runs(text)


def test_modules_decoded_by_xgrammar_pass_the_policy():
    # xgrammar's reading of the EBNF, not ours: a random walk with its matcher
    compiled = char_compiler().compile_grammar(g.recipe_ebnf())
    rng = random.Random(1)
    for _ in range(25):
        text = xgrammar_walk(compiled, rng)
        assert not check_policy(text), text
        assert g.is_grammar_module(text)
        runs(text)
    assert accepts(compiled, g.canonical_recipe(SEED))
    canon = g.canonical_recipe(SEED)
    for bad in ("import os\n" + canon, SEED, canon.replace("0.1 + 0.9", "10 ** 99")):
        assert not accepts(compiled, bad)


def test_a_sample_of_modules_passes_the_smoke_test():
    rng = random.Random(2)
    for _ in range(3):
        assert smoke_test(g.sample_module(rng)) == []


def test_sampled_edits_apply_and_keep_the_recipe_valid():
    rng = random.Random(3)
    parents = [SEED] + [g.sample_module(rng) for _ in range(20)]
    n = 0
    for parent in parents:
        for _ in range(10):
            edit = g.sample_edit(parent, rng)
            assert edit is not None and len(edit) <= g.edit_max_chars(parent)
            code, problems = apply_edits(parent, edit)
            assert not problems and code is not None, (problems, edit)
            assert not check_policy(code) and g.is_grammar_module(code), edit
            assert code != parent  # an edit never rewrites a line as it was
            n += 1
        runs(code)
    assert n == 210


def test_an_edit_cannot_rewrite_a_line_as_it_was():
    compiled = char_compiler().compile_grammar("root ::= recipe_code\n" + g.code_ebnf(SEED, 400, json_string=False))
    for line, _ in g.editable_lines(SEED):
        assert not accepts(compiled, g.edit_text(line, line)), line
    assert accepts(compiled, g.edit_text('    w = hp["distill_weight"]', "    w = 0.5"))
    assert not accepts(compiled, g.edit_text("import math", "import os"))


def test_edits_only_where_the_parent_is_a_grammar_module():
    free_form = SEED.replace("    vocab = logits.shape[-1]\n", "    vocab = logits.shape[-1]\n    vocab = vocab\n")
    assert not check_policy(free_form) and not g.is_grammar_module(free_form)
    assert g.editable_lines(free_form) == [] and g.sample_edit(free_form, random.Random(0)) is None
    twice = SEED + "\n# w = hp[\"distill_weight\"]\n"  # a slot line's text occurs twice: not editable
    assert "weight_line" not in {slot for _, slot in g.editable_lines(twice)}


def test_code_max_chars_chooses_the_alternatives():
    assert "recipe_module |" in g.code_ebnf(SEED, 1300) and "recipe_edit ::=" in g.code_ebnf(SEED, 1300)
    edits_only = g.code_ebnf(SEED, 400)
    assert "recipe_code ::= recipe_edit" in edits_only
    assert g.code_ebnf(SEED, 64) is None
    assert "recipe_code ::= recipe_module\n" in g.code_ebnf("not python", 1300)
    assert g.module_max_chars() <= 1300  # configs/proposer/self.yaml's code_max_chars


def test_the_grammar_is_finite():
    with pytest.raises(ValueError, match="recursive"):
        g.parse_ebnf('a ::= "x" b\nb ::= a | "y"')
    with pytest.raises(ValueError, match="not defined"):
        g.parse_ebnf('a ::= "x" c')
    with pytest.raises(ValueError):
        g.parse_ebnf('a ::= "x"*')  # unbounded repetition is not read at all


_COMPILED: dict = {}


@pytest.fixture
def plan_grammar(make_ctx):
    """The composed plan grammar for the proposer tests' context (compiled once: seconds)."""
    ctx = make_ctx()
    if "plan" not in _COMPILED:
        schema = proposal_schema(ctx, code_max_chars=1300, rationale_max_chars=48)
        _COMPILED["plan"] = char_compiler().compile_grammar(g.plan_ebnf(schema, ctx.parent_plan["code"], 1300))
    return ctx, _COMPILED["plan"]


def test_the_plan_grammar_takes_grammar_code_and_refuses_other_code(plan_grammar):
    ctx, compiled = plan_grammar
    plan = RandomProposer().propose(ctx, 1, seed=0)[0].plan
    rng = random.Random(4)
    good = [g.canonical_recipe(SEED), g.sample_module(rng), g.sample_edit(SEED, rng)]
    for code in good:
        assert accepts(compiled, plan_text({**plan, "code": code, "rationale": "r"})), code[:80]
    bad = ["import os\n" + g.canonical_recipe(SEED), g.canonical_recipe(SEED).replace("import math\n", "import os\n"),
           SEED, "", "def lr_lambda(step, total_steps, warmup_steps):\n    return 1.0\n",
           g.edit_text("import math", "import os")]
    for code in bad:
        assert not accepts(compiled, plan_text({**plan, "code": code, "rationale": "r"})), code[:80]


def test_plans_decoded_by_xgrammar_carry_policy_valid_code(plan_grammar):
    ctx, compiled = plan_grammar
    rng = random.Random(5)
    for _ in range(4):
        plan = json.loads(xgrammar_walk(compiled, rng))
        code = plan["code"]
        if code.startswith(g.EDIT_OPEN):
            code, problems = apply_edits(ctx.parent_plan["code"], code)
            assert not problems
        assert not check_policy(code)
        Plan.model_validate(plan | {"code": code})


@pytest.fixture(scope="module")
def limits_fn():
    def make(ctx, smoke: bool) -> Limits:
        return Limits(sources=tuple(ctx.sources), vocab_size=ctx.budget["vocab_size"],
                      parent_params=ctx.parent["params"], param_ratio=0.5, max_params=50_000_000,
                      max_train_tokens=2_000_000, smoke_test=smoke)
    return make


def test_the_self_proposer_writes_valid_code(toy_model_dir, make_ctx, limits_fn):
    from recursive.proposers.self_model import SelfProposer

    p = SelfProposer(str(toy_model_dir), max_new_tokens=3000, code_max_chars=1300, code_grammar=True)
    ctx = make_ctx()
    cands = p.propose(ctx, 3, seed=0)
    results = judge(cands, ctx.parent_plan["code"], limits_fn(ctx, smoke=False))
    for c, r in zip(cands, results):
        assert c.error is None, (c.error, c.text[-200:])
        assert r["code_valid"] and r["code_origin"] in ("proposed", "edited"), r.get("code_problems")


def test_a_decoded_edit_is_applied_checked_and_trained(toy_model_dir, make_ctx, limits_fn, tmp_path):
    from recursive.config import compose_config
    from recursive.data.prepare import prepare_data
    from recursive.proposers.self_model import SelfProposer
    from recursive.run_config import seed_plan

    ctx = make_ctx()
    # 400 characters: room for any edit, not for a whole module
    p = SelfProposer(str(toy_model_dir), max_new_tokens=1200, code_max_chars=400, code_grammar=True)
    [cand] = p.propose(ctx, 1, seed=3)
    assert cand.error is None and cand.plan["code"].startswith(g.EDIT_OPEN), cand.text[-300:]
    [res] = judge([cand], ctx.parent_plan["code"], limits_fn(ctx, smoke=True))
    assert res["code_edit"] == cand.plan["code"] and not res.get("code_problems"), res.get("code_problems")
    code, _ = apply_edits(ctx.parent_plan["code"], cand.plan["code"])
    assert not check_policy(code) and smoke_test(code) == []
    assert code != ctx.parent_plan["code"] and res["code_origin"] == "edited" and res["code_valid"]

    # trained: the real training stage, a few steps of a tiny model on the smoke data
    cfg = compose_config(["experiment=smoke", "data.max_chars_per_source=60000"])
    run_dir = tmp_path / "run"
    manifest = prepare_data(cfg["data"], run_dir)
    base = seed_plan(cfg)
    plan = base.model_copy(update={"code": code, "hparams": base.hparams.model_copy(update={"steps": 6})})
    d = tmp_path / "attempt"
    atomic_write_text(d / "plan.json", plan.to_json())
    shards = {n: str(run_dir / e["path"]) for n, e in manifest["train"].items()}
    atomic_write_json(d / "train_spec.json", {"tokenizer": str(run_dir / manifest["tokenizer"]), "shards": shards,
                                              "mixture": {n: 1 / len(shards) for n in shards}, "teacher": None,
                                              "threads": 1, "precision": "fp32", "log_every": 1})
    proc = subprocess.run([sys.executable, "-m", "recursive.train", str(d)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((d / "train_metrics.json").read_text())
    assert metrics["steps"] == 6 and all(math.isfinite(c["loss"]) for c in metrics["curve"])


def test_the_research_record_shows_recipes_and_edits(tmp_path):
    from recursive.config import compose_config
    from recursive.run_config import seed_plan
    seed = seed_plan(compose_config(["experiment=smoke"]))
    [only] = research_entries(tmp_path, seed)
    assert only["plan"]["code"] == g.canonical_recipe(seed.code) and g.is_grammar_module(only["plan"]["code"])

    # an edited attempt: the record shows the edit the proposer wrote, not the whole module
    edit = g.sample_edit(seed.code, random.Random(6))
    at = Attempt(tmp_path, 1, 1)
    edited, _ = apply_edits(seed.code, edit)
    atomic_write_text(at.plan, seed.model_copy(update={"code": edited}).to_json())
    atomic_write_json(at.proposal, {"selected": 2})
    atomic_write_json(at.candidates, [{"index": 2, "code_edit": edit}, {"index": 2, "control": True}])
    record(tmp_path, AttemptRecord(generation=1, attempt=1, status="promoted", code_origin="edited",
                                   plan_path=at.rel(at.plan)))
    entries = research_entries(tmp_path, seed)
    assert [e["plan"]["code"] for e in entries] == [g.canonical_recipe(seed.code), edit]


def test_the_openai_prompt_documents_the_grammar(make_ctx):
    from recursive.proposers.openai_api import OpenAIProposer

    body = OpenAIProposer(base_url="http://127.0.0.1:9/v1", model="m").request_body(make_ctx(), "m", 0)
    system = body["messages"][0]["content"]
    assert "schedule_line ::=" in system and "torch.nn.functional" in system
