"""The stages of one attempt: PROPOSE (+ VALIDATE), TRAIN, EVALUATE, GATE.

Each is a function of the run directory and the attempt's files and leaves its output in
the attempt atomically (`Attempt.done(stage)` then holds), so the loop can skip a done
stage on a re-run. Heavy work runs where the launcher says; what its exit code and files
mean is the training protocol's.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from recursive.attempt import Attempt, AttemptRecord
from recursive.errors import ConfigError, Requeue, StageError
from recursive.io import atomic_write_json, atomic_write_text, read_json, sha256_tree
from recursive.plan import Plan
from recursive.propose import competence, make_context, run_proposal
from recursive.rundir import RunDir
from recursive.run_config import SPEC_KEYS
from recursive.train.protocol import ScreenCandidate, ScreenSpec, TrainSpec, read_outcome
from recursive.validate import check_candidate


def derive_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


# ---------------------------------------------------------------------- PROPOSE + VALIDATE
def propose(rd: RunDir, at: Attempt, parent: AttemptRecord | None) -> None:
    """-> plan.json and recipe.py (when a plan was selected) and proposal.json."""
    if parent is None:
        checked = check_candidate(rd.seed_plan().model_dump(mode="json"), None, rd.limits(None))
        if not checked.valid:
            raise ConfigError("the seed plan in configs/ is invalid: " + "; ".join(map(str, checked.problems)))
        plan, proposal = checked.plan, {"proposer": "seed", "code_origin": "seed", "candidates": []}
        if rd.base is not None:  # the plan describes the checkpoint; its hparams are the children's reference
            from recursive import pretrained
            proposal.update(proposer="pretrained", checkpoint=pretrained.describe(rd.cfg.model))
    else:
        parent_at = parent.where(rd.path)
        verify_model(parent_at.model, parent.model_sha256, f"parent {parent.id} of gen {at.generation}")
        parent_plan = read_json(parent_at.plan)
        ctx = make_context(rd.cfg, at.generation, at.attempt, parent, parent_plan, rd.seed_plan(), base=rd.base,
                           vocab_size=rd.vocab_size)
        screen_fn = None
        if rd.cfg.proposer.screen_steps > 0:
            screen_fn = lambda cands: screen(rd, at, parent, cands)  # noqa: E731
        limits = rd.limits(parent.params, parent_plan["model"], at.generation)
        plan, proposal = run_proposal(rd.cfg, ctx, parent_at.model, limits,
                                      seed=derive_seed(rd.cfg.lineage.seed, at.generation, at.attempt),
                                      attempt=at, screen=screen_fn)
    if plan is not None:
        atomic_write_text(at.recipe, plan.code)
        atomic_write_text(at.plan, plan.to_json())
    atomic_write_json(at.proposal, proposal)


def training_data(rd: RunDir, plan: Plan, data_dir: Path) -> tuple[dict, dict, list]:
    """Shards and normalised mixture a plan trains on: the plan's weights over the shards
    that exist. Per-generation sources (the research record) are rebuilt here from the
    lineage so far; an empty one is dropped and reported."""
    shards = {name: str(rd.path / e["path"]) for name, e in rd.manifest["train"].items()}
    mixture = plan.normalized_mixture()
    for name in [n for n in mixture if n in rd.manifest.get("per_generation", {})]:
        from recursive.data.prepare import build_research_shard
        from recursive.data.research import research_entries
        from recursive.data.tokenizer import load_tokenizer
        path = data_dir / f"{name}.bin"
        pc = rd.cfg.proposer
        entries = research_entries(rd.path, rd.seed_plan(), screened=pc.record_screened)
        options = {"outcome_first": pc.outcome_conditioning, "augment": pc.record_augment,
                   "seed": derive_seed(rd.cfg.lineage.seed, "research", len(entries))}
        if build_research_shard(entries, load_tokenizer(rd.tokenizer), path, min_tokens=plan.model.context + 1,
                                record_options=options) is not None:
            shards[name] = str(path)
    dropped = sorted(n for n in mixture if n not in shards)
    total = sum(w for n, w in mixture.items() if n in shards)
    # rounded: the same plan read back from plan.json can differ in the last bit, and the
    # training spec (hence the checkpoint fingerprint a resume matches) must not
    return ({n: shards[n] for n in mixture if n in shards},
            {n: round(w / total, 12) for n, w in mixture.items() if n in shards}, dropped)


def screen(rd: RunDir, at: Attempt, parent: AttemptRecord, candidates: list[tuple[int, Plan]]) -> dict:
    """Proxy-screen valid candidates in one training process (see recursive/propose.py)."""
    at.screen_dir.mkdir(parents=True, exist_ok=True)
    entries, all_shards = [], {}
    for index, plan in candidates:
        atomic_write_text(at.screen_plan(index), plan.to_json())
        shards, mixture, _ = training_data(rd, plan, at.screen_data(index))
        all_shards.update(shards)
        entries.append(ScreenCandidate(index=index, plan=str(at.screen_plan(index)), mixture=mixture))
    static = sorted(rd.manifest["train"])
    all_shards.update({n: str(rd.path / rd.manifest["train"][n]["path"]) for n in static})
    tc = rd.cfg.train
    ScreenSpec(tokenizer=str(rd.tokenizer), shards=all_shards, candidates=entries, steps=rd.cfg.proposer.screen_steps,
               screen_sources=static, context=rd.cfg.evaluate.context,
               teacher=str(parent.where(rd.path).model), parent=str(parent.where(rd.path).model), base_config=rd.base,
               threads=tc.threads, precision=tc.precision).write(at.screen_dir)
    rc = rd.launcher.run(at, "screen")
    result = at.screen_dir / "screen.json"
    if rc != 0 or not result.exists():
        raise StageError(f"screening process exited with {rc}; see {at.screen_dir / 'screen.log'}")
    return read_json(result)


# ---------------------------------------------------------------------- TRAIN
def train(rd: RunDir, at: Attempt, plan: Plan, parent: AttemptRecord | None) -> str | None:
    """Runs the training stage through the launcher; returns None when trained, else the
    plan's error (the attempt fails, the lineage goes on). Raises Requeue or StageError."""
    if parent is None and rd.base is not None:
        return import_gen0(rd, at)
    shards, mixture, dropped = training_data(rd, plan, at.data_dir)
    teacher = None
    if parent is not None and plan.hparams.distill_weight > 0:
        teacher = str(parent.where(rd.path).model)
    tc = asdict(rd.cfg.train)
    TrainSpec(tokenizer=str(rd.tokenizer), teacher=teacher, shards=shards, mixture=mixture, dropped_sources=dropped,
              parent=None if parent is None else str(parent.where(rd.path).model), base_config=rd.base,
              wall_clock_s=rd.cfg.budget.wall_clock_s, **{k: tc[k] for k in SPEC_KEYS}).write(at.dir)
    out = read_outcome(at.dir, rd.launcher.run(at, "train"))
    where = at.rel(at.dir)
    if out.kind == "trained":
        return None
    if out.kind == "plan_failed":
        return out.error
    if out.kind == "preempted":
        raise Requeue(f"training of {where} was preempted at step {out.step if out.step is not None else '?'} "
                      f"(checkpoint {out.checkpoint or '?'}); run the same command again to resume from it")
    if out.error:  # the trainer's one-line account (its traceback is in train.log)
        raise StageError(f"training process exited with {out.exit_code} ({out.error}); see {at.train_log}")
    tail = at.train_log.read_text(errors="replace").strip().splitlines()[-5:] if at.train_log.exists() else []
    raise StageError(f"training process exited with {out.exit_code}; see {at.train_log}: " + " | ".join(tail))


