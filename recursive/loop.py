"""The lineage loop: PROPOSE -> VALIDATE -> TRAIN -> EVALUATE -> GATE -> RECORD, repeated.

Every stage is a function of files in the attempt directory and leaves its output there
atomically, so re-running `recursive run` on the same run_dir skips every stage whose
output exists and picks up where a crash left off.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from recursive import lineage
from recursive.config import ConfigError, dump_yaml, package_path, resume_conflicts
from recursive.io import atomic_write_json, atomic_write_text, read_json, sha256_tree
from recursive.plan import Plan, count_params
from recursive.propose import competence, make_context, run_proposal
from recursive.validate import Limits, batch_multiple, validate_plan


class StageError(RuntimeError):
    """A stage crashed for a reason that is not the plan's fault (the lineage stops)."""


class Requeue(RuntimeError):
    """Training was preempted (SIGTERM/SIGUSR1) and wrote a checkpoint: nothing is wrong,
    run the same command again and it resumes from that checkpoint (exit code 75)."""


# train config keys handed to the training stage as they are (train/trainer.py documents them)
TRAIN_SPEC_KEYS = ("strategy", "num_processes", "threads", "precision", "log_every", "grad_accum", "compile",
                   "checkpoint_every", "keep_checkpoints")


def log(msg: str) -> None:
    print(f"[recursive {datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_plan(cfg: dict) -> Plan:
    sp = cfg["seed_plan"]
    return Plan.model_validate({
        "model": cfg["model"], "hparams": cfg["hparams"],
        "data": {"mixture": cfg["data"]["seed_mixture"]},
        "code": package_path(sp["code"]).read_text(), "rationale": sp["rationale"],
    })


def make_limits(cfg: dict, vocab_size: int, parent_params: int | None, manifest: dict | None = None) -> Limits:
    """The budget a plan is validated against; with a data manifest, also the measured
    contamination of every source (a plan may not put weight on a contaminated one)."""
    from recursive.data.contamination import max_rate
    b = cfg["budget"]
    contamination = {name: max_rate(row) for name, row in (manifest or {}).get("contamination", {}).items()}
    return Limits(sources=tuple(cfg["data"]["sources"]), vocab_size=vocab_size, parent_params=parent_params,
                  param_ratio=float(b["param_ratio"]), max_params=int(b["max_params"]),
                  max_train_tokens=int(b["max_train_tokens"]), min_param_ratio=float(b["min_param_ratio"]),
                  min_train_tokens=int(b["min_train_tokens"]), contamination=contamination,
                  max_contamination_rate=float(cfg["evaluate"]["max_contamination_rate"]),
                  batch_multiple=batch_multiple(cfg["train"]))


def derive_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


class Lineage:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.run_dir = Path(cfg["run_dir"]).resolve()
        self.mirror = None

    # ---------------------------------------------------------------- set-up
    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = hold_lock(self.run_dir / "orchestrator.lock")
        if self._lock is None:
            holder = (self.run_dir / "orchestrator.lock").read_text().strip() or "?"
            raise StageError(f"another `recursive run` holds {self.run_dir} ({holder}); two orchestrators "
                             "on one run directory would duplicate attempts: wait for it or stop it")
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"pid {os.getpid()} on {platform.node()} since {_now()}\n")
        self._lock.flush()
        stored_path = self.run_dir / "config.json"
        if stored_path.exists():
            conflicts = resume_conflicts(read_json(stored_path), self.cfg)
            if conflicts:
                raise ConfigError(f"run_dir {self.run_dir} was started with a different configuration "
                                  f"(differs in: {', '.join(conflicts[:8])}); use a new run_dir or the same overrides")
        atomic_write_json(stored_path, self.cfg)
        atomic_write_text(self.run_dir / "config.yaml", dump_yaml(self.cfg))
        if not (self.run_dir / "env.json").exists():
            atomic_write_json(self.run_dir / "env.json", environment())
        from recursive.data.prepare import prepare_data  # heavy imports only when running
        from recursive.evaluate import integrity
        reference = integrity.read_reference(self.run_dir)
        if reference is not None:
            # before prepare_data, which would quietly rebuild a changed eval file
            self.check_integrity(reference, when="lineage restart")
        t0 = time.perf_counter()
        self.manifest = prepare_data(self.cfg["data"], self.run_dir, seed=self.cfg["lineage"]["seed"])
        self.prepare_seconds = time.perf_counter() - t0
        if reference is None:  # the lineage starts: this is what every evaluation is checked against
            atomic_write_json(self.run_dir / "integrity.json", integrity.snapshot(self.run_dir, self.manifest))
        self.vocab_size = int(self.manifest["vocab_size"])
        from recursive.wandb_log import make_mirror
        self.mirror = make_mirror(self.cfg, self.run_dir)

    def release(self) -> None:
        """Let go of the run directory (another orchestrator, or another Lineage object in
        this process, may take it); the kernel does the same when the process ends."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.close()

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.release()

    def _run(self) -> dict:
        self.start()
        log(f"run_dir {self.run_dir} (data ready in {self.prepare_seconds:.1f} s)")
        gen0 = self.run_attempt(0, 1, parent=None)
        if gen0["status"] != "promoted":
            return self.stop(f"generation 0 did not pass the gate: {'; '.join(gen0['gate']['reasons'])}")
        parent = gen0
        for g in range(1, self.cfg["lineage"]["generations"] + 1):
            child = None
            for a in range(1, self.cfg["lineage"]["max_attempts"] + 1):
                rec = self.run_attempt(g, a, parent=parent)
                if rec["status"] == "promoted":
                    child = rec
                    break
            if child is None:
                return self.stop(f"generation {g}: no promoted child after "
                                 f"{self.cfg['lineage']['max_attempts']} attempts")
            parent = child
        log(f"lineage complete: {self.cfg['lineage']['generations']} generations after generation 0")
        return {"status": "complete", "run_dir": str(self.run_dir)}

    def stop(self, reason: str) -> dict:
        already = [e for e in lineage.events(self.run_dir) if e.get("event") == "stopped" and e.get("reason") == reason]
        if not already:
            lineage.append(self.run_dir, {"event": "stopped", "reason": reason, "time": _now()})
        log(f"lineage stopped: {reason}")
        return {"status": "stopped", "reason": reason, "run_dir": str(self.run_dir)}

    # ---------------------------------------------------------------- one attempt
    def run_attempt(self, g: int, a: int, parent: dict | None) -> dict:
        done = lineage.find(self.run_dir, g, a)
        d = lineage.attempt_dir(self.run_dir, g, a)
        if done is not None:
            self.mirror.attempt(done, d)  # idempotent: mirrors only what is not mirrored yet
            log(f"gen {g} attempt {a}: already {done['status']}, skipped")
            return done
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "config.yaml").exists():  # the resolved config this attempt ran under
            atomic_write_text(d / "config.yaml", dump_yaml(self.cfg))
        timings = read_json(d / "timings.json") if (d / "timings.json").exists() else {}
        record = {"event": "attempt", "generation": g, "attempt": a,
                  "parent": None if parent is None else lineage.attempt_id(parent["generation"], parent["attempt"]),
                  "plan_path": None, "model_path": None, "params": None, "metrics": {},
                  "gate": {"passed": False, "reasons": []}, "proposer": "seed" if g == 0 else self.cfg["proposer"]["name"],
                  "code_origin": "seed" if g == 0 else None}

        def timed(stage: str, fn):
            if stage in timings:
                return fn()  # output on disk: the stage function only reads it back
            t0 = time.perf_counter()
            out = fn()
            timings[stage] = round(time.perf_counter() - t0, 3)
            atomic_write_json(d / "timings.json", timings)
            return out

        # PROPOSE + VALIDATE
        plan, proposal = timed("propose", lambda: self.propose(g, a, parent, d))
        record["code_origin"] = proposal.get("code_origin", record["code_origin"])
        if plan is None:
            record.update(status="failed", reason=proposal["reason"], timings=timings)
            record["gate"] = {"passed": False, "reasons": [proposal["reason"]]}
            return self.record(record, d)
        record["plan_path"] = str((d / "plan.json").relative_to(self.run_dir))
        record["params"] = count_params(plan.model, self.vocab_size)
        log(f"gen {g} attempt {a}: plan with {record['params']:,} params, "
            f"{plan.train_tokens():,} tokens ({record['proposer']}, code {record['code_origin']})")
        # TRAIN
        err = timed("train", lambda: self.train(d, plan, parent))
        if err is not None:
            record.update(status="failed", reason=f"training failed: {err}", timings=timings)
            record["gate"] = {"passed": False, "reasons": [record["reason"]]}
            return self.record(record, d)
        record["model_path"] = str((d / "model").relative_to(self.run_dir))
        record["model_sha256"] = self.model_digest(d)
        verify_model(d / "model", record["model_sha256"], f"gen {g} attempt {a}")  # e.g. damaged while we were down
        # EVALUATE
        metrics = timed("evaluate", lambda: self.evaluate(g, a, d, record))
        record["metrics"] = metrics
        # GATE
        verdict = timed("gate", lambda: self.gate(d, metrics, parent))
        record["gate"] = {"passed": verdict["passed"], "reasons": verdict["reasons"], "criteria": verdict["criteria"]}
        record["status"] = "promoted" if verdict["passed"] else "rejected"
        record["timings"] = timings
        verify_model(d / "model", record["model_sha256"], f"gen {g} attempt {a}")  # never promote a damaged model
        return self.record(record, d)

    def record(self, record: dict, d: Path) -> dict:
        record["time"] = _now()
        lineage.append(self.run_dir, record)
        self.mirror.attempt(record, d)
        log(f"gen {record['generation']} attempt {record['attempt']}: {record['status'].upper()}"
            + ("" if record["status"] == "promoted" else f" ({'; '.join(record['gate']['reasons'])[:200]})"))
        return record

    # ---------------------------------------------------------------- stages
    def propose(self, g: int, a: int, parent: dict | None, d: Path) -> tuple[Plan | None, dict]:
        if (d / "proposal.json").exists():
            proposal = read_json(d / "proposal.json")
            plan = Plan.from_json((d / "plan.json").read_text()) if (d / "plan.json").exists() else None
            return plan, proposal
        if g == 0:
            plan = seed_plan(self.cfg)
            _, problems = validate_plan(plan.model_dump(mode="json"), make_limits(self.cfg, self.vocab_size, None, self.manifest))
            if problems:
                raise ConfigError("the seed plan in configs/ is invalid: " + "; ".join(map(str, problems)))
            proposal = {"proposer": "seed", "code_origin": "seed", "candidates": []}
        else:
            parent_dir = self.run_dir / "generations" / f"gen_{parent['generation']:03d}" / f"attempt_{parent['attempt']:02d}"
            verify_model(parent_dir / "model", parent.get("model_sha256"),
                         f"parent {lineage.attempt_id(parent['generation'], parent['attempt'])} of gen {g}")
            ctx = make_context(self.cfg, self.run_dir, g, a, parent, parent_dir, seed_plan(self.cfg))
            limits = make_limits(self.cfg, self.vocab_size, parent["params"], self.manifest)
            screen = None
            if int(self.cfg["proposer"].get("screen_steps", 0)) > 0:
                screen = lambda cands: self.screen(d, parent, cands)  # noqa: E731
            plan, proposal = run_proposal(self.cfg, ctx, parent_dir / "model", limits,
                                          seed=derive_seed(self.cfg["lineage"]["seed"], g, a), out_dir=d,
                                          screen=screen)
        if plan is not None:
            atomic_write_text(d / "recipe.py", plan.code)
            atomic_write_text(d / "plan.json", plan.to_json())
        atomic_write_json(d / "proposal.json", proposal)
        return plan, proposal

    def train(self, d: Path, plan: Plan, parent: dict | None) -> str | None:
        """Runs the training process; returns None on success, else the plan's error."""
        if (d / "model" / "config.json").exists() and (d / "train_metrics.json").exists():
            return None
        tc = self.cfg["train"]
        shards, mixture, dropped = self.training_data(plan, d / "data")
        teacher = None
        if parent is not None and plan.hparams.distill_weight > 0:
            teacher = str(self.run_dir / parent["model_path"])
        spec = {"tokenizer": str(self.run_dir / self.manifest["tokenizer"]), "teacher": teacher,
                "shards": {n: shards[n] for n in mixture}, "mixture": mixture, "dropped_sources": dropped,
                **{k: tc[k] for k in TRAIN_SPEC_KEYS if k in tc}}
        atomic_write_json(d / "train_spec.json", spec)
        if self.cfg["launcher"]["name"] == "slurm":
            rc = self.train_on_slurm(d)
        else:
            rc = self.train_locally(d)
        if rc == 0:
            return None
        if rc == 2 and (d / "train_error.json").exists():
            return read_json(d / "train_error.json")["error"]
        # torchrun exits 1 when its workers exit 75: the requeue file is the signal
        if rc == REQUEUE_EXIT or (d / REQUEUE_FILE).exists():
            info = read_json(d / REQUEUE_FILE) if (d / REQUEUE_FILE).exists() else {}
            raise Requeue(f"training of {d.relative_to(self.run_dir)} was preempted at step "
                          f"{info.get('step', '?')} (checkpoint {info.get('checkpoint', '?')}); "
                          "run the same command again to resume from it")
        if (d / "train_error.json").exists():  # the trainer's one-line account (its traceback is in train.log)
            raise StageError(f"training process exited with {rc} ({read_json(d / 'train_error.json')['error']}); "
                             f"see {d / 'train.log'}")
        tail = (d / "train.log").read_text(errors="replace").strip().splitlines()[-5:]
        raise StageError(f"training process exited with {rc}; see {d / 'train.log'}: " + " | ".join(tail))

    def train_on_slurm(self, d: Path) -> int:
        from recursive.slurm import SlurmError, SlurmLauncher
        try:
            return SlurmLauncher(self.cfg, self.run_dir, log).run_training(d)
        except SlurmError as e:
            raise StageError(str(e)) from None

    def train_locally(self, d: Path) -> int:
        tc = self.cfg["train"]
        cmd = train_command(tc, d)
        env = dict(os.environ, OMP_NUM_THREADS=str(tc["threads"]), TOKENIZERS_PARALLELISM="false")
        # a trainer left by a killed orchestrator gets SIGTERM (see run_child), checkpoints and
        # exits; it holds train.lock until then: wait for it rather than race it
        wait_for_lock(d / "train.lock", what=f"the previous training process of {d.name}")
        (d / "train_error.json").unlink(missing_ok=True)
        # appended: a resumed run keeps the log of the segment before the preemption
        with open(d / "train.log", "a") as logf:
            logf.write(f"=== {_now()} {' '.join(cmd)}\n")
            logf.flush()
            return run_child(cmd, logf, env)

    def training_data(self, plan: Plan, data_dir: Path) -> tuple[dict, dict, list]:
        """Shards and normalised mixture a plan trains on: the plan's weights over the
        shards that exist. Per-generation sources (the research record) are rebuilt here
        from the lineage so far; an empty one is dropped and reported."""
        shards = {name: str(self.run_dir / e["path"]) for name, e in self.manifest["train"].items()}
        mixture = plan.normalized_mixture()
        for name in [n for n in mixture if n in self.manifest.get("per_generation", {})]:
            from recursive.data.prepare import build_research_shard
            from recursive.data.tokenizer import load_tokenizer
            tok = load_tokenizer(self.run_dir / self.manifest["tokenizer"])
            path = data_dir / f"{name}.bin"
            if build_research_shard(research_entries(self.run_dir, seed_plan(self.cfg)), tok, path,
                                    min_tokens=plan.model.context + 1) is not None:
                shards[name] = str(path)
        dropped = sorted(n for n in mixture if n not in shards)
        total = sum(w for n, w in mixture.items() if n in shards)
        # rounded: the same plan read back from plan.json can differ in the last bit, and the
        # training spec (hence the checkpoint fingerprint a resume matches) must not
        return ({n: shards[n] for n in mixture if n in shards},
                {n: round(w / total, 12) for n, w in mixture.items() if n in shards}, dropped)

    def screen(self, d: Path, parent: dict, candidates: list[tuple[int, Plan]]) -> dict:
        """Proxy-screen valid candidates in one training process (see recursive/propose.py)."""
        sd = d / "proposal" / "screen"
        sd.mkdir(parents=True, exist_ok=True)
        entries, all_shards = [], {}
        for index, plan in candidates:
            atomic_write_text(sd / f"plan_{index}.json", plan.to_json())
            shards, mixture, _ = self.training_data(plan, sd / f"data_{index}")
            all_shards.update(shards)
            entries.append({"index": index, "plan": str(sd / f"plan_{index}.json"), "mixture": mixture})
        static = sorted(self.manifest["train"])
        all_shards.update({n: str(self.run_dir / self.manifest["train"][n]["path"]) for n in static})
        tc = self.cfg["train"]
        spec = {"tokenizer": str(self.run_dir / self.manifest["tokenizer"]), "shards": all_shards,
                "candidates": entries, "steps": int(self.cfg["proposer"]["screen_steps"]),
                "screen_sources": static, "context": int(self.cfg["evaluate"]["context"]), "windows_per_source": 16,
                "teacher": str(self.run_dir / parent["model_path"]), "threads": tc["threads"],
                "precision": tc["precision"], "log_every": 10**9}
        atomic_write_json(sd / "screen_spec.json", spec)
        env = dict(os.environ, OMP_NUM_THREADS=str(tc["threads"]), TOKENIZERS_PARALLELISM="false")
        with open(sd / "screen.log", "w") as logf:
            rc = run_child([sys.executable, "-m", "recursive.train", "--screen", str(sd)], logf, env)
        if rc != 0:
            raise StageError(f"screening process exited with {rc}; see {sd / 'screen.log'}")
        return read_json(sd / "screen.json")

    def model_digest(self, d: Path) -> str:
        """sha256 of the trained model, taken once right after training (model.sha256)."""
        path = d / "model.sha256"
        if not path.exists():
            atomic_write_text(path, sha256_tree(d / "model") + "\n")
        return path.read_text().strip()

    def check_integrity(self, reference: dict, when: str) -> list[str]:
        """Compare eval data and code with the lineage-start snapshot; a breach is recorded in
        the lineage and fails every later gate of this run directory."""
        from recursive.evaluate import integrity
        problems = integrity.verify(self.run_dir, reference)
        if problems:
            lineage.append(self.run_dir, {"event": "integrity", "when": when, "problems": problems, "time": _now()})
            log(f"INTEGRITY BREACH ({when}): " + "; ".join(problems))
        return problems

    def evaluate(self, g: int, a: int, d: Path, record: dict) -> dict:
        if (d / "eval.json").exists():
            return read_json(d / "eval.json")
        from recursive.evaluate import integrity, suite
        from recursive.evaluate.suite import run_suite
        self.check_integrity(integrity.read_reference(self.run_dir), when=f"before evaluating gen {g} attempt {a}")
        breaches = [p for e in lineage.events(self.run_dir) if e.get("event") == "integrity" for p in e["problems"]]
        parent_path = None if record["parent"] is None else self.run_dir / lineage.find(
            self.run_dir, *_parse_id(record["parent"]))["model_path"]
        proposal = read_json(d / "proposal.json") if (d / "proposal.json").exists() else {}
        metrics = run_suite(d / "model", parent_path, self.run_dir, self.manifest, self.cfg["evaluate"], proposal)
        metrics["integrity"] = {"ok": int(not breaches), "breaches": len(breaches)}
        metrics["train"] = {k: v for k, v in read_json(d / "train_metrics.json").items()
                            if isinstance(v, (int, float))}
        # the successor must be able to propose: sample plans from it for its own would-be child
        me = dict(record, metrics=metrics)
        ctx = make_context(self.cfg, self.run_dir, g + 1, 1, me, d, seed_plan(self.cfg))
        limits = make_limits(self.cfg, self.vocab_size, record["params"], self.manifest)
        metrics["proposer"] = competence(self.cfg, ctx, d / "model", limits,
                                         seed=derive_seed(self.cfg["lineage"]["seed"], g, a, "competence"))
        suite.write_declarations(d / "eval_suite.json", self.manifest)
        atomic_write_json(d / "eval.json", metrics)
        return metrics

    def gate(self, d: Path, metrics: dict, parent: dict | None) -> dict:
        if (d / "gate.json").exists():
            return read_json(d / "gate.json")
        from recursive.evaluate.gate import gate, render
        gen0 = lineage.find(self.run_dir, 0, 1)
        verdict = gate(metrics, None if parent is None else parent["metrics"],
                       None if gen0 is None else gen0["metrics"], self.cfg["evaluate"]["gate"])
        atomic_write_json(d / "gate.json", verdict)
        atomic_write_text(d / "gate.txt", render(verdict) + "\n")
        return verdict


