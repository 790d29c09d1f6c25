"""Replay: propose given plan files, for "what if generation 2 had used this plan?".

`proposer.plans` lists one entry per generation (entry g-1 for generation g); an entry
that is itself a list gives one file per attempt of that generation (its last file is
proposed again for any later attempt). The files are read when the generation is
proposed and validated like any other proposal (budget, schema, code policy), so an
invalid file fails its attempt with the field named, as a model's plan would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .base import Candidate, ProposalContext


def plan_file(plans: list[Any], generation: int, attempt: int) -> tuple[str, str]:
    """The file replayed for (generation, attempt), and how to name it in a message."""
    if generation > len(plans):
        raise ValueError(f"proposer=replay: no plan for generation {generation} (proposer.plans has "
                         f"{len(plans)} entries, one per generation)")
    entry = plans[generation - 1]
    if isinstance(entry, (list, tuple)):
        if not entry:
            raise ValueError(f"proposer.plans[{generation - 1}] is an empty list (expected plan files)")
        i = min(attempt, len(entry)) - 1
        return str(entry[i]), f"proposer.plans[{generation - 1}][{i}]"
    return str(entry), f"proposer.plans[{generation - 1}]"


def problems(plans: Any) -> list[str]:
    """Config-time check: every listed file exists and holds a JSON object."""
    if not isinstance(plans, (list, tuple)) or not plans:
        return [f"config value proposer.plans must be a non-empty list of plan files (one per generation), "
                f"got {plans!r}"]
    out = []
    for g, entry in enumerate(plans):
        for i, path in enumerate(entry if isinstance(entry, (list, tuple)) else [entry]):
            name = f"proposer.plans[{g}]" + (f"[{i}]" if isinstance(entry, (list, tuple)) else "")
            why = _read(Path(str(path)))[1]
            if why is not None:
                out.append(f"config value {name}: {why}")
    return out


def _read(path: Path) -> tuple[dict | None, str | None]:
    try:
        text = path.read_text()
    except OSError as e:
        return None, f"cannot read plan file {path}: {e.strerror or e}"
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{path} is not JSON ({e.msg} at line {e.lineno})"
    if not isinstance(plan, dict):
        return None, f"{path} holds a JSON {type(plan).__name__}, expected a plan object"
    return plan, None


class ReplayProposer:
    """Returns the plan file for the context's generation and attempt, k times."""

    name = "replay"

    def __init__(self, plans: list[Any]):
        self.plans = list(plans)

    def propose(self, ctx: ProposalContext, k: int, seed: int) -> list[Candidate]:
        t0 = time.perf_counter()
        path, name = plan_file(self.plans, ctx.generation, ctx.attempt)
        plan, why = _read(Path(path))
        text = Path(path).read_text() if plan is not None else ""
        secs = time.perf_counter() - t0
        return [Candidate(index=i, text=text, plan=plan, logprob=0.0, n_tokens=0, seconds=secs,
                          error=None if why is None else f"{name}: {why}") for i in range(k)]
