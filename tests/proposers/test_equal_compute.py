"""budget.equal_compute: every proposer's child of a generation has the same parameter count
(within 2%) and the same training tokens, whatever its own lineage's parent looked like.

Contexts are built by the loop's own `make_context` on the smoke experiment's config, plans
are checked by the loop's own `Limits` / `check_candidate`; the self proposer decodes with
the random-init tiny Llama of conftest.py (what decodes under the schema is the point here,
not what a trained model would choose)."""

from __future__ import annotations

import pytest

from recursive.attempt import AttemptRecord
from recursive.config import compose_typed
from recursive.errors import ConfigError
from recursive.plan import Plan, count_params
from recursive.propose import make_context
from recursive.proposers import make_proposer
from recursive.run_config import seed_plan, seed_plan_problems
from recursive.validate import EQUAL_COMPUTE_TOLERANCE, Limits, check_candidate

SAMPLES = 24  # random plans per context (cheap)
SELF_SAMPLES = 3  # decoded plans per context


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    rd = tmp_path_factory.mktemp("ec") / "run"
    cfg, _ = compose_typed(["experiment=smoke", "budget.equal_compute=true", f"run_dir={rd}"])
    return cfg


@pytest.fixture(scope="module")
def self_proposer(toy_model_dir):
    pytest.importorskip("xgrammar")
    from recursive.proposers.self_model import SelfProposer
    return SelfProposer(str(toy_model_dir), max_new_tokens=600, code_max_chars=0, rationale_max_chars=0,
                        temperature=1.0)


def _ctx(cfg, generation: int, parent_plan: dict):
    vocab = cfg.data.vocab_size
    params = count_params(Plan.model_validate(parent_plan).model, vocab)
    parent = AttemptRecord(generation=generation - 1, attempt=1, status="promoted", params=params)
    ctx = make_context(cfg, generation, 1, parent, parent_plan, seed_plan(cfg), vocab_size=vocab)
    limits = Limits.from_config(cfg, vocab, params, parent_model=parent_plan["model"], generation=generation)
    limits.smoke_test = False  # the recipe is the parent's (or the seed's): not what is tested here
    return ctx, limits


def _valid(cands, ctx, limits) -> list[Plan]:
    return [c.plan for c in (check_candidate(x.plan, ctx.parent_plan["code"], limits) for x in cands
                             if x.plan is not None) if c.valid]


def _propose(name, ctx, k, self_proposer):
    return (self_proposer if name == "self" else make_proposer(name)).propose(ctx, k, seed=7)


def test_every_proposer_lands_on_the_same_count_and_tokens(smoke, self_proposer):
    cfg, vocab = smoke, smoke.data.vocab_size
    seed = seed_plan(cfg).model_dump(mode="json")
    # generation 1: every lineage's parent is the same generation 0
    ctx1, lim1 = _ctx(cfg, 1, seed)
    t1 = ctx1.budget["equal_compute"]
    gen1 = {}
    for name in ("self", "random", "fixed"):
        k = SELF_SAMPLES if name == "self" else SAMPLES
        gen1[name] = _valid(_propose(name, ctx1, k, self_proposer), ctx1, lim1)
        assert gen1[name], f"{name}: no valid generation-1 plan"
    # generation 2: the parents now differ (each proposer's own child, the largest and the
    # smallest random one): the target must not follow them
    sizes = lambda ps: [count_params(p.model, vocab) for p in ps]  # noqa: E731
    rand = sorted(gen1["random"], key=lambda p: count_params(p.model, vocab))
    parents = [gen1["fixed"][0], gen1["self"][0], rand[0], rand[-1]]
    assert len(set(sizes(parents))) >= 2
    counts: dict[int, list[int]] = {1: [], 2: []}
    tokens: dict[int, set[int]] = {1: set(), 2: set()}
    for ps in gen1.values():
        counts[1] += sizes(ps)
        tokens[1] |= {p.train_tokens() for p in ps}
    targets = []
    for i, parent in enumerate(parents):
        ctx2, lim2 = _ctx(cfg, 2, parent.model_dump(mode="json"))
        targets.append(ctx2.budget["equal_compute"])
        # decoding is the slow part: the self proposer under its own child and the largest random one
        for name in ("self", "random", "fixed") if i in (1, 3) else ("random", "fixed"):
            plans = _valid(_propose(name, ctx2, SELF_SAMPLES if name == "self" else SAMPLES, self_proposer),
                           ctx2, lim2)
            assert plans or name == "self", f"{name}: no valid generation-2 plan under parent {sizes([parent])}"
            counts[2] += sizes(plans)
            tokens[2] |= {p.train_tokens() for p in plans}
    assert all(t == targets[0] for t in targets)  # fixed by generation 0 and the budget alone
    t2 = targets[0]
    gen0 = count_params(Plan.model_validate(seed).model, vocab)
    for g, t in ((1, t1), (2, t2)):
        assert t["params"] == round(gen0 * (cfg.budget.param_ratio * 0.98 / 1.02) ** g)
        assert all(abs(c - t["params"]) <= EQUAL_COMPUTE_TOLERANCE * t["params"] for c in counts[g]), (g, counts[g])
        assert tokens[g] == {Plan.model_validate(seed).train_tokens()}
    assert max(counts[2]) < min(counts[1])  # and it is a step down


def test_validation_names_the_field_the_target_and_the_tolerance(smoke, child_plan):
    ctx, limits = _ctx(smoke, 1, seed_plan(smoke).model_dump(mode="json"))
    t = ctx.budget["equal_compute"]
    checked = check_candidate(child_plan, ctx.parent_plan["code"], limits)  # 1 layer: far below the target
    msgs = [str(p) for p in checked.problems]
    assert any(m.startswith("model: ") and f"generation 1 at {t['params']:,}" in m and "within 2%" in m
               and f"{t['lo']:,} to {t['hi']:,}" in m for m in msgs), msgs
    child_plan["hparams"]["steps"] -= 1  # tokens off by one step
    msgs = [str(p) for p in check_candidate(child_plan, ctx.parent_plan["code"], limits).problems]
    assert any(m.startswith("hparams.steps: ") and f"at the seed plan's {t['tokens']:,}" in m for m in msgs), msgs


def test_off_by_default(tmp_path):
    cfg, _ = compose_typed(["experiment=smoke", f"run_dir={tmp_path / 'r'}"])
    ctx, limits = _ctx(cfg, 1, seed_plan(cfg).model_dump(mode="json"))
    assert ctx.budget["equal_compute"] is None and limits.target is None


def test_config_refuses_a_budget_the_targets_cannot_meet(tmp_path):
    with pytest.raises(ConfigError, match=r"budget.min_param_ratio must be <= 0.7846 with budget.equal_compute"):
        compose_typed(["experiment=smoke", "budget.equal_compute=true", "budget.min_param_ratio=0.8",
                       f"run_dir={tmp_path / 'r'}"])
    cfg, _ = compose_typed(["experiment=smoke", "budget.equal_compute=true", "budget.min_train_tokens=200000",
                            "hparams.steps=200", f"run_dir={tmp_path / 'r'}"])
    # the seed's own 204,800 tokens pass; its children then train the same count
    assert not [p for p in seed_plan_problems(cfg) if "equal_compute" in p]
    cfg, _ = compose_typed(["experiment=smoke", "budget.equal_compute=true", "budget.min_train_tokens=200000",
                            f"run_dir={tmp_path / 'r'}"])
    assert any("budget.equal_compute: every generation trains the seed plan's 122,880 tokens" in p
               for p in seed_plan_problems(cfg))
