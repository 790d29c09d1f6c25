"""The PROPOSE and VALIDATE stages: K candidates from the proposer, each validated with
exactly the checks of `recursive check-plan`, one selected by a documented rule.

Selection rule: when more than one candidate is valid and `proposer.screen_steps` > 0,
each valid candidate is screened: a miniature of its plan (screen_steps steps, warmup
scaled alike) is trained and scored by cross-entropy on fixed windows of the *training*
shards (never the eval sets); the lowest screen loss wins. Without screening, the
candidate the proposer itself found most likely wins (highest summed log-probability).
Ties go to the lowest index. A short-horizon proxy favours plans that learn fast (high
lr, short warmup); the gate still judges the fully trained child on the eval sets.

Control candidates (`proposer.control_candidates`, on in the toy and smoke experiments):
beside the proposer's K candidates, K uniform samples of the same schema (the random
proposer, same trust region) are validated and screened in the same process, recorded in
candidates.json with `"control": true`, and never selected. `win_rate` turns the screen
losses into `win_rate_vs_random` (proposal.json, then eval.json's
`proposer.win_rate_vs_random`): the probability that a proposed plan beats a random one,
0.5 = no better than chance. It costs one more screening of K miniatures per attempt.

Code: a candidate's `code` that fails the policy (a toy model cannot yet write a module)
is replaced by the parent's recipe, and the attempt's `code_origin` says so.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from recursive import lineage
from recursive.attempt import Attempt, AttemptRecord
from recursive.io import atomic_write_json, atomic_write_text, read_json
from recursive.plan import Plan
from recursive.proposers.configs import backend_kwargs
from recursive.proposers.prompt import outcome_of
from recursive.run_config import RunConfig, typed
from recursive.validate import Limits, batch_multiple, check_candidate

RECIPE_API = ("The recipe module defines lr_lambda(step, total_steps, warmup_steps) -> lr multiplier in [0, 10] "
              "and loss(logits, labels, teacher_logits, hp) -> scalar tensor; it may import only math, torch "
              "and torch.nn.functional.")


def make_context(cfg: RunConfig, g: int, a: int, parent: AttemptRecord, parent_plan: dict, seed: Plan,
                 base: dict | None = None, vocab_size: int | None = None):
    """What the proposer sees for generation g, attempt a (see recursive.proposers.base):
    `parent` proposes; `parent_plan` is the plan it was trained from; `base` the lineage's
    family config (model=pretrained) and `vocab_size` its embedding rows (default: data.vocab_size)."""
    from recursive.proposers.base import ProposalContext
    from recursive.proposers.prompt import BEST_OUTCOME
    run_dir = Path(cfg.run_dir)
    records = lineage.attempts(run_dir)
    memory = [{"generation": e.generation, "attempt": e.attempt, "status": e.status,
               "plan": _plan_summary(run_dir, e), "gate_reasons": e.gate.get("reasons", []),
               "metrics": _metric_summary(e.metrics), "outcome": outcome_of(e, records)}
              for e in records if e.plan_path]
    feedback: list[str] = []
    if a > 1:
        prev = lineage.find(run_dir, g, a - 1)
        if prev is not None:
            feedback = list(prev.gate.get("reasons", []))
    sources = {name: s.get("description", s["kind"]) for name, s in cfg.data.sources.items()}
    b = cfg.budget
    return ProposalContext(
        generation=g, attempt=a,
        parent={"generation": parent.generation, "params": parent.params, "model": parent_plan["model"],
                "metrics": _metric_summary(parent.metrics)},
        seed_plan=seed.model_dump(mode="json"), parent_plan=parent_plan, sources=sources,
        budget={"param_ratio": b.param_ratio, "min_param_ratio": b.min_param_ratio, "max_params": b.max_params,
                "max_train_tokens": b.max_train_tokens, "min_train_tokens": b.min_train_tokens,
                "vocab_size": vocab_size or cfg.data.vocab_size, "wall_clock_s": b.wall_clock_s,
                "trust_region": None if b.trust_region is None else asdict(b.trust_region),
                "batch_multiple": batch_multiple(cfg.train.num_processes, cfg.train.grad_accum),
                # budget.equal_compute: this generation's parameter count and tokens (None: off)
                "equal_compute": _target(cfg, g, vocab_size or cfg.data.vocab_size, base)},
        memory=memory, feedback=feedback, recipe_api=RECIPE_API, base=base,
        outcome_request=BEST_OUTCOME if cfg.proposer.outcome_conditioning else None,
        memory_order=cfg.proposer.memory_order)


def _target(cfg: RunConfig, g: int, vocab_size: int, base: dict | None) -> dict | None:
    from recursive.validate import equal_compute_target
    t = equal_compute_target(cfg, g, vocab_size, base)
    return None if t is None else t.as_dict()


def _plan_summary(run_dir: Path, e: AttemptRecord) -> dict:
    plan = read_json(run_dir / e.plan_path)
    plan.pop("code", None)  # the memory carries decisions, not whole modules
    return plan


def _metric_summary(m: dict) -> dict:
    return {"heldout_loss": (m.get("heldout_loss") or {}).get("mean"),
            "arithmetic_em": (m.get("arithmetic") or {}).get("exact_match"),
            "valid_plan_rate": (m.get("proposer") or {}).get("valid_plan_rate")}


def _proposer(cfg: RunConfig, model_path: Path):
    from recursive.proposers import make_proposer
    name = cfg.proposer.name
    kwargs = backend_kwargs(asdict(cfg.proposer))
    if name == "self":
        return make_proposer("self", model_path=model_path, **kwargs)
    if name == "openai":
        return make_proposer(name, **kwargs)
    if name == "replay":
        return make_proposer(name, plans=kwargs["plans"])
    return make_proposer(name)


def judge(candidates, parent_code: str, limits: Limits) -> list[dict]:
    """Validate every candidate exactly as `recursive check-plan` does (check_candidate);
    returns one result dict per candidate."""
    results = []
    for c in candidates:
        res = {"index": c.index, "text": c.text, "logprob": c.logprob, "n_tokens": c.n_tokens,
               "seconds": round(c.seconds, 3), "valid": False, "code_valid": False, "problems": []}
        if c.plan is None:
            res["problems"] = [f"<output>: {c.error or 'no plan decoded'}"]
            results.append(res)
            continue
        checked = check_candidate(c.plan, parent_code, limits)
        if checked.code_edit is not None:
            res["code_edit"] = checked.code_edit
        if checked.code_problems:
            res["code_problems"] = checked.code_problems
        res.update(code_origin=checked.code_origin, code_valid=checked.code_valid,
                   problems=[str(p) for p in checked.problems], valid=checked.valid)
        if checked.valid:
            res["plan"] = checked.plan
        results.append(res)
    return results


def control_seed(seed: int) -> int:
    """The seed of an attempt's random control candidates (distinct from the proposer's)."""
    return seed ^ 0x5EED


def win_rate(own: list[dict], controls: list[dict]) -> float | None:
    """The probability that one of the proposer's candidates beats one of the random control
    candidates on screen loss: the share of (own, control) pairs it wins, ties half (0.5:
    no better than chance). An invalid or unscreened candidate scores +inf, so it loses to
    any screened one and ties another such; None when there is no pair."""
    if not own or not controls:
        return None

    def loss(r: dict) -> float:
        v = r.get("screen_loss")
        return float(v) if r["valid"] and v is not None else float("inf")

    pairs = [(loss(a), loss(b)) for a in own for b in controls]
    return sum(1.0 if a < b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)


def select(results: list[dict]) -> dict | None:
    valid = [r for r in results if r["valid"]]
    if any("screen_loss" in r for r in valid):
        screened = [r for r in valid if r.get("screen_loss") is not None]
        return min(screened, key=lambda r: (r["screen_loss"], -r["logprob"], r["index"])) if screened else None
    return max(valid, key=lambda r: (r["logprob"], -r["index"])) if valid else None


def over_wall_clock(plan: Plan, screen_seconds: float | None, screen_steps: int,
                    wall_clock_s: float | None) -> str | None:
    """Why a plan cannot fit budget.wall_clock_s at the throughput its screening miniature
    measured (tokens per second, start-up included, so the estimate errs long), or None."""
    if wall_clock_s is None or not screen_seconds or screen_seconds <= 0:
        return None
    h, context = plan.hparams, plan.model.context
    tps = min(screen_steps, h.steps) * h.batch_size * context / screen_seconds
    need = plan.train_tokens() / tps
    if need <= wall_clock_s:
        return None
    return (f"hparams.steps: at the throughput screening measured ({tps:,.0f} tokens/s) the plan's "
            f"{plan.train_tokens():,} training tokens take about {need:,.0f} s, over budget.wall_clock_s={wall_clock_s:g}")


def run_proposal(cfg, ctx, model_path: Path, limits: Limits, seed: int, attempt: Attempt, screen=None):
    """Propose, validate, optionally screen (`screen(list of (index, Plan)) -> {index: result}`),
    select. Writes the prompt and every candidate into `attempt`. Returns (selected Plan or
    None, summary for proposal.json)."""
    from recursive.proposers.prompt import build_prompt
    cfg = typed(cfg)
    atomic_write_text(attempt.prompt, build_prompt(ctx, cfg.proposer.prompt_chars))
    proposer = _proposer(cfg, model_path)
    k = cfg.proposer.candidates
    results = judge(proposer.propose(ctx, k, seed), ctx.parent_plan["code"], limits)
    controls = []
    if cfg.proposer.control_candidates and screen is not None and proposer.name != "random":
        # K uniform samples of the same schema (the trust region around the parent): screened
        # beside the proposer's own, never selected; they measure the proposer's judgement
        from recursive.proposers.random_search import RandomProposer
        controls = judge(RandomProposer().propose(ctx, k, control_seed(seed)), ctx.parent_plan["code"], limits)
        for r in controls:
            r["index"] += k
            r["control"] = True
    valid = [r for r in results + controls if r["valid"]]
    # a choice to make (2+ valid), or one valid proposal to compare with the controls
    if screen is not None and any(r["valid"] for r in results) and (controls or len(valid) > 1):
        screened = screen([(r["index"], r["plan"]) for r in valid])
        for r in valid:
            res = screened.get(str(r["index"]), {})
            r["screen_loss"] = res.get("loss")
            if res.get("error"):
                r["screen_error"] = res["error"]
            why = over_wall_clock(r["plan"], res.get("seconds"), cfg.proposer.screen_steps, cfg.budget.wall_clock_s)
            if why is not None:  # refused before any of its training is spent
                r["valid"] = False
                r["problems"].append(why)
    best = select(results)
    summary = {"proposer": proposer.name, "seed": seed, "k": k,
               "valid_plan_rate": sum(r["valid"] for r in results) / max(1, len(results)),
               "code_valid_rate": sum(r["code_valid"] for r in results) / max(1, len(results)),
               "selected": None if best is None else best["index"],
               "code_origin": None if best is None else best["code_origin"],
               "candidates": [{k2: v for k2, v in r.items() if k2 != "plan"} for r in results + controls]}
    if controls:
        summary["control"] = {"proposer": "random", "k": len(controls),
                              "valid_plan_rate": sum(r["valid"] for r in controls) / len(controls)}
        summary["win_rate_vs_random"] = win_rate(results, controls)
    if hasattr(proposer, "usage"):  # requests, retries, tokens and cost of this attempt (openai)
        summary["usage"] = proposer.usage
    if getattr(proposer, "fit", None):  # what the self proposer shrank to fit a position limit
        summary["fit"] = proposer.fit
    if best is None:
        reasons = sorted({p for r in results for p in r["problems"]})
        summary["reason"] = f"no valid plan among {len(results)} candidates: " + "; ".join(reasons[:6])
    atomic_write_json(attempt.candidates, summary["candidates"])
    return (None if best is None else best["plan"]), summary


def competence(cfg: RunConfig, ctx, model_path: Path, limits: Limits, seed: int) -> dict:
    """Proposer competence of a trained model: valid-plan rate over K constrained samples."""
    from recursive.proposers import make_proposer
    # whichever backend runs this lineage, competence is the model's own: it must propose next
    p = backend_kwargs(asdict(cfg.proposer)) if cfg.proposer.name == "self" else {}
    proposer = make_proposer("self", model_path=model_path, **p)
    k = cfg.evaluate.proposer_samples
    results = judge(proposer.propose(ctx, k, seed), ctx.parent_plan["code"], limits)
    problems: dict[str, int] = {}
    for r in results:
        for p in r["problems"][:3]:
            key = p if len(p) <= 160 else p[:157] + "..."
            problems[key] = problems.get(key, 0) + 1
    return {"valid_plan_rate": sum(r["valid"] for r in results) / max(1, k),
            "code_valid_rate": sum(r["code_valid"] for r in results) / max(1, k),
            "samples": k,
            "mean_tokens": sum(r["n_tokens"] for r in results) / max(1, k),
            # code_max_chars / max_new_tokens shrunk to fit the family's position limit
            **({"fit": proposer.fit} if proposer.fit else {}),
            # why invalid samples were invalid, most frequent first (the gate's reason is the rate)
            "problems": dict(sorted(problems.items(), key=lambda kv: -kv[1])[:5])}
