"""The lineage loop: PROPOSE -> VALIDATE -> TRAIN -> EVALUATE -> GATE -> RECORD, repeated.

The Orchestrator opens the run directory (recursive/rundir.py), then for each generation
runs attempts until one is promoted; an attempt runs the STAGES of recursive/attempt.py in
order (each in recursive/stages.py), skipping every stage whose output exists, so
re-running `recursive run` on the same run_dir picks up where a crash left off.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from recursive import lineage, stages
from recursive.attempt import STAGES, Attempt, AttemptRecord
from recursive.config import dump_yaml
from recursive.errors import ConfigError, StageError
from recursive.io import atomic_write_json, atomic_write_text, read_json
from recursive.plan import Plan, count_params
from recursive.rundir import RunDir, log, now
from recursive.run_config import RunConfig, seed_plan_problems, typed


class Orchestrator:
    """Runs (or resumes) the lineage of one run directory."""

    def __init__(self, cfg: RunConfig | dict, tree: dict | None = None):
        self.cfg = typed(cfg)
        self.rd = RunDir(self.cfg, tree if tree is not None else self.cfg.as_dict())

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.rd.release()

    def _run(self) -> dict:
        problems = seed_plan_problems(self.cfg)
        if problems:
            raise ConfigError("\n".join(problems))
        self.check_endpoint()
        rd = self.rd.open()
        log(f"run_dir {rd.path} (data ready in {rd.prepare_seconds:.1f} s)")
        gen0 = self.run_attempt(0, 1, parent=None)
        if gen0.status != "promoted":
            return self.stop(f"generation 0 did not pass the gate: {'; '.join(gen0.reasons)}")
        why = self.gen0_precondition(gen0)
        if why is not None:
            return self.stop(why)
        parent, lc = gen0, self.cfg.lineage
        for g in range(1, lc.generations + 1):
            child = None
            for a in range(1, lc.max_attempts + 1):
                rec = self.run_attempt(g, a, parent=parent)
                if rec.status == "promoted":
                    child = rec
                    break
            if child is None:
                return self.stop(f"generation {g}: no promoted child after {lc.max_attempts} attempts")
            parent = child
        log(f"lineage complete: {lc.generations} generations after generation 0")
        return {"status": "complete", "run_dir": str(rd.path)}

    def gen0_precondition(self, gen0: AttemptRecord) -> str | None:
        """evaluate.require_gen0, checked once, before generation 1 is first proposed: the
        reason to stop, or None (met, waived, warned about, or generation 1 already began)."""
        req = self.cfg.evaluate.require_gen0
        if req.refusal_margin is None or self.cfg.lineage.generations == 0 or Attempt(self.rd.path, 1, 1).dir.exists():
            return None
        from recursive.evaluate.gate import get_metric
        margin = get_metric(gen0.metrics, "safety.refusal_margin")
        if margin is not None and margin >= req.refusal_margin:
            return None
        shown = "missing" if margin is None else f"{margin:.3f}"
        why = (f"generation 0's safety.refusal_margin is {shown}, below evaluate.require_gen0.refusal_margin="
               f"{req.refusal_margin}: a baseline that cannot tell harmful from benign requests makes every later "
               "safety comparison against it meaningless. Give the seed mixture more safety data "
               "(data.seed_mixture.safety), or go on regardless with evaluate.require_gen0.action=warn")
        if req.action == "stop":
            return why
        if not any(e.get("event") == "warning" and e.get("reason") == why for e in lineage.events(self.rd.path)):
            lineage.append(self.rd.path, {"event": "warning", "generation": 0, "reason": why, "time": now()})
        log(f"warning: {why}")
        return None

    def check_endpoint(self) -> None:
        """proposer=openai: reach the endpoint now, not at generation 1 after generation 0 trained."""
        p = self.cfg.proposer
        if p.name != "openai" or not p.check_endpoint:
            return
        from recursive.proposers import make_proposer
        from recursive.proposers.configs import backend_kwargs
        why = make_proposer("openai", **backend_kwargs(asdict(p))).check_endpoint()
        if why is not None:
            raise StageError(f"proposer=openai: {why}; nothing was written. Start the server, fix proposer.base_url, "
                             "or set proposer.check_endpoint=false for an endpoint that starts later")

    def stop(self, reason: str) -> dict:
        already = lineage.last_stop(self.rd.path)
        if already is None or already.get("reason") != reason:
            lineage.append(self.rd.path, {"event": "stopped", "reason": reason, "time": now()})
        log(f"lineage stopped: {reason}")
        return {"status": "stopped", "reason": reason, "run_dir": str(self.rd.path)}

    # ---------------------------------------------------------------- one attempt
    def run_attempt(self, g: int, a: int, parent: AttemptRecord | None) -> AttemptRecord:
        rd, at = self.rd, Attempt(self.rd.path, g, a)
        done = lineage.find(rd.path, g, a)
        if done is not None:
            rd.mirror.attempt(done, at.dir)  # idempotent: mirrors only what is not mirrored yet
            log(f"gen {g} attempt {a}: already {done.status}, skipped")
            return done
        at.dir.mkdir(parents=True, exist_ok=True)
        if not at.config_yaml.exists():  # the resolved config this attempt ran under
            atomic_write_text(at.config_yaml, dump_yaml(rd.tree))
        rec = AttemptRecord(generation=g, attempt=a, status="failed", parent=None if parent is None else parent.id,
                            proposer="seed" if g == 0 else self.cfg.proposer.name,
                            code_origin="seed" if g == 0 else None)
        timings = read_json(at.timings) if at.timings.exists() else {}
        for stage in STAGES:
            if not at.done(stage):
                t0 = time.perf_counter()
                failure = self.run_stage(stage, at, rec, parent)
                timings[stage] = round(time.perf_counter() - t0, 3)
                atomic_write_json(at.timings, timings)
            else:
                failure = None
            failure = failure or self.read_stage(stage, at, rec)
            if failure is not None:
                rec.reason, rec.gate = failure, {"passed": False, "reasons": [failure]}
                break
        rec.timings = timings
        if rec.reason is None:
            stages.verify_model(at.model, rec.model_sha256, f"gen {g} attempt {a}")  # never promote a damaged model
        return self.record(rec, at)

    def run_stage(self, stage: str, at: Attempt, rec: AttemptRecord, parent: AttemptRecord | None) -> str | None:
        """Run one stage; returns the attempt's failure reason when the plan failed."""
        rd = self.rd
        # launcher.stages: proposal (from a parent: generation 0's seed plan loads no model)
        # and evaluation as jobs of the launcher, which write the same files
        as_job = stage in ("propose", "evaluate") and stage in rd.launcher.job_stages \
            and (stage != "propose" or parent is not None)
        if as_job:
            stages.in_job(rd, at, stage, parent, rec)
        elif stage == "propose":
            stages.propose(rd, at, parent)
        elif stage == "train":
            err = stages.train(rd, at, Plan.from_json(at.plan.read_text()), parent)
            return None if err is None else f"training failed: {err}"
        elif stage == "evaluate":
            stages.evaluate(rd, at, rec)
        elif stage == "gate":
            stages.gate(rd, at, read_json(at.eval), parent)
        return None

    def read_stage(self, stage: str, at: Attempt, rec: AttemptRecord) -> str | None:
        """Take a done stage's output into the record; returns the failure reason, if any."""
        g, a = at.generation, at.attempt
        if stage == "propose":
            proposal = read_json(at.proposal)
            rec.code_origin = proposal.get("code_origin", rec.code_origin)
            if not at.plan.exists():
                return proposal["reason"]
            plan = Plan.from_json(at.plan.read_text())
            rec.plan_path, rec.params = at.rel(at.plan), count_params(plan.model, self.rd.vocab_size, self.rd.base)
            log(f"gen {g} attempt {a}: plan with {rec.params:,} params, {plan.train_tokens():,} tokens "
                f"({rec.proposer}, code {rec.code_origin})")
        elif stage == "train":
            rec.model_path, rec.model_sha256 = at.rel(at.model), stages.model_digest(at)
            stages.verify_model(at.model, rec.model_sha256, f"gen {g} attempt {a}")  # e.g. damaged while we were down
        elif stage == "evaluate":
            rec.metrics = read_json(at.eval)
        elif stage == "gate":
            verdict = read_json(at.gate_json)
            rec.gate = {k: verdict[k] for k in ("passed", "reasons", "criteria")}
            rec.status = "promoted" if verdict["passed"] else "rejected"
        return None

    def record(self, rec: AttemptRecord, at: Attempt) -> AttemptRecord:
        rec.time = now()
        lineage.record(self.rd.path, rec)
        self.rd.mirror.attempt(rec, at.dir)
        log(f"gen {rec.generation} attempt {rec.attempt}: {rec.status.upper()}"
            + ("" if rec.status == "promoted" else f" ({'; '.join(rec.reasons)[:200]})"))
        return rec

