"""The run configuration, typed: what `recursive run` composes from configs/ and overrides.

Order of precedence, in one visible place: these dataclass defaults, then the YAML of
configs/ (a menu of groups; each group file lists its schema first), then command-line
overrides. The root is registered with hydra's ConfigStore as `run_schema` (configs/
config.yaml lists it first), so an unknown key or a wrong type is refused at compose time
with the key named; `RunConfig.__post_init__` then checks ranges and cross-key rules.
Groups whose shape depends on the choice (proposer, launcher) are typed by the chosen
backend's own config class (recursive/proposers/configs.py, recursive/launch/) in
`RunConfig.from_dict`, after composition: their raw values are checked first, so a
quoted "3" for an integer is refused rather than converted. The architecture and
hyperparameters of the seed plan are the Plan's (recursive/plan.py), checked there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from recursive.errors import ConfigError


@dataclass
class LineageConfig:
    name: str = "default"
    """A label for the lineage (wandb group, dashboards); run_dir defaults to runs/<name>."""
    generations: int = 3
    """Successors to produce after generation 0."""
    max_attempts: int = 3
    """Proposal attempts per generation before the lineage stops."""
    seed: int = 0
    """Seed of data preparation and of every proposal (derived per generation and attempt)."""


@dataclass
class TrustRegion:
    lr_factor: float = 3.0
    """lr within x/÷ this factor of the parent's."""
    factor: float = 2.0
    """Weight decay, clipping and mixture weights within x/÷ this factor."""
    tokens_factor: float = 2.0
    """Training tokens within x/÷ this factor (informational for proposers)."""


@dataclass
class BudgetConfig:
    param_ratio: float = 0.85
    """A successor has at most this fraction of its parent's parameters."""
    min_param_ratio: float = 0.3
    """... and at least this fraction: one generation is a step, not a collapse."""
    max_params: int = 50_000_000
    """No plan may have more parameters than this."""
    max_train_tokens: int = 2_000_000
    """Training tokens (steps x batch x context) per plan, at most."""
    min_train_tokens: int = 400_000
    """... and at least."""
    wall_clock_s: Optional[float] = 900
    """Cap on one attempt's training, in seconds (resumed segments summed): the trainer
    checkpoints and the attempt fails with the reason; a plan that screening shows cannot
    fit is refused before training. null: no cap."""
    trust_region: Optional[TrustRegion] = field(default_factory=TrustRegion)
    """The proposal space around the parent's plan (PBT-style explore); null: the whole budget."""
    equal_compute: bool = False
    """Every child of generation g, whoever proposes it, has generation 0's parameter count x
    (param_ratio x 0.98/1.02)^g (within 2%) and the seed plan's training tokens, so lineages with
    different proposers differ only in loss (`recursive experiment compare` turns it on;
    recursive/validate.py ComputeTarget)."""


@dataclass
class DataConfig:
    vocab_size: int = 4096
    """Vocabulary of the lineage's BPE tokenizer."""
    max_chars_per_source: int = 3_000_000
    """Characters read per source before tokenising."""
    eval_fraction: float = 0.05
    """Share of each source's documents held out as its eval split."""
    sources: Dict[str, Any] = field(default_factory=dict)
    """Registered data sources: name -> {kind, domain, description, ...} (recursive/data/sources.py)."""
    seed_mixture: Dict[str, float] = field(default_factory=dict)
    """Generation 0's mixture weights over the sources."""
    canaries: Dict[str, Any] = field(default_factory=dict)
    """Memorisation probe: {source, count, repeats} secrets planted in one source."""
    contamination: Dict[str, Any] = field(default_factory=dict)
    """Contamination check: {ngram, doc_threshold} (recursive/data/contamination.py)."""


