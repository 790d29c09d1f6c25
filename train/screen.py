"""The proposal stage's proxy screening, as a process: `python -m recursive.train --screen DIR`.

K valid candidates, each trained as a miniature of its plan (`ScreenSpec.steps` steps,
warmup scaled alike), then scored by plain cross-entropy on fixed windows of the
*training* shards, equal weight per source. Eval data is never read here; the gate still
decides on the eval sets. The selection rule is recursive/propose.py's.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recursive.data.shards import open_shard
from recursive.io import atomic_write_json
from recursive.plan import Plan
from recursive.train.distributed import make_accelerator
from recursive.train.protocol import SCREEN_RESULT, ScreenSpec
from recursive.train.trainer import RecipeError, fit


@torch.no_grad()
def screen_loss(model: torch.nn.Module, windows: torch.Tensor) -> float:
    model.eval()
    logits = model(input_ids=windows[:, :-1]).logits.float()
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)))


def screen(screen_dir: Path) -> dict:
    """SCREEN_DIR/screen_spec.json -> SCREEN_DIR/screen.json: {index: {"loss", "seconds"} or
    {"loss": None, "error"}} for every candidate."""
    s = ScreenSpec.read(screen_dir)
    # one process, no checkpoints
    spec = dict(asdict(s), strategy="single", grad_accum=1, num_processes=None)
    accelerator, layout = make_accelerator(spec, batch_size=1, grad_clip=0.0)
    windows = []
    for name in sorted(s.screen_sources):
        data = open_shard(Path(s.shards[name]))
        # the tail of each shard: fixed positions, the same for every candidate
        starts = np.linspace(max(0, len(data) - 64 * (s.context + 1)), len(data) - s.context - 1,
                             num=s.windows_per_source, dtype=np.int64)
        windows += [torch.from_numpy(data[i:i + s.context + 1].astype(np.int64)) for i in starts]
    windows_t = torch.stack(windows).to(accelerator.device)
    results = {}
    for cand in s.candidates:
        plan = Plan.from_json(Path(cand.plan).read_text())
        try:
            model, metrics, _ = fit(plan, dict(spec, mixture=cand.mixture), accelerator, layout,
                                    steps=s.steps, verbose=False)
            results[str(cand.index)] = {"loss": screen_loss(accelerator.unwrap_model(model), windows_t),
                                        "seconds": metrics["seconds"]}
        except (RecipeError, ValueError) as e:
            results[str(cand.index)] = {"loss": None, "error": f"{type(e).__name__}: {e}"}
    atomic_write_json(screen_dir / SCREEN_RESULT, results)
    return results