def verify_model(model_dir: Path, expected: str | None, what: str) -> None:
    """Refuse to evaluate, promote or propose from a model whose files changed since training."""
    if not (model_dir / "config.json").exists():
        raise StageError(f"{what}: model files missing at {model_dir} (the model recorded after training "
                         f"has sha256 {(expected or 'none')[:16]})")
    if expected is None or sha256_tree(model_dir) != expected:
        raise StageError(f"{what}: model files at {model_dir} do not match the sha256 recorded after "
                         f"training ({(expected or 'none')[:16]}); refusing to use a damaged model")


REQUEUE_EXIT, REQUEUE_FILE = 75, "train_requeue.json"  # as in recursive/train/trainer.py


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the orchestrator dies, even by kill -9, so
    no orphan trainer keeps writing into an attempt that a re-run will redo. SIGTERM makes
    the trainer checkpoint and exit 75, so the re-run resumes from that checkpoint."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child outlives a killed orchestrator
        pass


def hold_lock(path: Path):
    """An exclusive flock on `path`, held while the returned file stays open (the kernel drops
    it when the process dies, even by kill -9); None if another process holds it."""
    import fcntl
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def wait_for_lock(path: Path, *, what: str, timeout: float = 600.0) -> None:
    """Block until nobody holds the flock on `path` (then release it at once)."""
    deadline, said = time.monotonic() + timeout, False
    while (f := hold_lock(path)) is None:
        if not said:
            log(f"waiting for {what} to exit (it holds {path})")
            said = True
        if time.monotonic() > deadline:
            raise StageError(f"{what} still holds {path} after {timeout:.0f} s; stop it and run again")
        time.sleep(0.2)
    f.close()