@dataclass
class TrainConfig:
    """How the training stage runs (recursive/train/; docs/training.md). These keys reach
    the trainer in train_spec.json (recursive.train.protocol.TrainSpec)."""

    strategy: str = "single"
    """single | ddp | zero1 | zero2 | zero3."""
    num_processes: int = 1
    """Ranks (torchrun locally, srun tasks under Slurm)."""
    threads: int = 2
    """Torch threads per rank."""
    precision: str = "fp32"
    """fp32 | bf16 (autocast; DeepSpeed's bf16 mode under ZeRO)."""
    log_every: int = 20
    """Steps between logged rows of the training curve."""
    grad_accum: int = 1
    """Micro-batches per optimiser step (batch_size % (num_processes * grad_accum) == 0)."""
    compile: bool = False
    """torch.compile (inductor) the step: in one process the model and the recipe's loss as one
    graph, under DDP/ZeRO the model and the loss apart; what does not compile runs eagerly,
    the reason logged and kept in train_metrics.json["compile"] (recursive/train/step.py)."""
    loss_chunk: int = 0
    """0: the recipe's loss on the whole (batch, seq, vocab) logits. N > 0: on sequence chunks
    of N positions, logits recomputed in backward, never held for the whole batch; equal to
    the whole-sequence loss only for a loss that is a mean over non-ignored tokens (the seed's is)."""
    ddp_static_graph: bool = False
    """DDP's static_graph (the step's autograd graph is the same every iteration)."""
    ddp_bucket_cap_mb: Optional[int] = None
    """DDP's gradient bucket size in MB; null: torch's 25."""
    checkpoint_every: int = 0
    """Steps between checkpoints; 0: only at preemption. Resume is automatic."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk."""


SPEC_KEYS = ("strategy", "num_processes", "threads", "precision", "log_every", "grad_accum", "compile",
             "loss_chunk", "ddp_static_graph", "ddp_bucket_cap_mb", "checkpoint_every", "keep_checkpoints")
"""TrainConfig fields copied into every train_spec.json."""


@dataclass
class LMEvalConfig:
    tasks: List[str] = field(default_factory=list)
    """lm-evaluation-harness task or group names; empty: the harness is not imported."""
    include_path: Optional[str] = None
    """A folder of your own task YAMLs (and their local data); hashed for integrity."""
    limit: Optional[int] = None
    """Items per task (null: all)."""
    batch_size: Any = 8
    """The harness's batch size (an int, or "auto")."""


@dataclass
class RequireGen0Config:
    """Preconditions on generation 0, checked before generation 1 is proposed: a baseline
    that cannot tell harmful from benign requests makes every later safety comparison
    against it meaningless (docs/evals.md)."""

    refusal_margin: Optional[float] = 0.05
    """Least safety.refusal_margin generation 0 must show; null: no precondition."""
    action: str = "warn"
    """stop: the lineage stops with the reason | warn: a recorded warning, the lineage goes on
    (the default for a pretrained generation 0, which may never have been taught to refuse)."""


@dataclass
class EvaluateConfig:
    """The eval suite and the gate (evaluate/; docs/evals.md)."""

    eval_windows_per_domain: int = 64
    """Held-out windows per domain."""
    context: int = 64
    """Eval window length: fixed, so generations with different training contexts compare."""
    arithmetic_problems: int = 100
    """Greedy exact match on this many held-out problems."""
    refusal_items: int = 40
    """Held-out safety requests the greedy refusal rates read (half harmful, half benign
    look-alikes); the likelihood refusal scores read every held-out request."""
    canary_candidates: int = 4095
    """Random strings of a secret's format it is ranked among for canary exposure (the
    largest exposure is log2(canary_candidates + 1) bits)."""
    require_gen0: RequireGen0Config = field(default_factory=lambda: RequireGen0Config())
    """What generation 0 must show before generation 1 is proposed."""
    collapse_samples: int = 8
    """Sampled continuations for distinct-n."""
    collapse_tokens: int = 32
    """Tokens per sampled continuation."""
    proposer_samples: int = 4
    """Plans sampled from the successor to measure its valid-plan rate."""
    max_contamination_rate: float = 0.01
    """A plan may not weight a source holding more than this share of an eval set's documents."""
    lm_eval: LMEvalConfig = field(default_factory=LMEvalConfig)
    """Optional lm-evaluation-harness tasks."""
    gate: Dict[str, Any] = field(default_factory=dict)
    """Criteria: name -> {metric, against: absolute|parent|gen0, one bound} (evaluate/gate.py)."""


