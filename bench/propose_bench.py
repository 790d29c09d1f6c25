"""Benchmark of the self proposer: constrained vs unconstrained decoding speed, and the
valid-plan rate of schema-constrained samples, on one random-init Llama (about 3M params)
with a locally trained tokenizer. No downloads, CPU is fine.

    python bench/propose_bench.py [--n 100] [--k 16] [--prompt-chars 300] [--model-dir DIR]

The last line is `ratio: X` (constrained tokens/s divided by unconstrained tokens/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recursive.plan import ModelSpec, Plan, count_params  # noqa: E402
from recursive.proposers import ProposalContext, build_prompt, proposal_schema  # noqa: E402
from recursive.proposers.base import SEPARATORS  # noqa: E402
from recursive.proposers.self_model import SelfProposer  # noqa: E402

SEED_CODE = (Path(__file__).resolve().parents[1] / "recursive" / "recipes" / "seed.py").read_text()
PARENT = dict(num_layers=5, num_heads=3, num_kv_heads=3, head_dim=64, intermediate_size=512,
              context=256, tie_embeddings=True)


def build_model(out: Path, vocab: int) -> None:
    """ByteLevel BPE on part of the stdlib + a random-init Llama of shape PARENT."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    files = sorted(Path(os.__file__).parent.glob("*.py"))[:150]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator((f.read_text(errors="replace") for f in files),
                            trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    eos = fast.eos_token_id
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=PARENT["num_heads"] * PARENT["head_dim"],
                      intermediate_size=PARENT["intermediate_size"], num_hidden_layers=PARENT["num_layers"],
                      num_attention_heads=PARENT["num_heads"], num_key_value_heads=PARENT["num_kv_heads"],
                      max_position_embeddings=2048, tie_word_embeddings=PARENT["tie_embeddings"],
                      bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    LlamaForCausalLM(cfg).save_pretrained(out)


def make_ctx(vocab: int) -> ProposalContext:
    seed = Plan.model_validate(dict(
        model=PARENT, data={"mixture": {"stdlib_code": 0.6, "stdlib_prose": 0.4}},
        hparams=dict(optimizer="adamw", lr=3e-3, warmup_steps=50, batch_size=8, steps=600, weight_decay=0.1,
                     grad_clip=1.0, seed=0, distill_weight=0.0, distill_temperature=2.0),
        code=SEED_CODE, rationale="seed")).model_dump(mode="json")
    return ProposalContext(
        generation=1, attempt=1,
        parent={"generation": 0, "params": count_params(ModelSpec.model_validate(PARENT), vocab),
                "model": PARENT, "metrics": {"heldout_loss": 3.1}},
        seed_plan=seed, parent_plan=seed,
        sources={"stdlib_code": "stdlib source", "stdlib_prose": "docstrings", "arithmetic": "sums",
                 "requests": "requests and refusals", "record": "research record"},
        budget={"param_ratio": 0.5, "max_params": 10_000_000, "max_train_tokens": 2_000_000, "vocab_size": vocab},
        recipe_api="lr_lambda(step, total, warmup); loss(logits, labels, teacher_logits, hp)")


def interleaved(pairs: list[tuple[str, SelfProposer]], ctx: ProposalContext, n: int, k: int) -> dict:
    """n samples per proposer in batches of k, the proposers taking turns batch by batch,
    so that load from other processes on a shared machine hits both alike."""
    out = {name: ([], 0.0) for name, _ in pairs}
    for b in range(0, n, k):
        for name, p in pairs:
            t0 = time.perf_counter()
            cands = p.propose(ctx, min(k, n - b), seed=b)
            got, secs = out[name]
            out[name] = (got + cands, secs + time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="samples per mode (valid rate, tokens/s)")
    ap.add_argument("--k", type=int, default=16, help="candidates decoded together")
    ap.add_argument("--prompt-chars", type=int, default=300)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--code-max-chars", type=int, default=200)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--model-dir", type=Path, default=None, help="an existing checkpoint (default: build one)")
    args = ap.parse_args()
    import torch
    import xgrammar as xgr

    tmp = tempfile.TemporaryDirectory()
    model_dir = args.model_dir or Path(tmp.name)
    if args.model_dir is None:
        build_model(model_dir, args.vocab)
    kw = dict(max_new_tokens=args.max_new_tokens, prompt_chars=args.prompt_chars, code_max_chars=args.code_max_chars)
    con, free = SelfProposer(str(model_dir), **kw), SelfProposer(str(model_dir), unconstrained=True, **kw)
    vocab = con.vocab_size
    ctx = make_ctx(vocab)
    n_params = sum(t.numel() for t in con.model.parameters())
    prompt = build_prompt(ctx, args.prompt_chars)
    print(f"model: {n_params:,} params, vocab {vocab}, torch threads {torch.get_num_threads()}; "
          f"prompt {len(prompt)} chars / {len(con.tokenizer(prompt).input_ids)} tokens; k={args.k}")
    con.propose(ctx, 2, seed=0)  # warm-up (grammar compile, first forward)

    res = interleaved([("con", con), ("free", free)], ctx, args.n, args.k)
    (cands, secs), (fc, fsecs) = res["con"], res["free"]
    toks = sum(c.n_tokens for c in cands)
    grammar = con._compiler.compile_json_schema(json.dumps(proposal_schema(ctx, code_max_chars=args.code_max_chars)),
                                                any_whitespace=False, separators=SEPARATORS)
    schema_ok = plan_ok = budget_ok = 0
    try:
        from recursive.validate import Limits, check_semantics
        limits = Limits(sources=tuple(ctx.sources), vocab_size=vocab, parent_params=ctx.parent["params"],
                        param_ratio=0.5, max_params=10_000_000, max_train_tokens=2_000_000, smoke_test=False)
    except ImportError:
        limits = None
    for c in cands:
        m = xgr.GrammarMatcher(grammar)  # re-parse the text on its own: JSON and schema
        if c.plan is None or not (m.accept_string(c.text) and m.is_completed()):
            continue
        schema_ok += 1
        plan = Plan.model_validate({**c.plan, "code": SEED_CODE})
        plan_ok += 1
        budget_ok += limits is not None and not check_semantics(plan, limits)
    con_tps = toks / secs
    print(f"constrained:   {len(cands)} samples, {toks} tokens in {secs:.2f}s = {con_tps:,.0f} tok/s, "
          f"{secs / len(cands):.3f} s/candidate, {toks / len(cands):.0f} tokens/candidate, "
          f"truncated {sum(c.error == 'truncated' for c in cands)}")
    print(f"valid JSON+schema: {schema_ok}/{len(cands)} = {schema_ok / len(cands):.0%}; "
          f"Plan.model_validate (seed code inserted): {plan_ok / len(cands):.0%}"
          + (f"; passes recursive.validate budget rules: {budget_ok / len(cands):.0%}" if limits else ""))

    ftoks = sum(c.n_tokens for c in fc)
    free_tps = ftoks / fsecs
    print(f"unconstrained: {len(fc)} samples, {ftoks} tokens in {fsecs:.2f}s = {free_tps:,.0f} tok/s; "
          f"valid JSON {sum(c.plan is not None for c in fc)}/{len(fc)}")
    single = [con.propose(ctx, 1, seed=s)[0] for s in range(3)]
    print(f"one candidate alone (k=1): {sum(c.seconds for c in single) / 3:.2f} s, "
          f"{sum(c.n_tokens for c in single) / 3:.0f} tokens")
    print(f"ratio: {con_tps / free_tps:.3f}")


if __name__ == "__main__":
    main()
