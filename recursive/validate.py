"""Plan validation: the one gate a proposed plan passes before any compute is spent.

`check_candidate` is what both the loop (every proposed candidate) and `recursive
check-plan` call, so the two can never disagree: it applies a search/replace edit of the
parent's recipe, falls back to the parent's recipe when the plan's code fails the policy
(`code_origin: inherited`, as the loop trains it), then runs `validate_plan`. It never
raises on bad input: every problem comes back as a `Problem` naming the field and what
was expected.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from recursive.plan import Plan, count_params
from recursive.recipe import apply_edits, check_policy, is_edit, smoke_test


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


EQUAL_COMPUTE_TOLERANCE = 0.02
"""budget.equal_compute: a child's parameter count may differ from its generation's target
by at most this share (the count moves in steps of 3 x hidden x layers with the FFN width)."""


@dataclass(frozen=True)
class ComputeTarget:
    """What budget.equal_compute fixes for every child of generation `generation`, whichever
    proposer writes it: its parameter count (within `lo`..`hi`) and its training tokens. Set by
    the budget and generation 0 alone, never by the lineage's own parent, so the children of
    a generation in lineages with different proposers differ only in how they spend it."""

    generation: int
    params: int        # gen0_params * ratio ** generation, rounded
    lo: int            # params * (1 - tolerance), rounded up
    hi: int            # params * (1 + tolerance), rounded down
    tokens: int        # the seed plan's training tokens, every generation
    gen0_params: int
    ratio: float       # per-generation factor (equal_compute_ratio)
    tolerance: float = EQUAL_COMPUTE_TOLERANCE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def equal_compute_ratio(param_ratio: float, tolerance: float = EQUAL_COMPUTE_TOLERANCE) -> float:
    """The per-generation factor of equal compute: param_ratio x (1 - tol) / (1 + tol). A
    child at the top of its band (1 + tol) under a parent at the bottom of its own (1 - tol)
    is then still within budget.param_ratio of that parent, so a target can never break the
    parent-relative bounds, whatever the parent's size inside its band."""
    return float(param_ratio) * (1 - tolerance) / (1 + tolerance)


def compute_target(gen0_params: int, gen0_tokens: int, generation: int, param_ratio: float,
                   tolerance: float = EQUAL_COMPUTE_TOLERANCE) -> ComputeTarget:
    ratio = equal_compute_ratio(param_ratio, tolerance)
    target = round(gen0_params * ratio ** generation)
    return ComputeTarget(generation=int(generation), params=target, lo=math.ceil(target * (1 - tolerance)),
                         hi=math.floor(target * (1 + tolerance)), tokens=int(gen0_tokens),
                         gen0_params=int(gen0_params), ratio=ratio, tolerance=tolerance)


def equal_compute_target(cfg, generation: int | None, vocab_size: int, base: dict | None = None) -> ComputeTarget | None:
    """The target of `generation`'s children under budget.equal_compute (None when it is off,
    or for generation 0, which is the seed plan): generation 0's parameter count (the seed
    plan's model in the lineage's family) and the seed plan's training tokens."""
    from recursive.run_config import seed_plan, typed
    c = typed(cfg)
    if not c.budget.equal_compute or not generation:
        return None
    seed = seed_plan(c)
    return compute_target(count_params(seed.model, vocab_size, base), seed.train_tokens(), generation,
                          c.budget.param_ratio)


@dataclass
class Limits:
    """What a plan is checked against: the lineage's budget and its parent."""

    sources: tuple[str, ...]          # registered data source names
    vocab_size: int
    parent_params: int | None         # None for the seed plan (no parent)
    param_ratio: float                # child params <= param_ratio * parent params
    max_params: int
    max_train_tokens: int
    min_param_ratio: float = 0.0     # child params >= min_param_ratio * parent params
    min_train_tokens: int = 0
    min_mixture_sources: int = 1
    batch_multiple: int = 1           # train.num_processes x train.grad_accum: equal micro-batches per rank
    # source -> (eval set, share of its documents found in the source's training tokens)
    contamination: dict[str, tuple[str, float]] = field(default_factory=dict)
    max_contamination_rate: float = 1.0
    smoke_test: bool = True           # run the recipe in a limited subprocess
    base: dict | None = None          # the lineage's family (generation 0's checkpoint config); None: built-in Llama
    parent_model: dict | None = None  # the parent's plan `model` section (family-fixed fields, prune)
    target: ComputeTarget | None = None  # budget.equal_compute: the generation's parameter count and tokens
    _smoke_cache: dict = field(default_factory=dict, repr=False)


    @classmethod
    def from_config(cls, cfg, vocab_size: int, parent_params: int | None, manifest: dict | None = None,
                    base: dict | None = None, parent_model: dict | None = None,
                    generation: int | None = None) -> "Limits":
        """The budget of a run config (RunConfig or its dict) for a child of a parent with
        `parent_params` (None: the seed plan); with a data manifest, also the measured
        contamination of every source (a plan may not put weight on a contaminated one).
        With budget.equal_compute, `generation` (the child's) sets the compute target."""
        from recursive.data.contamination import max_rate
        from recursive.run_config import typed
        c = typed(cfg)
        b = c.budget
        target = None
        if b.equal_compute and parent_params is not None:
            if generation is None:
                raise ValueError("budget.equal_compute: the limits of a child need its generation")
            target = equal_compute_target(c, generation, vocab_size, base)
        contamination = {name: max_rate(row) for name, row in (manifest or {}).get("contamination", {}).items()}
        return cls(sources=tuple(c.data.sources), vocab_size=vocab_size, parent_params=parent_params,
                   param_ratio=b.param_ratio, max_params=b.max_params, max_train_tokens=b.max_train_tokens,
                   min_param_ratio=b.min_param_ratio, min_train_tokens=b.min_train_tokens,
                   contamination=contamination, max_contamination_rate=c.evaluate.max_contamination_rate,
                   batch_multiple=batch_multiple(c.train.num_processes, c.train.grad_accum),
                   base=base, parent_model=parent_model, target=target)


