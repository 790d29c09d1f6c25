"""Pruned against scratch: the same child architecture and tokens, trained once cut from its
parent (`model.init: prune`, train/prune.py) and once from a random initialisation, both
with the same distillation from the parent, on the embedded data.

    python bench/prune_vs_scratch.py [--experiment toy|smoke] [--work-dir DIR] [--steps-fraction 0.5]
        [--distill 0.5] [--child layers,heads,kv_heads,ffn] [--seeds 1] [--set KEY=VALUE ...]

Generation 0 is the experiment's own (`recursive run ... lineage.generations=0`, trained
once and reused from --work-dir); each child runs through the real training stage
(`python -m recursive.train`), and held-out loss is the eval suite's (mean over the eval
domains, evaluate/capability.py). Prints both losses and, last, `ratio: X` (prune / scratch).
With --seeds N the pair is trained N times (children's `hparams.seed` 0..N-1, the plan's own
seed first, generation 0 the same), each seed's ratio is printed, and `ratio:` is their mean
with a 95% percentile bootstrap interval over the seeds (recursive/compare.py's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default="toy")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--steps-fraction", type=float, default=0.5, help="child steps as a share of the seed's")
    ap.add_argument("--distill", type=float, default=0.5, help="distill_weight of both children")
    ap.add_argument("--child", default=None, help="layers,heads,kv_heads,ffn (default: one layer and 1/3 of the FFN less)")
    ap.add_argument("--seeds", type=int, default=1, help="children's training seeds (pairs trained)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for generation 0's run, e.g. budget.wall_clock_s=3600 on a loaded machine")
    args = ap.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="prune_vs_scratch_"))
    lin = work / "gen0"
    env = dict(os.environ, WANDB_MODE="disabled")
    if not (lin / "lineage.jsonl").exists() or '"promoted"' not in (lin / "lineage.jsonl").read_text():
        subprocess.run([sys.executable, "-m", "recursive.cli", "run", f"experiment={args.experiment}",
                        "lineage.generations=0", "logger=none", f"run_dir={lin}", *args.set], check=True, env=env)
    from recursive.plan import Plan
    parent_dir = lin / "generations" / "gen_000" / "attempt_01"
    manifest = json.loads((lin / "data" / "manifest.json").read_text())
    plan = json.loads((parent_dir / "plan.json").read_text())
    m = plan["model"]
    if args.child:
        layers, heads, kv, ffn = (int(x) for x in args.child.split(","))
    else:
        layers, heads, kv, ffn = max(1, m["num_layers"] - 1), m["num_heads"], m["num_kv_heads"], m["intermediate_size"] * 2 // 3
    shards = {n: str(lin / e["path"]) for n, e in manifest["train"].items()}
    mixture = {n: w for n, w in Plan.model_validate(plan).normalized_mixture().items() if n in shards}
    total = sum(mixture.values())
    mixture = {n: round(w / total, 12) for n, w in mixture.items()}
    cfg = json.loads((lin / "config.json").read_text())
    ratios = []
    for k in range(args.seeds):
        seed = int(plan["hparams"]["seed"]) + k
        losses = pair(args, work if k == 0 else work / f"seed_{seed}", plan, m, (layers, heads, kv, ffn), seed,
                      lin, parent_dir, manifest, shards, mixture, cfg)
        ratios.append(losses["prune"] / losses["scratch"])
        print(f"seed {seed}: prune {losses['prune']:.4f}, scratch {losses['scratch']:.4f}, "
              f"ratio {ratios[-1]:.4f}", flush=True)
    parent_loss = json.loads((parent_dir / "eval.json").read_text())["heldout_loss"]["mean"]
    print(f"parent (generation 0): held-out loss {parent_loss:.4f}; child {layers} layers, {heads} heads, "
          f"{kv} kv heads, FFN {ffn}; distill_weight {args.distill}; work dir {work}")
    if len(ratios) > 1:
        from recursive.compare import bootstrap_mean
        lo, hi = bootstrap_mean(ratios)
        print(f"ratio: {sum(ratios) / len(ratios):.4f} [{lo:.4f}, {hi:.4f}] (mean over {len(ratios)} seeds, 95% bootstrap)")
    else:
        print(f"ratio: {ratios[0]:.4f}")


def pair(args, work, plan, m, shape, seed, lin, parent_dir, manifest, shards, mixture, cfg) -> dict:
    """Train (or reuse) the pruned and the scratch child of one seed; their held-out losses."""
    from recursive.evaluate.capability import heldout_loss, load_model
    from recursive.train.protocol import TrainSpec
    layers, heads, kv, ffn = shape
    env = dict(os.environ, WANDB_MODE="disabled")
    losses = {}
    for init in ("prune", "scratch"):
        d = work / init
        d.mkdir(parents=True, exist_ok=True)
        child = dict(plan)
        child["model"] = dict(m, num_layers=layers, num_heads=heads, num_kv_heads=kv, intermediate_size=ffn, init=init)
        h = dict(plan["hparams"], seed=seed)
        h["steps"] = max(1, int(h["steps"] * args.steps_fraction))
        h["warmup_steps"] = min(h["warmup_steps"], h["steps"])
        h["distill_weight"] = args.distill
        child["hparams"] = h
        (d / "plan.json").write_text(json.dumps(child))
        if not (d / "model" / "config.json").exists():
            TrainSpec(tokenizer=str(lin / manifest["tokenizer"]), shards=shards, mixture=mixture,
                      teacher=str(parent_dir / "model"), parent=str(parent_dir / "model"),
                      threads=int(cfg["train"]["threads"]), precision=cfg["train"]["precision"],
                      progress=False).write(d)
            subprocess.run([sys.executable, "-m", "recursive.train", str(d)], check=True, env=env)
        model = load_model(d / "model")[0]
        ev = cfg["evaluate"]
        per = {n: heldout_loss(model, lin / e["path"], int(ev["context"]), int(ev["eval_windows_per_domain"]))
               for n, e in manifest["eval"].items()}
        losses[init] = sum(per.values()) / len(per)
        metrics = json.loads((d / "train_metrics.json").read_text())
        print(f"{init}: params {metrics['params']:,}, {metrics['tokens']:,} tokens, loss at step 0 "
              f"{metrics['curve'][0]['loss']:.3f}, held-out loss {losses[init]:.4f} "
              f"({', '.join(f'{k} {v:.3f}' for k, v in sorted(per.items()))})", flush=True)
    return losses


if __name__ == "__main__":
    main()