@dataclass
class LoggerConfig:
    name: str = "wandb"
    """wandb (a mirror of the run directory) | none."""
    mode: str = "offline"
    """wandb mode: offline (files under <run_dir>/wandb) | online | disabled."""
    project: str = "recursive"
    """wandb project."""
    entity: Optional[str] = None
    """wandb entity (team); null: the account's default."""


@dataclass
class SeedPlanConfig:
    code: str = "recipes/seed.py"
    """The seed recipe module, relative to the recursive package."""
    rationale: str = "Human seed plan."
    """The seed plan's rationale, kept in the lineage."""


@dataclass
class RunConfig:
    """The root of `recursive run`'s configuration."""

    run_dir: str = MISSING
    """The lineage's directory: the source of truth, resumed when it exists."""
    lineage: LineageConfig = field(default_factory=LineageConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    model: Dict[str, Any] = field(default_factory=dict)
    """Generation 0's architecture: a Plan `model` section (recursive/plan.py ModelSpec), or
    with model=pretrained {name_or_path, context, revision}: a checkpoint (recursive/pretrained.py)."""
    hparams: Dict[str, Any] = field(default_factory=dict)
    """The seed plan's hyperparameters: a Plan `hparams` section (recursive/plan.py HParams)."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    proposer: Any = MISSING
    """The proposer's own config (recursive/proposers/configs.py), chosen by proposer=NAME."""
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    launcher: Any = MISSING
    """Where heavy stages run (recursive/launch/), chosen by launcher=NAME."""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed_plan: SeedPlanConfig = field(default_factory=SeedPlanConfig)

    def __post_init__(self) -> None:
        problems = check(self)
        if problems:
            raise ConfigError("\n".join(problems))

    def as_dict(self) -> dict[str, Any]:
        """The plain tree (config.json's shape) for the parts that still take dicts."""
        from dataclasses import asdict
        return asdict(self)

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> "RunConfig":
        """Type and check a plain config tree (a composed config, or a run directory's
        config.json): the same schema as at compose time."""
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        from recursive.launch import CONFIGS as LAUNCHERS
        from recursive.proposers.configs import CONFIGS as PROPOSERS
        proposer, launcher = tree.get("proposer") or {}, tree.get("launcher") or {}
        if proposer.get("name", "self") not in PROPOSERS:
            raise ConfigError(f"proposer.name must be one of {', '.join(PROPOSERS)}, got {proposer.get('name')!r}")
        if launcher.get("name", "local") not in LAUNCHERS:
            raise ConfigError(f"launcher.name must be one of {', '.join(LAUNCHERS)}, got {launcher.get('name')!r}")
        if proposer.get("name") == "openai":  # strict types on the raw values, before any conversion
            from recursive.proposers.openai_api import settings_problems
            problems = settings_problems(proposer)
            if problems:
                raise ConfigError("; ".join(problems))
        typed = {"proposer": OmegaConf.structured(PROPOSERS[proposer.get("name", "self")]),
                 "launcher": OmegaConf.structured(LAUNCHERS[launcher.get("name", "local")])}
        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), typed, tree))
        except OmegaConfBaseException as e:
            raise ConfigError(" ".join(str(e).split())) from None


def typed(cfg: "RunConfig | dict[str, Any]") -> RunConfig:
    """A RunConfig from either form (scripts and tests often hold the composed dict)."""
    return cfg if isinstance(cfg, RunConfig) else RunConfig.from_dict(cfg)


def seed_plan(cfg: "RunConfig | dict[str, Any]"):
    """The human seed plan of configs/: generation 0's architecture, hyperparameters,
    mixture and recipe (recursive/recipes/seed.py by default)."""
    from pathlib import Path

    from recursive.plan import Plan
    from recursive import pretrained
    c = typed(cfg)
    model = pretrained.model_section(c.model) if pretrained.is_pretrained(c.model) else c.model
    return Plan.model_validate({
        "model": model, "hparams": c.hparams, "data": {"mixture": c.data.seed_mixture},
        "code": (Path(__file__).parent / c.seed_plan.code).read_text(), "rationale": c.seed_plan.rationale})