def for_checkpoint(limits: Limits) -> Limits:
    """Generation 0 from a checkpoint (model=pretrained): its size and its seed
    hyperparameters' tokens are not the budget's to judge (its children answer to it)."""
    from dataclasses import replace
    return replace(limits, max_params=2**62, max_train_tokens=2**62, min_train_tokens=0)


def batch_multiple(num_processes: int, grad_accum: int) -> int:
    """What every batch size must be a multiple of: ranks x gradient-accumulation steps."""
    return max(1, int(num_processes) * int(grad_accum))


def parse_plan(data: Any) -> tuple[Plan | None, list[Problem]]:
    """Schema and bounds. `data` is raw text/bytes (a file's content) or a decoded object."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, [Problem("<file>", f"not UTF-8 text ({e.reason} at byte {e.start})")]
    if isinstance(data, str):
        try:
            data = json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
        except _Duplicate as e:
            return None, [Problem("<file>", str(e))]
        except (json.JSONDecodeError, ValueError, RecursionError) as e:
            return None, [Problem("<file>", f"not valid JSON: {e}")]
    if not isinstance(data, dict):
        return None, [Problem("<root>", f"expected a JSON object, got {type(data).__name__}")]
    try:
        return Plan.model_validate(data), []
    except ValidationError as e:
        # json.dumps escapes control characters: a key with a newline cannot forge a line
        return None, [Problem(".".join(json.dumps(str(p))[1:-1] for p in err["loc"]) or "<root>",
                              f"{err['msg']} (got {_short(err.get('input'))})")
                      for err in e.errors(include_url=False)]
    except RecursionError:
        return None, [Problem("<root>", "structure nested too deeply")]


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    """json object hook: a key given twice is refused (json would silently keep the last)."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _Duplicate(f"duplicate key {_name(k)} in a JSON object (JSON keeps only the last; say it once)")
        out[k] = v
    return out


