"""Layer 3 of the recipe box: `smoke_test` runs a recipe on random tensors in a separate,
isolated Python process (`-I`) under CPU-time and memory limits, a wall-clock timeout and the
runtime guard of `recursive.sandbox`, before any training is spent on it. `_SMOKE` is the
child's script; it imports the loader as `recursive.recipe`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


_SMOKE = r"""
import json, math, resource, sys
cpu, mem, call_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sys.path[:0] = json.loads(sys.argv[4])  # -I drops PYTHONPATH: the parent's import roots, explicitly
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
import torch
torch.set_num_threads(1)
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
from recursive.recipe import load_recipe
from recursive.sandbox import install_guard
source = sys.stdin.read()
install_guard(read_roots=(), write_roots=())
r = load_recipe(source, call_seconds=call_s)
out = {"lr": [], "loss": None}
for step in (0, 1, 5, 50, 99):
    v = float(r.lr_lambda(step, 100, 10))
    if not (math.isfinite(v) and 0.0 <= v <= 10.0):
        raise ValueError(f"lr_lambda({step}, 100, 10) = {v}, expected a finite number in [0, 10]")
    out["lr"].append(v)
g = torch.Generator().manual_seed(0)
logits = torch.randn(2, 8, 32, generator=g, requires_grad=True)
labels = torch.randint(0, 32, (2, 8), generator=g)
hp = {"distill_weight": 0.5, "distill_temperature": 2.0}
for teacher in (None, torch.randn(2, 8, 32, generator=g)):
    l = r.loss(logits, labels, teacher, hp)
    if not (isinstance(l, torch.Tensor) and l.dim() == 0 and torch.isfinite(l)):
        raise ValueError(f"loss() returned {l!r}, expected a finite scalar tensor")
    l.backward()
    if logits.grad is None or not torch.isfinite(logits.grad).all():
        raise ValueError("loss() gives no finite gradient w.r.t. the logits")
    out["loss"] = float(l)
print(json.dumps(out))
"""


def _import_roots() -> list[str]:
    """Where this process imports `recursive` and torch from, for a child started with -I
    (isolated: no PYTHONPATH, no user site, no cwd), so that an install on PYTHONPATH or
    with --target works as a site-packages install does."""
    import recursive
    import torch
    roots = [str(Path(m.__file__).resolve().parents[1]) for m in (recursive, torch)]
    return [r for i, r in enumerate(roots) if r not in roots[:i]]


def smoke_test(source: str, *, cpu_seconds: int = 20, memory_bytes: int = 4 << 30,
               timeout: float = 60.0) -> list[str]:
    """Run the recipe on random tensors in a child process with resource limits, a wall-clock
    timeout and the runtime guard (no file opens outside the Python installation, no writes,
    sockets, subprocesses or ctypes). Returns problems (empty list = passed)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    call_seconds = max(1.0, min(float(cpu_seconds), timeout) / 4)
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _SMOKE, str(cpu_seconds), str(memory_bytes),
                               str(call_seconds), json.dumps(_import_roots())],
                              input=source, capture_output=True, text=True, timeout=timeout,
                              env=env, cwd="/", start_new_session=True)
    except subprocess.TimeoutExpired:
        return [f"smoke test timed out after {timeout:.0f} s"]
    if proc.returncode < 0:
        return [f"smoke test killed by signal {-proc.returncode} (CPU-time limit {cpu_seconds} s "
                f"or memory limit {memory_bytes >> 20} MiB)"]
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return [f"smoke test failed: {tail[:300]}"]
    try:
        json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return ["smoke test printed no result"]
    return []