def import_gen0(rd: RunDir, at: Attempt) -> None:
    """model=pretrained: generation 0 is the checkpoint itself (recursive/pretrained.py),
    written to model/ with the lineage's tokenizer; nothing is trained."""
    from recursive import pretrained
    metrics = pretrained.import_checkpoint(rd.cfg.model, at.model)
    metrics["model_type"] = rd.base["model_type"]
    atomic_write_json(at.train_metrics, metrics)
    return None


def model_digest(at: Attempt) -> str:
    """sha256 of the trained model, taken once right after training (model.sha256)."""
    if not at.model_sha256.exists():
        atomic_write_text(at.model_sha256, sha256_tree(at.model) + "\n")
    return at.model_sha256.read_text().strip()


def verify_model(model_dir: Path, expected: str | None, what: str) -> None:
    """Refuse to evaluate, promote or propose from a model whose files changed since training."""
    if not (model_dir / "config.json").exists():
        raise StageError(f"{what}: model files missing at {model_dir} (the model recorded after training "
                         f"has sha256 {(expected or 'none')[:16]})")
    if expected is None or sha256_tree(model_dir) != expected:
        raise StageError(f"{what}: model files at {model_dir} do not match the sha256 recorded after "
                         f"training ({(expected or 'none')[:16]}); refusing to use a damaged model")


