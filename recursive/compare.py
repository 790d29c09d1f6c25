"""`recursive experiment compare`: does the lineage's own proposer beat random search and the
seed recipe? One lineage per (proposer, seed) at equal compute, then statistics over seeds.

    recursive experiment compare experiment=smoke --proposers self,random,fixed --seeds 5 --out runs/cmp

Each lineage is `recursive run` with `proposer=P lineage.seed=S budget.equal_compute=true
run_dir=OUT/P/seed_S` plus the given overrides, run in this process through the same
Orchestrator (launcher=local, one after another), or as one orchestrator job each with
launcher=slurm (slurm/lineage.sbatch, side by side; waited for). Seeds are shared across
proposers, so generation 0 of seed S is trained once, in the first proposer's lineage (run
to generation 0 alone first), and its folder, data and lineage records are hard-linked into
the other proposers' run directories before they start (`share_gen0`): the same model, the
same sha256, the same eval. A re-run skips finished lineages (complete, or stopped: no child
passed the gate) and resumes the others.

Statistics (OUT/report.json, the terminal table, the dashboard's band chart), per
generation, over seeds, of heldout_loss.mean of the promoted model. A lineage that stopped
early carries its last promoted model's loss forward (it is data: that is the model the
lineage ends with); an unfinished or failed lineage gives no value and its seed drops out of
that generation's statistics:
  - mean per proposer with a 95% percentile bootstrap interval (seeds resampled with
    replacement, RESAMPLES times, numpy Generator seeded BOOTSTRAP_SEED);
  - P(X < Y), X the reference proposer's loss (self), Y a baseline's, over all seed pairs,
    ties 1/2 (the common-language effect size), with a paired bootstrap interval (the same
    resampled seeds for both);
  - the one-sided Wilcoxon signed-rank test paired by seed, H1: the reference's loss is
    lower. Exact, by enumerating the null distribution of W+ over the midranks (`wilcoxon_less`;
    no scipy: it is only a transitive dependency here). Zero differences are dropped
    (Wilcoxon's method, scipy's zero_method="wilcox"); tied |differences| get midranks and
    the exact distribution is that of those midranks. No non-zero difference: p = 1.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recursive import lineage
from recursive.errors import ConfigError
from recursive.io import append_jsonl, atomic_write_json, atomic_write_text, read_json
from recursive.rundir import MARKER, log, now

PROPOSERS = ("self", "random", "fixed")
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
METRIC = "heldout_loss.mean"
REPORT = "report.json"
GEN0_SOURCE = "gen0_source.json"  # in a run directory whose generation 0 was linked from another
OWN_KEYS = ("proposer", "lineage.seed", "run_dir", "budget.equal_compute")  # the command sets these


# ---------------------------------------------------------------------- statistics
def bootstrap_mean(values: list[float], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean (resampling with replacement)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    means = x[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def p_less(x: list[float], y: list[float]) -> float:
    """P(X < Y) over all pairs (x_i, y_j), ties counted 1/2."""
    a, b = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    return float(((a < b) + 0.5 * (a == b)).mean())


def bootstrap_p_less(x: list[float], y: list[float], resamples: int = RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% percentile interval of p_less, resampling seeds (x[i] and y[i] share seed i)."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xa)
    if n == 0:
        return (math.nan, math.nan)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    xs, ys = xa[idx][:, :, None], ya[idx][:, None, :]
    vals = ((xs < ys) + 0.5 * (xs == ys)).mean(axis=(1, 2))
    return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def midranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def wilcoxon_less(x: list[float], y: list[float]) -> dict[str, Any]:
    """Exact one-sided Wilcoxon signed-rank test of d = x - y, H1: d tends to be negative.
    p = P(W+ <= observed W+) under H0, where each non-zero |d|'s midrank carries a + sign
    with probability 1/2 independently (enumerated by dynamic programming over doubled
    midranks, which are integers)."""
    d = [a - b for a, b in zip(x, y) if a - b != 0]
    if not d:
        return {"p": 1.0, "w_plus": 0.0, "n": 0}
    ranks = midranks([abs(v) for v in d])
    w_plus = sum(r for r, v in zip(ranks, d) if v > 0)
    doubled = [int(round(2 * r)) for r in ranks]
    counts = {0: 1}  # sum of doubled ranks with a + sign -> number of sign assignments
    for r in doubled:
        nxt = dict(counts)
        for s, c in counts.items():
            nxt[s + r] = nxt.get(s + r, 0) + c
        counts = nxt
    obs = int(round(2 * w_plus))
    p = sum(c for s, c in counts.items() if s <= obs) / 2 ** len(d)
    return {"p": p, "w_plus": w_plus, "n": len(d)}


# ---------------------------------------------------------------------- one lineage's curve
def lineage_status(run_dir: Path, generations: int) -> str:
    """new | unfinished | complete (generations 0..G promoted) | stopped (a stop recorded
    after its last attempt: no child passed the gate, or generation 0 did not)."""
    run_dir = Path(run_dir)
    if not (run_dir / lineage.LINEAGE_FILE).exists():
        return "new"
    events = lineage.events(run_dir)
    promoted = {r.generation for r in lineage.promoted(run_dir)}
    if set(range(generations + 1)) <= promoted:
        return "complete"
    last_attempt = max((i for i, e in enumerate(events) if e.get("event") == "attempt"), default=-1)
    if any(e.get("event") == "stopped" for e in events[last_attempt + 1:]):
        return "stopped"
    return "unfinished"


def loss_curve(run_dir: Path, generations: int) -> tuple[list[float | None], list[bool]]:
    """heldout_loss.mean of the promoted model per generation 0..G; after a stop, the last
    promoted model's (carried, the flag True); None where there is none (not reached yet,
    or generation 0 itself not promoted)."""
    status = lineage_status(run_dir, generations)
    by_gen = {r.generation: lineage.flat_metrics(r.metrics).get(METRIC) for r in lineage.promoted(run_dir)}
    out, carried, last = [], [], None
    for g in range(generations + 1):
        if g in by_gen:
            last = by_gen[g]
            out.append(last)
            carried.append(False)
        elif status == "stopped" and last is not None:
            out.append(last)
            carried.append(True)
        else:
            out.append(None)
            carried.append(False)
    return out, carried


def stopped_at(run_dir: Path) -> int | None:
    """The generation no child was promoted in (None: not stopped)."""
    promoted = [r.generation for r in lineage.promoted(run_dir)]
    return (max(promoted) + 1) if promoted else 0


def statistics(curves: dict[str, dict[int, list[float | None]]], generations: int,
               reference: str) -> list[dict[str, Any]]:
    """Per generation: per proposer the mean and bootstrap interval over the seeds that have
    a value; per baseline P(reference < baseline) with its interval and the Wilcoxon p, over
    the seeds both have."""
    out = []
    for g in range(generations + 1):
        row: dict[str, Any] = {"generation": g, "loss": {}, "vs": {}}
        for p, by_seed in curves.items():
            vals = {s: c[g] for s, c in by_seed.items() if c[g] is not None}
            v = [vals[s] for s in sorted(vals)]
            lo, hi = bootstrap_mean(v)
            row["loss"][p] = {"n": len(v), "mean": float(np.mean(v)) if v else None,
                              "ci95": [lo, hi] if v else None, "min": min(v) if v else None,
                              "max": max(v) if v else None, "by_seed": {str(s): vals[s] for s in sorted(vals)}}
        ref = curves.get(reference, {})
        for p, by_seed in curves.items():
            if p == reference:
                continue
            seeds = sorted(s for s in ref if s in by_seed and ref[s][g] is not None and by_seed[s][g] is not None)
            x, y = [ref[s][g] for s in seeds], [by_seed[s][g] for s in seeds]
            if not seeds:
                row["vs"][p] = {"n": 0, "p_less": None, "ci95": None, "wilcoxon_p": None}
                continue
            lo, hi = bootstrap_p_less(x, y)
            w = wilcoxon_less(x, y)
            row["vs"][p] = {"n": len(seeds), "seeds": seeds, "p_less": p_less(x, y), "ci95": [lo, hi],
                            "wilcoxon_p": w["p"], "wilcoxon_w_plus": w["w_plus"], "wilcoxon_nonzero": w["n"]}
        out.append(row)
    return out


def proposal_curve(run_dir: Path, generations: int) -> list[dict[str, Any] | None]:
    """Per generation 1..G (index 0 is None: the seed plan), what proposed the promoted child:
    its `code_origin`, the proposal's `proposer.code_valid_rate` and
    `proposer.win_rate_vs_random` (None without control candidates), whether its recipe.py
    differs from its parent's (None where a file is missing), and how many attempts the
    generation took. None where the generation has no promoted child."""
    run_dir = Path(run_dir)
    kept = {r.generation: r for r in lineage.promoted(run_dir)}
    tries: dict[int, int] = {}
    for r in lineage.attempts(run_dir):
        tries[r.generation] = tries.get(r.generation, 0) + 1

    def recipe(rec) -> str | None:
        f = run_dir / Path(rec.model_path or "").parent / "recipe.py" if rec and rec.model_path else None
        return f.read_text() if f is not None and f.is_file() else None

    out: list[dict[str, Any] | None] = [None]
    for g in range(1, generations + 1):
        rec = kept.get(g)
        if rec is None:
            out.append(None)
            continue
        m = lineage.flat_metrics(rec.metrics or {})
        mine, parent = recipe(rec), recipe(kept.get(g - 1))
        out.append({"code_origin": rec.code_origin, "code_valid_rate": m.get("proposer.code_valid_rate"),
                    "win_rate_vs_random": m.get("proposer.win_rate_vs_random"),
                    "recipe_changed": None if mine is None or parent is None else mine != parent,
                    "attempts": tries.get(g, 0)})
    return out


MODEL_CODE = ("proposed", "edited")  # code_origin values of a recipe the proposer wrote


def proposal_statistics(curves: dict[str, dict[int, list]], generations: int) -> list[dict[str, Any]]:
    """Per generation 1..G and proposer, over the seeds with a promoted child: mean
    code_valid_rate, the count of each code_origin, how many promoted children were trained
    with model-written code that differs from the parent's recipe, and the mean win rate
    against random control candidates with its bootstrap interval."""
    out = []
    for g in range(1, generations + 1):
        row: dict[str, Any] = {"generation": g, "proposers": {}}
        for p, by_seed in curves.items():
            got = [by_seed[s][g] for s in sorted(by_seed) if by_seed[s][g] is not None]
            valid = [c["code_valid_rate"] for c in got if c["code_valid_rate"] is not None]
            wins = [c["win_rate_vs_random"] for c in got if c["win_rate_vs_random"] is not None]
            origins: dict[str, int] = {}
            for c in got:
                origins[str(c["code_origin"])] = origins.get(str(c["code_origin"]), 0) + 1
            lo, hi = bootstrap_mean(wins)
            row["proposers"][p] = {
                "n": len(got), "code_valid_rate": float(np.mean(valid)) if valid else None,
                "code_origins": origins,
                "model_code_promoted": sum(c["code_origin"] in MODEL_CODE and c["recipe_changed"] is True for c in got),
                "win_rate_vs_random": {"n": len(wins), "mean": float(np.mean(wins)) if wins else None,
                                       "ci95": [lo, hi] if wins else None},
                "attempts": sum(c["attempts"] for c in got)}
        out.append(row)
    return out


METHOD = {
    "metric": f"{METRIC} (mean held-out loss over the eval domains) of the promoted model of each generation",
    "carry_forward": "a lineage that stopped (no child passed the gate) keeps its last promoted model's loss for "
                     "the generations after the stop; an unfinished or failed lineage gives no value",
    "mean_ci95": f"percentile bootstrap of the mean over seeds, {RESAMPLES} resamples with replacement, "
                 f"numpy default_rng({BOOTSTRAP_SEED})",
    "p_less": "P(X < Y) over all (seed, seed) pairs, X the reference's loss, Y the baseline's, ties 1/2; ci95: "
              "percentile bootstrap resampling seeds (paired: the same seeds for X and Y)",
    "proposals": "per generation >= 1, of the promoted child of each seed: code_valid_rate and win_rate_vs_random "
                 "from its proposal (eval.json proposer.*; win rate: P(own candidate's screen loss < a random "
                 "control's), 0.5 = chance; its ci95 the same bootstrap as the loss), code_origin counts, and "
                 "model_code_promoted: children trained with proposed or edited code whose recipe.py differs from "
                 "the parent's; attempts: how many the generation took in those seeds",
    "wilcoxon_p": "exact one-sided Wilcoxon signed-rank test on d = X - Y paired by seed, H1: X < Y; zero "
                  "differences dropped, tied |d| midranks, null distribution enumerated; p = 1 when every d is 0",
}


# ---------------------------------------------------------------------- the experiment
@dataclass
class Lineage:
    proposer: str
    seed: int
    run_dir: Path
    overrides: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.proposer}/seed_{self.seed}"


def parse_seeds(text: str) -> list[int]:
    """"5" -> seeds 0..4; "0,3,7" -> those."""
    try:
        seeds = [int(s) for s in str(text).split(",")] if "," in str(text) else list(range(int(text)))
    except ValueError:
        raise ConfigError(f"--seeds must be a count (5) or a comma list of seeds (0,3,7), got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must give at least one seed, none negative or repeated, got {text!r}")
    return seeds


def plan_lineages(out: Path, proposers: list[str], seeds: list[int], overrides: list[str]) -> list[Lineage]:
    """One Lineage per (proposer, seed). An override `P:key=value` applies to proposer P only."""
    from recursive.proposers.configs import CONFIGS
    bad = [p for p in proposers if p not in CONFIGS]
    if bad or not proposers or len(set(proposers)) != len(proposers):
        raise ConfigError(f"--proposers must be distinct names among {', '.join(CONFIGS)}, got {','.join(proposers)}")
    for o in overrides:
        key = o.split(":", 1)[-1].split("=", 1)[0].lstrip("+~")
        if key in OWN_KEYS:
            raise ConfigError(f"override {o!r}: `experiment compare` sets {key} itself for each lineage "
                              "(--proposers, --seeds, --out); leave it out")
    out = Path(out).resolve()
    lins = []
    for s in seeds:
        for p in proposers:
            own = [o.split(":", 1)[1] for o in overrides if ":" in o.split("=", 1)[0] and o.split(":", 1)[0] == p]
            common = [o for o in overrides if ":" not in o.split("=", 1)[0]]
            rd = out / p / f"seed_{s}"
            lins.append(Lineage(p, s, rd, [*common, *own, f"proposer={p}", f"lineage.seed={s}",
                                           "budget.equal_compute=true", f"run_dir={rd}"]))
    return lins


def share_gen0(src: Path, dst: Path) -> bool:
    """Give `dst` (a lineage not started yet) the generation 0 of `src`: the attempt folder,
    the data (tokenizer, shards, eval sets), the integrity snapshot it was evaluated under and
    its lineage records, hard-linked where the filesystem allows (copied otherwise). The
    orchestrator of `dst` then finds generation 0 decided and goes on from it. Returns False
    when there is nothing to do (dst started, or src has no generation 0 yet)."""
    if (dst / lineage.LINEAGE_FILE).exists() or lineage.find(src, 0, 1) is None:
        return False
    dst.mkdir(parents=True, exist_ok=True)
    stray = [x.name for x in dst.iterdir() if x.name != MARKER]
    if stray:
        raise ConfigError(f"{dst} holds files but no lineage ({', '.join(sorted(stray)[:3])}); remove it to rerun")

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # another filesystem, or no hard links there
            shutil.copy2(a, b)

    for rel in ("data", "eval", "generations/gen_000"):
        if (src / rel).exists():
            shutil.copytree(src / rel, dst / rel, copy_function=link, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("wandb_mirrored.json", "wandb_synced.json"))
    for name in ("integrity.json", "base_config.json"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    events = lineage.events(src)
    last = max(i for i, e in enumerate(events) if e.get("event") == "attempt" and e.get("generation") == 0)
    for e in events[:last + 1]:  # generation 0's history; the new lineage records its own stops and warnings
        if e.get("event") not in ("stopped", "warning"):
            append_jsonl(dst / lineage.LINEAGE_FILE, e)
    atomic_write_json(dst / GEN0_SOURCE, {"source": str(src), "time": now(),
                                          "model_sha256": lineage.find(src, 0, 1).model_sha256})
    atomic_write_text(dst / MARKER, "created by `recursive experiment compare`; a run directory of recursive\n")
    return True


def run_local(lin: Lineage, extra: list[str] = ()) -> dict:
    """One lineage in this process, through the Orchestrator as `recursive run` does."""
    from recursive.config import compose_typed
    from recursive.loop import Orchestrator
    typed, tree = compose_typed([*lin.overrides, *extra])
    return Orchestrator(typed, tree).run()


class Experiment:
    """The (proposer, seed) lineages of one `experiment compare` and their report."""

    def __init__(self, out: Path, proposers: list[str], seeds: list[int], overrides: list[str]):
        from recursive.config import compose_typed
        self.out, self.proposers, self.seeds, self.overrides = Path(out).resolve(), proposers, seeds, list(overrides)
        self.lineages = plan_lineages(self.out, proposers, seeds, overrides)
        # every lineage composes: a bad override stops here, before any training
        self.configs = {lin.key: compose_typed(lin.overrides)[0] for lin in self.lineages}
        first = self.configs[self.lineages[0].key]
        self.generations, self.slurm = first.lineage.generations, first.launcher.name == "slurm"
        self.poll_s = float(getattr(first.launcher, "poll_s", 30) or 30)
        self.errors: dict[str, str] = {}

    def status(self, lin: Lineage) -> str:
        return lineage_status(lin.run_dir, self.generations)

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        owners = {s: next(lin for lin in self.lineages if lin.seed == s) for s in self.seeds}
        # generation 0 once per seed, in the first proposer's lineage
        todo = [lin for lin in owners.values() if lineage.find(lin.run_dir, 0, 1) is None]
        self._run_all(todo, extra=["lineage.generations=0"], what="generation 0")
        for lin in self.lineages:
            owner = owners[lin.seed]
            if lin is not owner and share_gen0(owner.run_dir, lin.run_dir):
                log(f"{lin.key}: generation 0 linked from {owner.key}")
        todo = []
        for lin in self.lineages:
            st = self.status(lin)
            if st in ("complete", "stopped"):
                log(f"{lin.key}: {st}, skipped")
            else:
                todo.append(lin)
        self._run_all(todo, what="lineage")
        report = self.report()
        atomic_write_json(self.out / REPORT, report)
        return report

    def _run_all(self, lins: list[Lineage], extra: list[str] = (), what: str = "lineage") -> None:
        from recursive.errors import Requeue, StageError
        if self.slurm:
            self.errors.update(run_jobs(self, lins, list(extra), what))
            return
        for lin in lins:
            log(f"{lin.key}: {what} ({lin.run_dir})")
            try:
                result = run_local(lin, extra)
                log(f"{lin.key}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))
            except Requeue:
                raise  # preempted: the same command again resumes it
            except (StageError, OSError) as e:  # this lineage's own failure; the others go on
                self.errors[lin.key] = str(e)
                log(f"{lin.key}: FAILED ({e})")

    def report(self) -> dict:
        curves: dict[str, dict[int, list]] = {p: {} for p in self.proposers}
        proposals: dict[str, dict[int, list]] = {p: {} for p in self.proposers}
        rows = []
        for lin in self.lineages:
            st = self.status(lin)
            loss, carried = loss_curve(lin.run_dir, self.generations)
            curves[lin.proposer][lin.seed] = loss
            proposals[lin.proposer][lin.seed] = proposal_curve(lin.run_dir, self.generations)
            stop = lineage.last_stop(lin.run_dir) if st == "stopped" else None
            src = lin.run_dir / GEN0_SOURCE
            rows.append({"proposer": lin.proposer, "seed": lin.seed, "run_dir": str(lin.run_dir), "status": st,
                         "error": self.errors.get(lin.key), "stopped_at": stopped_at(lin.run_dir) if stop else None,
                         "stop_reason": stop.get("reason") if stop else None, "loss": loss, "carried": carried,
                         "params": _params(lin.run_dir, self.generations),
                         "proposals": proposals[lin.proposer][lin.seed],
                         "gen0_from": read_json(src)["source"] if src.exists() else None,
                         "overrides": lin.overrides})
        reference = self.proposers[0]
        per_gen = statistics(curves, self.generations, reference)
        final = per_gen[-1]
        ratio = None
        if "random" in final["loss"] and final["loss"].get(reference, {}).get("mean") and final["loss"]["random"]["mean"]:
            ratio = final["loss"][reference]["mean"] / final["loss"]["random"]["mean"]
        return {"command": "recursive experiment compare", "argv": sys.argv, "time": now(), "out": str(self.out),
                "proposers": self.proposers, "reference": reference, "seeds": self.seeds,
                "generations": self.generations, "overrides": self.overrides, "equal_compute": True,
                "lineages": rows, "per_generation": per_gen, "final": final,
                "proposals": proposal_statistics(proposals, self.generations),
                "ratio_final_vs_random": ratio, "method": METHOD}


# ---------------------------------------------------------------------- launcher=slurm
# One orchestrator job per lineage (slurm/lineage.sbatch, which runs `recursive run "$@"`),
# named per lineage so that the template's --dependency=singleton lets them run side by
# side; each orchestrator submits its own training jobs (launcher=slurm). Job ids are kept
# in OUT/jobs.json: a re-run waits on a recorded job that is still queued or running
# instead of submitting another.
JOBS = "jobs.json"
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "SPECIAL_EXIT"}


def lineage_template() -> Path:
    """slurm/lineage.sbatch: in the source tree, or installed as package data."""
    from importlib import resources
    try:
        p = Path(str(resources.files("recursive.slurm_templates") / "lineage.sbatch"))
        if p.exists():
            return p
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[1] / "slurm" / "lineage.sbatch"


def sbatch_command(exp: "Experiment", lin: Lineage, extra: list[str]) -> list[str]:
    from recursive.launch.slurm import lineage_sbatch_args
    lc = exp.configs[lin.key].launcher
    tag = hashlib.sha256(str(exp.out).encode()).hexdigest()[:8]
    cmd = ["sbatch", "--parsable", f"--job-name=rec-cmp-{tag}-{lin.proposer}-s{lin.seed}",
           f"--output={exp.out / 'slurm' / f'{lin.proposer}-seed_{lin.seed}-%j.out'}"]
    return [*cmd, *lineage_sbatch_args(lc), str(lineage_template()), *lin.overrides, *extra]


def run_jobs(exp: "Experiment", lins: list[Lineage], extra: list[str], what: str) -> dict[str, str]:
    """Submit (or reattach to) one orchestrator job per lineage and wait for all of them;
    returns {lineage key: why} for those whose job ended with the lineage unfinished."""
    from recursive.launch.slurm import job_state
    if not lins:
        return {}
    (exp.out / "slurm").mkdir(parents=True, exist_ok=True)
    path = exp.out / JOBS
    jobs = read_json(path) if path.exists() else {}
    waiting = {}
    for lin in lins:
        rec = jobs.get(lin.key)
        state = job_state(rec["job_id"]) if rec else None
        if rec and rec.get("what") == what and state and state["state"] not in ENDED:
            log(f"{lin.key}: {what}: reattached to orchestrator job {rec['job_id']} ({state['state']})")
        else:
            cmd = sbatch_command(exp, lin, extra)
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise ConfigError(f"launcher=slurm: cannot submit with sbatch ({e})") from None
            if p.returncode != 0:
                raise ConfigError(f"launcher=slurm: sbatch refused the orchestrator job of {lin.key}: "
                                  f"{(p.stderr or p.stdout).strip()[:300]}")
            rec = {"job_id": p.stdout.strip().split(";")[0], "what": what, "submitted": now(), "command": cmd}
            jobs[lin.key] = rec
            atomic_write_json(path, jobs)
            log(f"{lin.key}: {what}: orchestrator job {rec['job_id']} submitted")
        waiting[lin.key] = (lin, rec["job_id"])
    errors, states = {}, {}
    while waiting:
        for key, (lin, job_id) in list(waiting.items()):
            st = job_state(job_id)
            if st is None or st["state"] in ENDED:
                states[key] = st
                del waiting[key]
                log(f"{key}: orchestrator job {job_id} ended ({'unknown to Slurm' if st is None else st['state']})")
        if waiting:
            time.sleep(exp.poll_s)
    for key, st in states.items():
        lin = next(x for x in lins if x.key == key)
        done = lineage.find(lin.run_dir, 0, 1) is not None if what == "generation 0" else \
            exp.status(lin) in ("complete", "stopped")
        if not done:
            errors[key] = (f"orchestrator job {jobs[key]['job_id']} ended "
                           f"{'(unknown to Slurm)' if st is None else st['state'] + ' exit ' + str(st['exit_code'])} "
                           f"with the {what} unfinished; see {exp.out / 'slurm'}")
    return errors


def _params(run_dir: Path, generations: int) -> list[int | None]:
    by_gen = {r.generation: r.params for r in lineage.promoted(run_dir)}
    return [by_gen.get(g) for g in range(generations + 1)]


# ---------------------------------------------------------------------- the table
def _ci(v: dict | None, key: str = "mean") -> str:
    if not v or v.get(key) is None:
        return "-"
    lo, hi = v["ci95"]
    return f"{v[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def table(report: dict) -> str:
    ref = report["reference"]
    others = [p for p in report["proposers"] if p != ref]
    head = ["gen"] + [f"{p} loss (n) [95% CI]" for p in report["proposers"]]
    head += [f"P({ref}<{p}) [95% CI]" for p in others] + [f"p Wilcoxon {ref}<{p}" for p in others]
    rows = [head]
    for row in report["per_generation"]:
        cells = [str(row["generation"])]
        for p in report["proposers"]:
            v = row["loss"][p]
            cells.append(_ci(v).replace(" [", f" ({v['n']}) [", 1) if v["n"] else "-")
        cells += [_ci(row["vs"][p], "p_less") for p in others]
        cells += ["-" if row["vs"][p]["wilcoxon_p"] is None else f"{row['vs'][p]['wilcoxon_p']:.4f}" for p in others]
        rows.append(cells)
    lines = _aligned(rows)
    lines.append("")
    ph = ["gen", "proposer", "code valid", "code origins (promoted)", "model code promoted", "win rate vs random [95% CI]"]
    prows = [ph]
    for row in report.get("proposals", []):
        for p, v in row["proposers"].items():
            w = v["win_rate_vs_random"]
            prows.append([str(row["generation"]), p,
                          "-" if v["code_valid_rate"] is None else f"{v['code_valid_rate']:.2f}",
                          ", ".join(f"{k} {n}" for k, n in sorted(v["code_origins"].items())) or "-",
                          f"{v['model_code_promoted']}/{v['n']}",
                          "-" if w["mean"] is None else f"{w['mean']:.3f} [{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}] (n {w['n']})"])
    if len(prows) > 1:
        lines += _aligned(prows)
        lines.append("")
    lh = ["lineage", "status", "stopped at", "final loss", "run_dir"]
    lrows = [lh]
    for lin in report["lineages"]:
        final = lin["loss"][-1]
        lrows.append([f"{lin['proposer']}/seed_{lin['seed']}", lin["status"] + (" (error)" if lin["error"] else ""),
                      "-" if lin["stopped_at"] is None else f"gen {lin['stopped_at']}",
                      "-" if final is None else f"{final:.3f}" + (" (carried)" if lin["carried"][-1] else ""),
                      lin["run_dir"]])
    lines += _aligned(lrows)
    lines.append(f"loss: {METRIC} of the promoted model, mean over seeds; a stopped lineage carries its last "
                 f"promoted model's loss forward; statistics: {REPORT} \"method\"")
    return "\n".join(lines)
