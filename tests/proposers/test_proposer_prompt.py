"""The proposer prompt: complete, deterministic, within max_chars, feedback always kept."""

from __future__ import annotations

from recursive.proposers import PLAN_MARKER, build_prompt


def _entry(i: int, status: str, loss: float | None, reasons: list[str]) -> dict:
    plan = {"model": {"num_layers": 1 + i % 4, "num_heads": 2, "num_kv_heads": 1, "head_dim": 32,
                      "intermediate_size": 100 + i, "context": 128, "tie_embeddings": True},
            "data": {"mixture": {"stdlib_code": 0.5, "arithmetic": 0.5}},
            "hparams": {"optimizer": "adamw", "lr": 0.003, "batch_size": 8, "steps": 100 + i, "distill_weight": 0.1}}
    return {"generation": 1 + i // 3, "attempt": 1 + i % 3, "status": status, "plan": plan,
            "gate_reasons": reasons, "metrics": {"heldout_loss": loss, "arithmetic_em": 0.1}}


def test_prompt_contents(make_ctx):
    fb = ["model: 3,100,000 parameters exceeds 0.5 x parent", "hparams.steps: too many tokens"]
    ctx = make_ctx(feedback=fb)
    p = build_prompt(ctx, 1500)
    assert p.endswith("PLAN: ") and p.endswith(PLAN_MARKER) and len(p) <= 1500
    assert str(ctx.parent["params"]) in p
    assert all(f in p for f in fb)
    assert all(name in p for name in ctx.sources)
    assert "heldout_loss=2.75" in p and "max_train_tokens" not in p  # numbers, not key names
    assert build_prompt(ctx, 1500) == p


def test_long_memory_is_curated(make_ctx):
    memory = [_entry(i, "rejected", 3.0 + (i % 7) / 10, [f"reason {i}"]) for i in range(200)]
    memory[57] = _entry(57, "promoted", 2.1, [])  # the best
    memory[120] = _entry(120, "failed", None, ["no valid plan among 4 candidates"])  # the worst
    fb = ["gate: heldout_loss 3.4 > parent 2.75 + 0.05"]
    ctx = make_ctx(memory=memory, feedback=fb)
    for limit in (500, 700, 1200, 1500, 3000):
        p = build_prompt(ctx, limit)
        assert len(p) <= limit and p.endswith("PLAN: ") and fb[0] in p
        if limit >= 700:  # room for the best and the worst outcome, before any other
            assert "g20.1 promoted [best]" in p and "g41.1 failed [worst]" in p, limit
    assert build_prompt(ctx, 1500) == build_prompt(ctx, 1500)
    # more room, more memory
    assert build_prompt(ctx, 3000).count("\n- g") > build_prompt(ctx, 1500).count("\n- g")


def test_tiny_budget_still_ends_with_marker_and_feedback(make_ctx):
    fb = ["short reason"]
    ctx = make_ctx(memory=[_entry(0, "rejected", 3.0, ["x"])], feedback=fb)
    for limit in (120, 250, 400):
        p = build_prompt(ctx, limit)
        assert len(p) <= limit and p.endswith("PLAN: ") and fb[0] in p
    # the shrinking keeps every source name as long as the core fits
    p = build_prompt(ctx, 450)
    assert all(name in p for name in ctx.sources), p