# ---------------------------------------------------------------------- EVALUATE
def evaluate(rd: RunDir, at: Attempt, record: AttemptRecord) -> None:
    """-> eval.json (every metric of the suite, proposer competence included) and eval_suite.json."""
    from recursive.evaluate import suite
    rd.check_integrity(when=f"before evaluating gen {at.generation} attempt {at.attempt}")
    breaches = rd.breaches()
    parent_model = None if record.parent_key is None else Attempt(rd.path, *record.parent_key).model
    proposal = read_json(at.proposal) if at.proposal.exists() else {}
    training = read_json(at.train_spec) if at.train_spec.exists() else None
    metrics = suite.run_suite(at.model, parent_model, rd.path, rd.manifest, rd.tree["evaluate"], proposal, training)
    metrics["integrity"] = {"ok": int(not breaches), "breaches": len(breaches)}
    metrics["train"] = {k: v for k, v in read_json(at.train_metrics).items() if isinstance(v, (int, float))}
    # the successor must be able to propose: sample plans from it for its own would-be child
    me = AttemptRecord(**{**asdict(record), "metrics": metrics})
    own_plan = read_json(at.plan)
    ctx = make_context(rd.cfg, at.generation + 1, 1, me, own_plan, rd.seed_plan(), base=rd.base,
                       vocab_size=rd.vocab_size)
    limits = rd.limits(record.params, own_plan["model"], at.generation + 1)
    metrics["proposer"] = competence(rd.cfg, ctx, at.model, limits,
                                     seed=derive_seed(rd.cfg.lineage.seed, at.generation, at.attempt, "competence"))
    if proposal.get("win_rate_vs_random") is not None:  # of the proposal that made this attempt
        metrics["proposer"]["win_rate_vs_random"] = proposal["win_rate_vs_random"]
    suite.write_declarations(at.eval_suite, rd.manifest)
    atomic_write_json(at.eval, metrics)


# ---------------------------------------------------------------------- as a job
def in_job(rd: RunDir, at: Attempt, stage: str, parent: AttemptRecord | None, record: AttemptRecord) -> None:
    """Run `stage` ("propose" or "evaluate") as a launcher job (launcher.stages): the job runs
    `python -m recursive.stage_job STAGE ATTEMPT_DIR`, which calls `propose` / `evaluate`
    above and writes the same files; raises what the stage raised."""
    from recursive.stage_job import raise_recorded
    atomic_write_json(at.stage_input(stage), {"parent": None if parent is None else asdict(parent),
                                              "record": asdict(record)})
    if rd.launcher.run(at, stage) != 0:
        raise_recorded(at, stage)


# ---------------------------------------------------------------------- GATE
def gate(rd: RunDir, at: Attempt, metrics: dict, parent: AttemptRecord | None) -> None:
    """-> gate.json and gate.txt: every criterion with its value, bound and verdict."""
    from recursive import lineage
    from recursive.evaluate.gate import gate as judge, render
    gen0 = lineage.find(rd.path, 0, 1)
    criteria = rd.tree["evaluate"]["gate"]
    if at.generation == 0 and rd.base is not None:
        # a user's checkpoint is the reference, not a candidate: thresholds tuned for the toy
        # do not judge it; only sanity (finite metrics) and integrity do
        criteria = {k: v for k, v in criteria.items() if str(v.get("metric", "")).startswith("integrity.")}
    verdict = judge(metrics, None if parent is None else parent.metrics, None if gen0 is None else gen0.metrics,
                    criteria, of_gen0=at.generation == 0, trained=_trained_reference(rd, at, parent))
    atomic_write_json(at.gate_json, verdict)
    atomic_write_text(at.gate_txt, render(verdict) + "\n")


def _trained_reference(rd: RunDir, at: Attempt, parent: AttemptRecord | None):
    """A pretrained generation 0 never trained on the lineage's data: memorisation criteria
    against gen0 are judged against generation 1 of this candidate's ancestry instead
    (evaluate/gate.py, docs/evals.md). None: generation 0 was trained here (or is the candidate)."""
    from recursive import lineage
    from recursive.evaluate.gate import TrainedReference
    if rd.base is None or at.generation == 0:
        return None
    if at.generation == 1:
        return TrainedReference("this generation", None)
    first = parent
    while first is not None and first.generation > 1 and first.parent_key is not None:
        first = lineage.find(rd.path, *first.parent_key)
    if first is None or first.generation != 1:
        return TrainedReference("generation 1 (not found in the lineage record)", {})
    return TrainedReference(f"gen {first.generation} attempt {first.attempt}, the first trained on the lineage's data",
                            first.metrics)
