"""The PROPOSE and VALIDATE stages: K candidates from the proposer, each validated with
exactly the checks of `recursive check-plan`, one selected by a documented rule.

Selection rule: when more than one candidate is valid and `proposer.screen_steps` > 0,
each valid candidate is screened: a miniature of its plan (screen_steps steps, warmup
scaled alike) is trained and scored by cross-entropy on fixed windows of the *training*
shards (never the eval sets); the lowest screen loss wins. Without screening, the
candidate the proposer itself found most likely wins (highest summed log-probability).
Ties go to the lowest index. A short-horizon proxy favours plans that learn fast (high
lr, short warmup); the gate still judges the fully trained child on the eval sets.

Code: a candidate's `code` that fails the policy (a toy model cannot yet write a module)
is replaced by the parent's recipe, and the attempt's `code_origin` says so.
"""

from __future__ import annotations

from pathlib import Path

from recursive import lineage
from recursive.io import atomic_write_json, atomic_write_text, read_json
from recursive.plan import Plan
from recursive.recipe import apply_edits, check_policy, is_edit, smoke_test
from recursive.validate import Limits, batch_multiple, validate_plan

RECIPE_API = ("The recipe module defines lr_lambda(step, total_steps, warmup_steps) -> lr multiplier in [0, 10] "
              "and loss(logits, labels, teacher_logits, hp) -> scalar tensor; it may import only math, torch "
              "and torch.nn.functional.")


def make_context(cfg: dict, run_dir: Path, g: int, a: int, parent: dict, parent_dir: Path, seed: Plan):
    """What the proposer sees for generation g, attempt a (see recursive.proposers.base)."""
    from recursive.proposers.base import ProposalContext
    memory = [{"generation": e["generation"], "attempt": e["attempt"], "status": e["status"],
               "plan": _plan_summary(run_dir, e), "gate_reasons": e["gate"].get("reasons", []),
               "metrics": _metric_summary(e.get("metrics") or {})}
              for e in lineage.attempts(run_dir) if e.get("plan_path")]
    feedback: list[str] = []
    if a > 1:
        prev = lineage.find(run_dir, g, a - 1)
        if prev is not None:
            feedback = list(prev["gate"].get("reasons", []))
    parent_plan = read_json(parent_dir / "plan.json")
    sources = {name: s.get("description", s["kind"]) for name, s in cfg["data"]["sources"].items()}
    b = cfg["budget"]
    return ProposalContext(
        generation=g, attempt=a,
        parent={"generation": parent["generation"], "params": parent["params"], "model": parent_plan["model"],
                "metrics": _metric_summary(parent.get("metrics") or {})},
        seed_plan=seed.model_dump(mode="json"), parent_plan=parent_plan, sources=sources,
        budget={"param_ratio": b["param_ratio"], "min_param_ratio": b["min_param_ratio"], "max_params": b["max_params"],
                "max_train_tokens": b["max_train_tokens"], "min_train_tokens": b["min_train_tokens"], "vocab_size": cfg["data"]["vocab_size"],
                "wall_clock_s": b.get("wall_clock_s"), "trust_region": b.get("trust_region"),
                "batch_multiple": batch_multiple(cfg["train"])},
        memory=memory, feedback=feedback, recipe_api=RECIPE_API)


def _plan_summary(run_dir: Path, e: dict) -> dict:
    plan = read_json(run_dir / e["plan_path"])
    plan.pop("code", None)  # the memory carries decisions, not whole modules
    return plan


def _metric_summary(m: dict) -> dict:
    return {"heldout_loss": (m.get("heldout_loss") or {}).get("mean"),
            "arithmetic_em": (m.get("arithmetic") or {}).get("exact_match"),
            "valid_plan_rate": (m.get("proposer") or {}).get("valid_plan_rate")}


LOOP_KEYS = ("name", "candidates", "screen_steps")  # proposer config read by the loop, not the backend


def _backend_kwargs(cfg: dict) -> dict:
    return {k: v for k, v in cfg["proposer"].items() if k not in LOOP_KEYS}


def _proposer(cfg: dict, model_path: Path):
    from recursive.proposers import make_proposer
    name = cfg["proposer"]["name"]
    if name == "self":
        return make_proposer("self", model_path=model_path, **_backend_kwargs(cfg))
    if name == "openai":
        return make_proposer("openai", **_backend_kwargs(cfg))
    return make_proposer(name)


