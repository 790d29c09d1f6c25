"""The training stage's throughput against a bare PyTorch loop, in one process.

Same model (the plan's Llama, same init), same global batch and context, same dtype, same
threads, same optimiser (AdamW, the stage's param groups) and grad clipping. The stage
runs `recursive.train.trainer.fit`: mixture sampling from memory-mapped shards, the plan's
recipe (loss and LR schedule, under the recipe guard), accelerate, the per-step
signal/NaN check, logging. The bare loop trains on batches already in memory with
F.cross_entropy and a constant LR.

Both sides are timed alike: a clock read at the end of every step (the stage's through
`fit(on_step=...)`, after the same work per iteration: optimiser step, loss read-back),
tokens/s over the same steps, from step index --skip to the last. They run in pairs whose
order alternates (stage first, then bare first, ...) so that load from other processes and
any order effect hit both sides alike; the figure is the median of the per-pair ratios, and
a warning line says when those ratios spread by more than 10% (then the machine's load, not
the code, decides the figure).

    python bench/train_throughput.py [--repeats 4] [--steps 30] [--skip 2] [--threads 2] [--precision fp32|bf16]
        [--layers 4] [--hidden 256] [--vocab 4096] [--batch 8] [--context 256]

Defaults: the 5.3M-parameter Llama of shared/notes/FACTS.md (4 layers, d=256, vocab 4096),
batch 8 x 256. The last line is `ratio: X` (stage tokens/s over bare tokens/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=4, help="pairs (stage, bare), order alternating")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=2, help="steps left out of the timing on both sides (warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--work-dir", default=None)
    args = ap.parse_args()
    if not 0 <= args.skip < args.steps - 1:
        ap.error(f"--skip must be in [0, --steps - 1), got {args.skip}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    import torch.nn.functional as F

    from recursive.config import compose_config
    from recursive.data.shards import write_shard
    from recursive.data.tokenizer import train_tokenizer
    from recursive.run_config import seed_plan
    from recursive.plan import HParams, ModelSpec
    from recursive.train.distributed import make_accelerator
    from recursive.train.modeling import build_model
    from recursive.train.trainer import _optimizer, fit

    torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="train_bench_"))
    cfg = compose_config(["experiment=smoke"])
    t0 = time.perf_counter()
    # data: the interpreter's own sources (2 MB), a local BPE tokenizer, one shard per half
    files = sorted(Path(os.__file__).parent.glob("*.py"))
    texts = [f.read_text(errors="replace") for f in files][:200]
    tok = train_tokenizer(texts, args.vocab, work / "tokenizer")
    shards = {name: str(work / f"{name}.bin") for name in ("code_a", "code_b")}
    write_shard(texts[::2], tok, Path(shards["code_a"]))
    write_shard(texts[1::2], tok, Path(shards["code_b"]))
    print(f"data: {time.perf_counter() - t0:.1f} s in {work}", flush=True)
    base = seed_plan(cfg)
    heads = args.hidden // 64
    plan = base.model_copy(update={
        "model": ModelSpec(num_layers=args.layers, num_heads=heads, num_kv_heads=heads, head_dim=64,
                           intermediate_size=4 * args.hidden, context=args.context, tie_embeddings=True),
        "hparams": HParams(**(base.hparams.model_dump() | {"batch_size": args.batch, "steps": args.steps,
                                                            "warmup_steps": 0}))})
    spec = {"tokenizer": str(work / "tokenizer"), "shards": shards,
            "mixture": {n: 1 / len(shards) for n in shards}, "teacher": None, "threads": args.threads,
            "precision": args.precision, "log_every": 10**9, "strategy": "single", "progress": False}
    accelerator, layout = make_accelerator(spec, batch_size=args.batch, grad_clip=plan.hparams.grad_clip)
    h = plan.hparams

    def window(clock: list[float]) -> float:
        """tokens/s from the end of step index `skip` - 1 (clock[skip]: `skip` steps done; the
        first entry is the start) to the end of the last step"""
        return (args.steps - args.skip) * args.batch * args.context / (clock[-1] - clock[args.skip])

    def stage() -> float:
        clock = [time.perf_counter()]
        fit(plan, spec, accelerator, layout, verbose=False, on_step=lambda done: clock.append(time.perf_counter()))
        assert len(clock) == args.steps + 1
        return window(clock)

    def bare() -> float:
        torch.set_num_threads(args.threads)
        model = build_model(plan.model, len(tok), eos_token_id=tok.eos_token_id, seed=h.seed)
        opt = _optimizer(plan, model)
        g = torch.Generator().manual_seed(0)
        data = [torch.randint(0, len(tok), (args.batch, args.context + 1), generator=g) for _ in range(args.steps)]
        model.train()
        clock = [time.perf_counter()]
        for batch in data:
            x, y = batch[:, :-1], batch[:, 1:]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                logits = model(input_ids=x).logits
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), h.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            float(loss.detach())  # the stage reads its loss back every step on CPU too (check_every 1)
            clock.append(time.perf_counter())
        return window(clock)

    n = sum(p.numel() for p in build_model(plan.model, len(tok), eos_token_id=tok.eos_token_id, seed=0).parameters())
    print(f"model: {n / 1e6:.2f}M params, batch {args.batch}x{args.context}, {args.precision}, "
          f"{args.threads} threads, {args.steps} steps per run, timed from step {args.skip} on both sides",
          flush=True)
    stage_tps, bare_tps = [], []
    for r in range(args.repeats):
        if r % 2 == 0:
            s, b, order = stage(), bare(), "stage first"
        else:
            b, s, order = bare(), stage(), "bare first"
        stage_tps.append(s)
        bare_tps.append(b)
        print(f"pair {r} ({order}): stage {s:,.0f} tok/s   bare {b:,.0f} tok/s   ratio {s / b:.3f}", flush=True)
    ms, mb = statistics.median(stage_tps), statistics.median(bare_tps)
    ratios = [s / b for s, b in zip(stage_tps, bare_tps)]
    ratio = statistics.median(ratios)
    spread = (max(ratios) - min(ratios)) / ratio
    print(f"median: stage {ms:,.0f} tok/s   bare {mb:,.0f} tok/s   (ratio of medians {ms / mb:.3f})")
    if spread > 0.10:
        print(f"warning: the pair ratios spread by {100 * spread:.0f}% (> 10%, {min(ratios):.3f} to "
              f"{max(ratios):.3f}): the machine's load varied during the run; the ratio is not a measurement")
    print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