def run_child(cmd: list[str], logf, env: dict) -> int:
    """A stage process, its output in `logf`, tied to the orchestrator's life."""
    return subprocess.call(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env,
                           preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def train_command(tc: dict, d: Path) -> list[str]:
    n = int(tc.get("num_processes", 1))
    if n <= 1:
        return [sys.executable, "-m", "recursive.train", str(d)]
    # one code path for 1 and N processes: accelerate reads rank/world size from torchrun's env
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
            "-m", "recursive.train", str(d)]


def research_entries(run_dir: Path, seed: Plan) -> list[dict]:
    """The research record as the data source sees it: prompt, plan and outcome per attempt.

    Plans appear as the proposer wrote them: an inherited recipe shows as code "" (the
    decoder's short code field cannot hold a module, and a whole module per entry would
    swamp the record). Before generation 0 is recorded, the human seed plan is the one
    entry, so generation 0 already sees what a plan looks like."""
    out = []
    for e in lineage.attempts(run_dir):
        d = lineage.attempt_dir(run_dir, e["generation"], e["attempt"])
        if not (d / "plan.json").exists():
            continue
        plan = read_json(d / "plan.json")
        if e.get("code_origin") not in ("proposed", "edited"):
            plan["code"] = ""
        prompt = (d / "proposal" / "prompt.txt").read_text() if (d / "proposal" / "prompt.txt").exists() else ""
        out.append({"generation": e["generation"], "attempt": e["attempt"], "status": e["status"], "prompt": prompt,
                    "plan": plan, "gate_reasons": e["gate"].get("reasons", []),
                    "metrics": _record_metrics(e.get("metrics") or {})})
    if not any(e["generation"] == 0 for e in out):
        plan = seed.model_dump(mode="json")
        plan["code"] = ""
        out.insert(0, {"generation": 0, "attempt": 1, "status": "promoted", "prompt": "", "plan": plan,
                       "gate_reasons": ["human seed plan"], "metrics": {}})
    return out


def _record_metrics(m: dict) -> dict:
    return {"heldout_loss": (m.get("heldout_loss") or {}).get("mean"),
            "valid_plan_rate": (m.get("proposer") or {}).get("valid_plan_rate")}


def environment() -> dict:
    pkgs = {}
    for name in ("torch", "transformers", "accelerate", "deepspeed", "hydra-core", "wandb", "tokenizers",
                 "pydantic", "xgrammar", "numpy", "recursive"):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    return {"python": sys.version, "platform": platform.platform(), "packages": pkgs, "git_revision": rev,
            "argv": sys.argv, "time": _now()}


def _parse_id(attempt_id: str) -> tuple[int, int]:
    g, a = attempt_id.split("/")
    return int(g.split("_")[1]), int(a.split("_")[1])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