def judge(candidates, parent_code: str, limits: Limits) -> list[dict]:
    """Validate every candidate; returns one result dict per candidate."""
    results = []
    for c in candidates:
        res = {"index": c.index, "text": c.text, "logprob": c.logprob, "n_tokens": c.n_tokens,
               "seconds": round(c.seconds, 3), "valid": False, "code_valid": False, "problems": []}
        if c.plan is None:
            res["problems"] = [f"<output>: {c.error or 'no plan decoded'}"]
            results.append(res)
            continue
        proposed = dict(c.plan)
        code = proposed.get("code")
        edited = isinstance(code, str) and is_edit(code)
        if edited:
            res["code_edit"] = code
            code, edit_problems = apply_edits(parent_code, code)
            proposed["code"] = code if code is not None else parent_code
        if edited and code is None:
            res["code_problems"], origin = edit_problems, "inherited"
        elif isinstance(code, str) and code == parent_code:
            origin = "inherited"
            res["code_valid"] = True
        else:
            issues = [str(i) for i in check_policy(code)] if isinstance(code, str) else ["code is not a string"]
            if not issues and limits.smoke_test:
                # the same cache validate_plan uses: each distinct recipe is smoke-tested once
                if code not in limits._smoke_cache:
                    limits._smoke_cache[code] = smoke_test(code)
                issues = list(limits._smoke_cache[code])
            if issues:
                res["code_problems"] = issues[:5]
                proposed["code"], origin = parent_code, "inherited"
            else:
                origin, res["code_valid"] = ("edited" if edited else "proposed"), True
        res["code_origin"] = origin
        plan, problems = validate_plan(proposed, limits)
        res["problems"] = [str(p) for p in problems]
        res["valid"] = plan is not None and not problems
        if res["valid"]:
            res["plan"] = plan
        results.append(res)
    return results


def select(results: list[dict]) -> dict | None:
    valid = [r for r in results if r["valid"]]
    if any("screen_loss" in r for r in valid):
        screened = [r for r in valid if r.get("screen_loss") is not None]
        return min(screened, key=lambda r: (r["screen_loss"], -r["logprob"], r["index"])) if screened else None
    return max(valid, key=lambda r: (r["logprob"], -r["index"])) if valid else None


def run_proposal(cfg: dict, ctx, model_path: Path, limits: Limits, seed: int, out_dir: Path, screen=None):
    """Propose, validate, optionally screen (`screen(list of (index, Plan)) -> {index: result}`),
    select. Returns (selected Plan or None, summary for proposal.json)."""
    from recursive.proposers.prompt import build_prompt
    out = out_dir / "proposal"
    atomic_write_text(out / "prompt.txt", build_prompt(ctx, int(cfg["proposer"].get("prompt_chars", 1200))))
    proposer = _proposer(cfg, model_path)
    k = int(cfg["proposer"].get("candidates", 1))
    results = judge(proposer.propose(ctx, k, seed), ctx.parent_plan["code"], limits)
    valid = [r for r in results if r["valid"]]
    if screen is not None and len(valid) > 1:
        screened = screen([(r["index"], r["plan"]) for r in valid])
        for r in valid:
            res = screened.get(str(r["index"]), {})
            r["screen_loss"] = res.get("loss")
            if res.get("error"):
                r["screen_error"] = res["error"]
    best = select(results)
    summary = {"proposer": proposer.name, "seed": seed, "k": k,
               "valid_plan_rate": sum(r["valid"] for r in results) / max(1, len(results)),
               "code_valid_rate": sum(r["code_valid"] for r in results) / max(1, len(results)),
               "selected": None if best is None else best["index"],
               "code_origin": None if best is None else best["code_origin"],
               "candidates": [{k2: v for k2, v in r.items() if k2 != "plan"} for r in results]}
    if hasattr(proposer, "usage"):  # requests, retries, tokens and cost of this attempt (openai)
        summary["usage"] = proposer.usage
    if best is None:
        reasons = sorted({p for r in results for p in r["problems"]})
        summary["reason"] = f"no valid plan among {len(results)} candidates: " + "; ".join(reasons[:6])
    atomic_write_json(out / "candidates.json", summary["candidates"])
    return (None if best is None else best["plan"]), summary


def competence(cfg: dict, ctx, model_path: Path, limits: Limits, seed: int) -> dict:
    """Proposer competence of a trained model: valid-plan rate over K constrained samples."""
    from recursive.proposers import make_proposer
    # whichever backend runs this lineage, competence is the model's own: it must propose next
    p = _backend_kwargs(cfg) if cfg["proposer"]["name"] == "self" else {}
    proposer = make_proposer("self", model_path=model_path, **p)
    k = int(cfg["evaluate"]["proposer_samples"])
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
            # why invalid samples were invalid, most frequent first (the gate's reason is the rate)
            "problems": dict(sorted(problems.items(), key=lambda kv: -kv[1])[:5])}