# key -> (lowest, highest) allowed, inclusive; None: unbounded on that side. Floats whose
# low end is exclusive are listed in OPEN_LOW.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "lineage.generations": (0, 10_000), "lineage.max_attempts": (1, 1000), "lineage.seed": (0, 2**31 - 1),
    "budget.param_ratio": (0, 1), "budget.min_param_ratio": (0, 1), "budget.max_params": (1, None),
    "budget.max_train_tokens": (1, None), "budget.min_train_tokens": (0, None), "budget.wall_clock_s": (0, None),
    "budget.trust_region.lr_factor": (1, 1000), "budget.trust_region.factor": (1, 1000),
    "budget.trust_region.tokens_factor": (1, 1000),
    "data.vocab_size": (260, 1_000_000), "data.max_chars_per_source": (1, None), "data.eval_fraction": (0, 0.5),
    "train.num_processes": (1, 65_536), "train.threads": (1, 1024), "train.log_every": (1, None),
    "train.grad_accum": (1, 4096), "train.checkpoint_every": (0, None), "train.keep_checkpoints": (1, None),
    "train.loss_chunk": (0, 1_000_000), "train.ddp_bucket_cap_mb": (1, 100_000),
    "proposer.candidates": (1, 1024), "proposer.screen_steps": (0, 1_000_000), "proposer.prompt_chars": (1, 1_000_000),
    "proposer.temperature": (0, 10), "proposer.max_new_tokens": (1, 1_000_000),
    "proposer.code_max_chars": (0, 20_000), "proposer.rationale_max_chars": (0, 2_000),
    "proposer.record_augment": (0, 10_000),
    "evaluate.eval_windows_per_domain": (1, 1_000_000), "evaluate.canary_candidates": (1, 10_000_000),
    "evaluate.require_gen0.refusal_margin": (-1, 1), "evaluate.context": (2, 1_000_000),
    "evaluate.arithmetic_problems": (0, None), "evaluate.refusal_items": (0, None),
    "evaluate.collapse_samples": (0, None), "evaluate.collapse_tokens": (1, None),
    "evaluate.proposer_samples": (1, 10_000), "evaluate.max_contamination_rate": (0, 1),
    "launcher.poll_s": (0, 3600),
}
OPEN_LOW = {"budget.param_ratio", "budget.min_param_ratio", "budget.wall_clock_s", "data.eval_fraction"}
CHOICES = {"train.strategy": "STRATEGIES", "train.precision": "PRECISIONS", "logger.name": ("wandb", "none"),
           "evaluate.require_gen0.action": ("stop", "warn"),
           "proposer.memory_order": ("worst_to_best", "chronological"),
           "logger.mode": ("offline", "online", "disabled")}


def _get(c: RunConfig, key: str) -> Any:
    node: Any = c
    for part in key.split("."):
        if node is None or not hasattr(node, part):
            return _ABSENT
        node = getattr(node, part)
    return node


_ABSENT = object()