def _name(key: Any) -> str:
    """A key as quoted in a message: control characters escaped, so a key holding a newline
    cannot forge a line of output."""
    return json.dumps(str(key))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_semantics(plan: Plan, limits: Limits) -> list[Problem]:
    """Rules across fields and against the lineage: architecture, budget, sources, code."""
    out: list[Problem] = []
    m, h = plan.model, plan.hparams
    if m.num_kv_heads > m.num_heads or m.num_heads % m.num_kv_heads:
        out.append(Problem("model.num_kv_heads", f"must divide num_heads={m.num_heads}, got {m.num_kv_heads}"))
    from recursive.train.families import family_problems
    out.extend(Problem(f, msg) for f, msg in family_problems(limits.base, m.model_dump(mode="json"), limits.parent_model))
    params = count_params(m, limits.vocab_size, limits.base)
    if params > limits.max_params:
        out.append(Problem("model", f"{params:,} parameters exceeds the budget's max_params {limits.max_params:,}"))
    if limits.parent_params is not None and params > limits.param_ratio * limits.parent_params:
        out.append(Problem("model", f"{params:,} parameters; a successor must have at most "
                                    f"{limits.param_ratio:g} x parent ({limits.parent_params:,}) = "
                                    f"{int(limits.param_ratio * limits.parent_params):,}"))
    if limits.parent_params is not None and params < limits.min_param_ratio * limits.parent_params:
        out.append(Problem("model", f"{params:,} parameters; a successor must keep at least "
                                    f"{limits.min_param_ratio:g} x parent ({limits.parent_params:,}) = "
                                    f"{int(limits.min_param_ratio * limits.parent_params):,}"))
    tokens = plan.train_tokens()
    t = limits.target
    if t is not None and not t.lo <= params <= t.hi:
        out.append(Problem("model", f"{params:,} parameters; budget.equal_compute fixes generation {t.generation} "
                                    f"at {t.params:,} (generation 0's {t.gen0_params:,} x {t.ratio:.4f}^{t.generation}) "
                                    f"within {t.tolerance:.0%}: {t.lo:,} to {t.hi:,}"))
    if t is not None and tokens != t.tokens:
        out.append(Problem("hparams.steps", f"steps*batch_size*context = {tokens:,} tokens; budget.equal_compute fixes "
                                            f"every generation's training tokens at the seed plan's {t.tokens:,}"))
    if tokens < limits.min_train_tokens:
        out.append(Problem("hparams.steps", f"steps*batch_size*context = {tokens:,} tokens is below the "
                                            f"budget's min_train_tokens {limits.min_train_tokens:,}"))
    if tokens > limits.max_train_tokens:
        out.append(Problem("hparams.steps", f"steps*batch_size*context = {tokens:,} tokens exceeds the "
                                            f"budget's max_train_tokens {limits.max_train_tokens:,}"))
    if h.batch_size % limits.batch_multiple:
        out.append(Problem("hparams.batch_size", f"must be a multiple of {limits.batch_multiple} (train.num_processes "
                                                 f"x train.grad_accum: each rank takes an equal share), got {h.batch_size}"))
    if h.warmup_steps > h.steps:
        out.append(Problem("hparams.warmup_steps", f"must be <= steps ({h.steps}), got {h.warmup_steps}"))
    for name, w in plan.data.mixture.items():
        if name not in limits.sources:
            out.append(Problem(f"data.mixture.{_name(name)[1:-1]}", f"not a registered data source (registered: {', '.join(limits.sources)})"))
        if not (math.isfinite(w) and 0.0 <= w <= 1.0):
            out.append(Problem(f"data.mixture.{_name(name)[1:-1]}", f"weight must be a number in [0, 1], got {w!r}"))
    for name, w in sorted(plan.data.mixture.items()):
        ev, rate = limits.contamination.get(name, (None, 0.0))
        if w > 0 and rate > limits.max_contamination_rate:
            out.append(Problem(f"data.mixture.{_name(name)[1:-1]}", f"source is contaminated: {rate:.1%} of eval set "
                                                       f"{ev!r} documents occur in its training data (max "
                                                       f"{limits.max_contamination_rate:.1%}); give it weight 0"))
    positive = [k for k, w in plan.data.mixture.items() if w > 0 and k in limits.sources]
    if len(positive) < limits.min_mixture_sources:
        out.append(Problem("data.mixture", f"needs at least {limits.min_mixture_sources} registered source(s) "
                                           f"with weight > 0, got {len(positive)}"))
    out.extend(Problem("code", p) for p in _recipe_problems(plan.code, limits))
    return out


def validate_plan(data: Any, limits: Limits) -> tuple[Plan | None, list[Problem]]:
    """Everything a plan must pass. Returns (plan, []) when valid, else (plan|None, problems)."""
    plan, problems = parse_plan(data)
    if plan is None:
        return None, problems
    return plan, check_semantics(plan, limits)


def _recipe_problems(code: str, limits: Limits) -> list[str]:
    issues = [str(i) for i in check_policy(code)]
    if not issues and limits.smoke_test:
        # the same code is proposed again and again (inherited recipes): test it once
        if code not in limits._smoke_cache:
            limits._smoke_cache[code] = smoke_test(code)
        issues = list(limits._smoke_cache[code])
    return issues


@dataclass
class Checked:
    """A candidate plan after the loop's validation."""

    plan: Plan | None                 # the plan the loop would train (edits applied, code maybe inherited)
    problems: list[Problem]           # empty: valid
    code_origin: str | None = None    # proposed | edited | inherited (None: no plan decoded)
    code_valid: bool = False          # the plan's own code (or edit) passed
    code_problems: list[str] = field(default_factory=list)  # why the plan's code was replaced
    code_edit: str | None = None      # the search/replace edit as proposed

    @property
    def valid(self) -> bool:
        return self.plan is not None and not self.problems


def check_candidate(data: Any, parent_code: str | None, limits: Limits) -> Checked:
    """Everything the loop does to a proposed plan before training it. `parent_code` is the
    parent's recipe (None for a seed plan: there is nothing to edit or inherit, so the
    plan's own code must pass)."""
    if isinstance(data, (bytes, bytearray, str)) or not isinstance(data, dict):
        plan, problems = parse_plan(data)
        if plan is None:
            return Checked(None, problems)
        data = plan.model_dump(mode="json")
    proposed = dict(data)
    code = proposed.get("code")
    out = Checked(None, [])
    edited = isinstance(code, str) and is_edit(code)
    if edited and parent_code is not None:
        out.code_edit = code
        code, edit_problems = apply_edits(parent_code, code)
        proposed["code"] = code if code is not None else parent_code
        if code is None:
            out.code_problems, out.code_origin = edit_problems, "inherited"
    if out.code_origin is None:
        if parent_code is not None and isinstance(code, str) and code == parent_code:
            out.code_origin, out.code_valid = "inherited", True
        else:
            issues = _recipe_problems(code, limits) if isinstance(code, str) else ["code is not a string"]
            if issues and parent_code is not None:
                out.code_problems = issues[:5]
                proposed["code"], out.code_origin = parent_code, "inherited"
            elif not issues:
                out.code_origin, out.code_valid = ("edited" if edited else "proposed"), True
    out.plan, out.problems = validate_plan(proposed, limits)
    return out
