#!/usr/bin/env bash
# GPU check of the training stage, on one GPU (sized for an H100/H200: < 8 min in all):
#   1. ~124M Llama (12 x 768, vocab 32k, tied), seq 1024, bf16, through the real stage
#      (python -m recursive.train), one run per configuration of RUNS: one process (the step
#      compiled as one graph, model + recipe loss), DDP and ZeRO-2 with 1 rank under torchrun
#      (model and loss compiled apart); tokens/s (steady), MFU, peak memory, how it compiled
#   2. the experiment=gpu lineage if configs/experiment/gpu.yaml exists: wall time per stage
#      of every attempt, and per generation (its attempts summed)
# The last line is `mfu: X`, the best configuration's MFU (all runs use one GPU).
#
#   bash bench/gpu_check.sh              # on the GPU machine, from the repository root
#   SMOKE=1 bash bench/gpu_check.sh      # CPU: the same runs on a tiny model, eager (no lineage)
#
# RUNS: "strategy:batch[:loss_chunk]" items (default below; loss_chunk default LOSS_CHUNK=256).
# STEPS (60) per run; RUN_TIMEOUT (170 s) per run; DEADLINE_S (450): no run or lineage starts
# past it, and the lineage is cut at it, so that the script ends within about 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT_DIR:-$(mktemp -d /tmp/gpu_check.XXXX)}
SMOKE=${SMOKE:-0}
RUNS=${RUNS:-single:32 single:64 ddp:32 zero2:32}
DEADLINE_S=${DEADLINE_S:-450}
RUN_TIMEOUT=${RUN_TIMEOUT:-170}
export TOKENIZERS_PARALLELISM=false WANDB_MODE=offline LOSS_CHUNK=${LOSS_CHUNK:-256} STEPS=${STEPS:-60}
mkdir -p "$OUT"
T0=$(date +%s)
echo "gpu_check: work dir $OUT (smoke=$SMOKE) runs: $RUNS"
$PY - "$OUT" "$SMOKE" $RUNS <<'PYEOF' || { echo "gpu_check: preparing the runs failed"; exit 1; }
import os, sys
from pathlib import Path
import torch
from recursive.config import compose_config
from recursive.data.shards import write_shard
from recursive.data.tokenizer import train_tokenizer
from recursive.io import atomic_write_json, atomic_write_text
from recursive.run_config import seed_plan
from recursive.plan import HParams, ModelSpec
from recursive.train.modeling import build_model
out, smoke, runs = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3:]
files = sorted(Path(os.__file__).parent.rglob("*.py"))
texts = [f.read_text(errors="replace") for f in files][: 300 if smoke else 2000]
tok = train_tokenizer(texts, 2048 if smoke else 32768, out / "tokenizer")
shards = {"code_a": str(out / "code_a.bin"), "code_b": str(out / "code_b.bin")}
write_shard(texts[::2], tok, Path(shards["code_a"])); write_shard(texts[1::2], tok, Path(shards["code_b"]))
base = seed_plan(compose_config(["experiment=toy"]))
if smoke:
    model = ModelSpec(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=32, intermediate_size=256,
                      context=128, tie_embeddings=True)
    steps, chunk_default = 8, "32"
else:
    model = ModelSpec(num_layers=12, num_heads=12, num_kv_heads=12, head_dim=64, intermediate_size=2304,
                      context=1024, tie_embeddings=True)
    steps, chunk_default = int(os.environ["STEPS"]), os.environ["LOSS_CHUNK"]
