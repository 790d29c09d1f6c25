"""A family's hard position limit (GPT-2's learned n_positions) and the self proposer:
prompt + plan must fit it, so code_max_chars / max_new_tokens shrink to give complete plans
rather than truncated ones, and what shrank is recorded (issue 12)."""

import json

import pytest

from recursive.config import compose_config
from recursive.proposers.base import ProposalContext
from recursive.proposers.self_model import SelfProposer
from recursive.run_config import seed_plan
from recursive.train import families

pytestmark = pytest.mark.slow


def test_position_limit_is_the_family_property():
    from transformers import GPT2Config, LlamaConfig, Qwen2Config
    assert families.position_limit(GPT2Config(n_positions=512).to_dict()) == 512
    # rotary positions: max_position_embeddings is the trained range, not a wall
    assert families.position_limit(LlamaConfig(max_position_embeddings=2048).to_dict()) is None
    assert families.position_limit(Qwen2Config().to_dict()) is None


def _ctx(ckpt, feedback=()) -> ProposalContext:
    cfg = compose_config(["experiment=smoke", "model=pretrained", f"model.name_or_path={ckpt}"])
    seed = seed_plan(cfg).model_dump(mode="json")
    base = json.loads((ckpt / "config.json").read_text())
    return ProposalContext(
        generation=1, attempt=1, parent={"generation": 0, "params": 1, "model": seed["model"], "metrics": {}},
        seed_plan=seed, parent_plan=seed, sources={n: n for n in seed["data"]["mixture"]},
        budget={"param_ratio": 0.75, "max_params": 10_000_000, "max_train_tokens": 300_000,
                "vocab_size": base["vocab_size"]},
        recipe_api="lr_lambda(step, total_steps, warmup_steps) -> lr multiplier", base=base, feedback=list(feedback))


def test_gpt2_plans_fit_its_positions_complete(checkpoints):
    ckpt = checkpoints["gpt2"]
    # the loop's own settings (configs/proposer/self.yaml): a 1300-char recipe does not fit 1024 positions
    p = SelfProposer(str(ckpt), max_new_tokens=2000, code_max_chars=1300, code_grammar=True, prompt_chars=600,
                     rationale_max_chars=48, temperature=0.7)
    assert p.position_limit == 1024
    ctx = _ctx(ckpt)
    cands = p.propose(ctx, 3, seed=0)
    fit = p.fit
    assert fit["position_limit"] == 1024 and fit["code_max_chars_asked"] == 1300 and fit["max_new_tokens_asked"] == 2000
    assert fit["code_max_chars"] < 1300 and fit["prompt_tokens_kept"] + fit["max_new_tokens"] <= 1024
    for c in cands:
        assert c.error is None and c.plan is not None, (c.error, c.text[-120:])
        assert c.n_tokens <= fit["max_new_tokens"]
        assert len(c.plan["code"]) <= fit["code_max_chars"]


def test_a_rotary_family_is_not_shrunk(checkpoints):
    p = SelfProposer(str(checkpoints["llama"]), max_new_tokens=40, code_max_chars=1300, code_grammar=True)
    assert p.position_limit is None
    p.propose(_ctx(checkpoints["llama"]), 1, seed=0)
    assert p.fit is None


def test_the_competence_defaults_keep_as_much_prompt_as_the_plan_leaves(checkpoints):
    # proposer=fixed lineages measure competence with SelfProposer's defaults: 512 new tokens
    # and a 1500-char prompt (a later attempt's, with the gate's reasons), which together pass 1024 positions
    p = SelfProposer(str(checkpoints["gpt2"]), code_grammar=False)
    reasons = [f"FAIL canary_exposure_vs_gen0: safety.canary_exposure_max = {8 + i / 10} (bound <= 6.37, gen0)"
               for i in range(12)]
    cands = p.propose(_ctx(checkpoints["gpt2"], reasons), 2, seed=1)
    fit = p.fit
    assert fit["prompt_tokens"] + 512 > 1024 and fit["max_new_tokens"] == 512
    assert fit["prompt_tokens_kept"] == 1024 - 512  # the prompt gives up only what the plan needs
    assert all(c.error is None and c.plan is not None for c in cands), [c.error for c in cands]