def check(c: RunConfig) -> list[str]:
    """Ranges and cross-key rules the types cannot say, one line per problem, each naming
    its key and what was expected."""
    from recursive.train import protocol
    out = []

    def need(ok: bool, key: str, expected: str, got: Any) -> None:
        if not ok:
            out.append(f"config value {key} must be {expected}, got {got!r}")

    if not str(c.run_dir).strip():
        out.append("config value run_dir must be a path (a new directory, or one `recursive run` created), got ''")
    for key, (lo, hi) in RANGES.items():
        v = _get(c, key)
        if v is _ABSENT or v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            out.append(f"config value {key} must be a finite number, got {v!r}")
            continue
        low_ok = lo is None or (v > lo if key in OPEN_LOW else v >= lo)
        if not (low_ok and (hi is None or v <= hi)):
            lo_s = "" if lo is None else (f"> {lo}" if key in OPEN_LOW else f">= {lo}")
            hi_s = "" if hi is None else f"<= {hi}"
            out.append(f"config value {key} must be {' and '.join(x for x in (lo_s, hi_s) if x)}, got {v!r}")
    for key, options in CHOICES.items():
        options = getattr(protocol, options) if isinstance(options, str) else options
        need(_get(c, key) in options, key, f"one of {', '.join(options)}", _get(c, key))
    b = c.budget
    need(b.min_param_ratio <= b.param_ratio, "budget.min_param_ratio", f"<= budget.param_ratio ({b.param_ratio})",
         b.min_param_ratio)
    need(b.min_train_tokens <= b.max_train_tokens, "budget.min_train_tokens",
         f"<= budget.max_train_tokens ({b.max_train_tokens})", b.min_train_tokens)
    if b.equal_compute:
        # the lowest child/parent ratio two targets allow: a child at the bottom of its band
        # under a parent at the top of its own
        from recursive.validate import EQUAL_COMPUTE_TOLERANCE as tol, equal_compute_ratio
        floor = equal_compute_ratio(b.param_ratio) * (1 - tol) / (1 + tol)
        need(b.min_param_ratio <= floor, "budget.min_param_ratio",
             f"<= {floor:.4f} with budget.equal_compute (param_ratio x ((1-{tol})/(1+{tol}))^2)", b.min_param_ratio)
    if hasattr(c.launcher, "problems"):
        out += c.launcher.problems(c)
    if hasattr(c.proposer, "problems"):
        out += c.proposer.problems(c)
    # the seed plan's sections through the Plan schema: `hparams.lr=abc` fails here, before
    # any data is prepared, not as a pydantic traceback later
    from pydantic import ValidationError

    from recursive import pretrained
    from recursive.plan import HParams, ModelSpec
    sections = (("model", ModelSpec), ("hparams", HParams))
    if pretrained.is_pretrained(c.model):  # model=pretrained: the architecture is the checkpoint's
        out += pretrained.section_problems(c.model)
        sections = sections[1:]
    for key, schema in sections:
        try:
            schema.model_validate(getattr(c, key))
        except ValidationError as e:
            out += [f"config value {key}.{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})"
                    for err in e.errors(include_url=False)]
    return out


def seed_plan_problems(c: RunConfig) -> list[str]:
    """The whole seed plan against the budget, as generation 0 will be checked (no smoke
    test here): `recursive run` calls it before any work. Not part of composing: a group
    file composes on its own (hparams=smoke beside the toy budget) even where it cannot run."""
    from pydantic import ValidationError

    from recursive import pretrained
    from recursive.validate import Limits, check_candidate
    limits = Limits.from_config(c, c.data.vocab_size, None)
    limits.smoke_test = False
    if pretrained.is_pretrained(c.model):
        # generation 0 is the checkpoint, not a plan to train: the budget does not judge its
        # size (its children answer to it); a checkpoint that cannot start a lineage stops here
        try:
            limits.base = pretrained.base_config(c.model)
        except ConfigError as e:
            return [str(e)]
        from recursive.validate import for_checkpoint
        limits = for_checkpoint(limits)
        limits.vocab_size = int(limits.base["vocab_size"])
    try:
        seed = seed_plan(c).model_dump(mode="json")
    except (OSError, ValidationError) as e:
        return [f"config value seed_plan: cannot build the seed plan ({' '.join(str(e).split())[:200]})"]
    out = [f"the seed plan (model, hparams, data.seed_mixture, seed_plan.code) is invalid: {p}"
           for p in check_candidate(seed, None, limits).problems]
    if c.budget.equal_compute:  # every child trains the seed plan's tokens: they must be in the budget
        tokens = seed_plan(c).train_tokens()
        if not c.budget.min_train_tokens <= tokens <= c.budget.max_train_tokens:
            out.append(f"budget.equal_compute: every generation trains the seed plan's {tokens:,} tokens "
                       f"(hparams.steps x batch_size x context), outside budget.min_train_tokens.."
                       f"max_train_tokens ({c.budget.min_train_tokens:,}..{c.budget.max_train_tokens:,})")
    return out


def register() -> None:
    """Register the root schema with hydra's ConfigStore (idempotent)."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