gpu = torch.cuda.is_available()
names = []
for item in runs:
    strategy, batch, chunk = (item.split(":") + [chunk_default])[:3]
    batch = int(batch) if not smoke else max(2, int(batch) // 8)  # 32 -> 4, 64 -> 8
    name = f"{strategy}_b{batch}_c{chunk}"
    plan = base.model_copy(update={"model": model, "hparams": HParams(**(base.hparams.model_dump() | {
        "batch_size": batch, "steps": steps, "warmup_steps": min(10, steps - 1), "lr": 6e-4, "distill_weight": 0.0}))})
    d = out / name
    atomic_write_text(d / "plan.json", plan.to_json())
    atomic_write_json(d / "train_spec.json", {
        "tokenizer": str(out / "tokenizer"), "shards": shards, "mixture": {"code_a": 0.5, "code_b": 0.5},
        "teacher": None, "threads": 8 if gpu else 2, "precision": "bf16" if gpu else "fp32",
        "log_every": 20, "progress": False, "strategy": strategy, "num_processes": 1,
        "compile": not smoke, "loss_chunk": int(chunk)})
    names.append(f"{name} {'one' if strategy == 'single' else 'torchrun'}")
(out / "runs.txt").write_text("\n".join(names) + "\n")
n = sum(p.numel() for p in build_model(model, len(tok), eos_token_id=tok.eos_token_id, seed=0).parameters())
print(f"prepared: {n / 1e6:.1f}M params, {len(names)} runs of {steps} steps")
PYEOF

# each run goes on when an earlier one failed: a GPU lease is too short to rerun the lot
left() { echo $(( DEADLINE_S - ($(date +%s) - T0) )); }
while read -r name how <&3; do  # fd 3: the runs must not read the list from stdin
  if [ "$(left)" -lt 60 ]; then echo "$name: skipped (deadline)"; echo "skipped" > "$OUT/$name.wall"; continue; fi
  r0=$(date +%s)
  if [ "$how" = one ]; then
    timeout "$RUN_TIMEOUT" $PY -m recursive.train "$OUT/$name" > "$OUT/$name.log" 2>&1 || tail -20 "$OUT/$name.log"
  else
    timeout "$RUN_TIMEOUT" $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m recursive.train \
      "$OUT/$name" > "$OUT/$name.log" 2>&1 || tail -20 "$OUT/$name.log"
  fi
  echo $(( $(date +%s) - r0 )) > "$OUT/$name.wall"
done 3< "$OUT/runs.txt"

LINEAGE=skipped
if [ "$SMOKE" != "1" ] && [ -f configs/experiment/gpu.yaml ]; then
  budget=$(left)
  if [ "$budget" -ge 60 ]; then
    l0=$(date +%s)
    if timeout "$budget" $PY -m recursive.cli run experiment=gpu logger=none run_dir="$OUT/lineage" \
         > "$OUT/lineage.log" 2>&1; then
      LINEAGE="done in $(( $(date +%s) - l0 )) s"
    else
      LINEAGE="stopped or failed after $(( $(date +%s) - l0 )) s (budget $budget s; $OUT/lineage.log)"
      tail -15 "$OUT/lineage.log"
    fi
  else
    LINEAGE="skipped (deadline)"
  fi
elif [ "$SMOKE" != "1" ]; then
  LINEAGE="skipped (no configs/experiment/gpu.yaml)"
fi

$PY - "$OUT" "$LINEAGE" <<'PYEOF'
import json, sys
from pathlib import Path
import torch
out, lineage = Path(sys.argv[1]), sys.argv[2]
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(f"\ndevice: {dev}")
print(f"{'run':<20}{'tokens/s':>11}{'MFU':>8}{'peak GiB':>10}{'loss':>8}{'wall s':>8}  compiled")
best = None
for line in (out / "runs.txt").read_text().split("\n"):
    if not line.strip():
        continue
    name = line.split()[0]
    wall = (out / f"{name}.wall").read_text().strip() if (out / f"{name}.wall").exists() else "-"
    f = out / name / "train_metrics.json"
    if not f.exists():
        print(f"{name:<20}{'FAILED or skipped (see ' + name + '.log)':>45}{wall:>8}")
        continue
    m = json.loads(f.read_text())
    tps = m["tokens_per_s_steady"] or m["tokens_per_s"]
    mfu = "-" if m["mfu"] is None else f"{100 * m['mfu']:.1f}%"
    peak = "-" if m.get("peak_memory_bytes") is None else f"{m['peak_memory_bytes'] / 2**30:.1f}"
    c = m.get("compile") or {}
    how = c.get("mode", "?") + "".join(f"; {x['part']} fell back: {x['reason'][:80]}" for x in c.get("fallbacks", []))
    print(f"{name:<20}{tps:>11,.0f}{mfu:>8}{peak:>10}{m['final_loss']:>8.3f}{wall:>8}  {how}")
    if m["mfu"] is not None and (best is None or m["mfu"] > best[1]):
        best = (name, m["mfu"])
print(f"\nexperiment=gpu lineage: {lineage}")
log = out / "lineage.log"
for line in (log.read_text(errors="replace").splitlines() if log.exists() else []):
    if "data ready in" in line:  # data preparation: tokenizer, shards, eval splits
        print("  data: " + line.split("(data ready in")[-1].rstrip(")"))
per_gen = {}
for t in sorted((out / "lineage").glob("generations/*/*/timings.json")):
    stages = {k: v for k, v in json.loads(t.read_text()).items() if isinstance(v, (int, float))}
    where = t.parent.relative_to(out / "lineage" / "generations")
    per_gen[where.parts[0]] = per_gen.get(where.parts[0], 0.0) + sum(stages.values())
    print(f"  {where}: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()) + f"; total {sum(stages.values()):.0f} s")
for g, secs in per_gen.items():  # every attempt of a generation, its stages summed
    print(f"  {g}: {secs:.0f} s")
print(f"best: {best[0] if best else '-'}")
print(f"mfu: {best[1]:.3f}" if best else "mfu: none")
PYEOF
