#!/usr/bin/env bash
# GPU check of the training stage, on one GPU (sized for an H100, < 8 min):
#   1. ~124M Llama (12 x 768, vocab 32k, tied), seq 1024, bf16, torch.compile, one process:
#      tokens/s and MFU (goal >= 45%), through the real stage (python -m recursive.train)
#   2. DeepSpeed ZeRO-2 vs DDP on the same model (torchrun, 1 rank each; bf16, no compile)
#   3. a 3-generation toy lineage on the GPU (recursive run experiment=toy), wall time
# and prints a short table last.
#
#   bash bench/gpu_check.sh              # on the GPU machine, from the repository root
#   SMOKE=1 bash bench/gpu_check.sh      # CPU: the same pipeline on a tiny model (parts 1-2; 3 skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
OUT=${OUT_DIR:-$(mktemp -d /tmp/gpu_check.XXXX)}
SMOKE=${SMOKE:-0}
export TOKENIZERS_PARALLELISM=false WANDB_MODE=offline
mkdir -p "$OUT"
echo "gpu_check: work dir $OUT (smoke=$SMOKE)"
$PY - "$OUT" "$SMOKE" <<'PYEOF'
import json, os, sys
from pathlib import Path
import torch
from recursive.config import compose_config
from recursive.data.shards import write_shard
from recursive.data.tokenizer import train_tokenizer
from recursive.io import atomic_write_json, atomic_write_text
from recursive.run_config import seed_plan
from recursive.plan import HParams, ModelSpec
out, smoke = Path(sys.argv[1]), sys.argv[2] == "1"
files = sorted(Path(os.__file__).parent.rglob("*.py"))
texts = [f.read_text(errors="replace") for f in files][: 300 if smoke else 2000]
tok = train_tokenizer(texts, 2048 if smoke else 32768, out / "tokenizer")
shards = {"code_a": str(out / "code_a.bin"), "code_b": str(out / "code_b.bin")}
write_shard(texts[::2], tok, Path(shards["code_a"])); write_shard(texts[1::2], tok, Path(shards["code_b"]))
base = seed_plan(compose_config(["experiment=toy"]))
if smoke:
    model = ModelSpec(num_layers=2, num_heads=2, num_kv_heads=2, head_dim=32, intermediate_size=256,
                      context=128, tie_embeddings=True)
    batch, steps = 4, 8
else:
    model = ModelSpec(num_layers=12, num_heads=12, num_kv_heads=12, head_dim=64, intermediate_size=2304,
                      context=1024, tie_embeddings=True)
    batch, steps = int(os.environ.get("BATCH", 32)), 150   # 32 x 1024 tokens per step
plan = base.model_copy(update={"model": model, "hparams": HParams(**(base.hparams.model_dump() | {
    "batch_size": batch, "steps": steps, "warmup_steps": 10, "lr": 6e-4, "distill_weight": 0.0}))})
gpu = torch.cuda.is_available()
runs = {"single_compiled": dict(strategy="single", num_processes=1, compile=not smoke),
        "ddp": dict(strategy="ddp", num_processes=1, compile=False),
        "zero2": dict(strategy="zero2", num_processes=1, compile=False)}
for name, extra in runs.items():
    d = out / name
    atomic_write_text(d / "plan.json", plan.to_json())
    atomic_write_json(d / "train_spec.json", {
        "tokenizer": str(out / "tokenizer"), "shards": shards, "mixture": {"code_a": 0.5, "code_b": 0.5},
        "teacher": None, "threads": 8 if gpu else 2, "precision": "bf16" if gpu else "fp32",
        "log_every": 20, "progress": False, **extra})
print(f"prepared: {sum(p.numel() for p in __import__('recursive.train.modeling', fromlist=['x']).build_model(model, len(tok), eos_token_id=tok.eos_token_id, seed=0).parameters())/1e6:.1f}M params")
PYEOF

# each part runs even when an earlier one failed: a GPU lease is too short to rerun the lot
# PARTS picks what runs (a rerun on a short lease skips what was measured): single,ddp,zero2,lineage
PARTS=${PARTS:-single,ddp,zero2,lineage}
t0=$(date +%s)
[[ $PARTS == *single* ]] && { $PY -m recursive.train "$OUT/single_compiled" > "$OUT/single_compiled.log" 2>&1 || tail -30 "$OUT/single_compiled.log"; }
t1=$(date +%s)
[[ $PARTS == *ddp* ]] && { $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m recursive.train "$OUT/ddp" > "$OUT/ddp.log" 2>&1 || tail -30 "$OUT/ddp.log"; }
t2=$(date +%s)
[[ $PARTS == *zero2* ]] && { $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m recursive.train "$OUT/zero2" > "$OUT/zero2.log" 2>&1 || tail -30 "$OUT/zero2.log"; }
t3=$(date +%s)
LINEAGE_S=skipped
if [ "$SMOKE" != "1" ] && [[ $PARTS == *lineage* ]]; then
  l0=$(date +%s)
  if timeout ${LINEAGE_TIMEOUT:-240} $PY -m recursive.cli run experiment=toy lineage.generations=3 train.precision=bf16 train.threads=8 \
       logger=none run_dir="$OUT/lineage" > "$OUT/lineage.log" 2>&1; then
    LINEAGE_S=$(( $(date +%s) - l0 ))
  else
    LINEAGE_S="failed_after_$(( $(date +%s) - l0 ))s"; tail -20 "$OUT/lineage.log"
  fi
fi
$PY - "$OUT" "$LINEAGE_S" "$((t1-t0))" "$((t2-t1))" "$((t3-t2))" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
import torch
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
print(f"\ndevice: {dev}")
print(f"{'run':<18}{'tokens/s':>12}{'MFU':>8}{'final loss':>12}{'wall s':>8}")
ok = {}
for name, wall in zip(("single_compiled", "ddp", "zero2"), sys.argv[3:6]):
    if not (out / name / "train_metrics.json").exists():
        print(f"{name:<18}{'FAILED (see ' + name + '.log)':>40}{wall:>8}")
        continue
    m = ok[name] = json.loads((out / name / "train_metrics.json").read_text())
    tps = m["tokens_per_s_steady"] or m["tokens_per_s"]
    mfu = "-" if m["mfu"] is None else f"{100 * m['mfu']:.1f}%"
    print(f"{name:<18}{tps:>12,.0f}{mfu:>8}{m['final_loss']:>12.4f}{wall:>8}")
if "zero2" in ok and "ddp" in ok:
    z, d = ok["zero2"], ok["ddp"]
    print(f"zero2/ddp tokens/s: {(z['tokens_per_s_steady'] or z['tokens_per_s']) / (d['tokens_per_s_steady'] or d['tokens_per_s']):.3f}")
print(f"toy lineage (3 generations) wall s: {sys.argv[2]}")
PYEOF
