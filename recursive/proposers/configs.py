"""Each proposer's `proposer` config group, typed (torch-free, so composing a config stays quick).

`ProposerConfig` holds what the proposal stage reads for every backend (recursive/propose.py);
each backend's config adds its own keys, and `backend_kwargs` hands exactly those to it.
`RunConfig.from_dict` types the composed `proposer` group with the chosen backend's class,
so a key that backend does not have, or a value of the wrong type, is refused before
anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, List, Optional


@dataclass
class ProposerConfig:
    name: str = "self"
    """Who writes each successor's plan: self | random | fixed | replay | openai."""
    candidates: int = 6
    """K plans proposed per attempt; the valid ones are screened and the best is trained."""
    screen_steps: int = 50
    """> 0: train a miniature of this many steps of each valid candidate and keep the best."""
    prompt_chars: int = 1200
    """Length bound of the prompt the proposer sees (recursive/proposers/prompt.py)."""
    control_candidates: bool = False
    """With screening: also draw K random plans from the same schema and screen them beside
    the proposer's K (never selected), recording proposer.win_rate_vs_random, the chance
    that a proposed plan beats a random one (0.5: no better). Doubles the screening cost."""
    outcome_conditioning: bool = True
    """Outcome before plan: the research record writes each attempt's outcome (gate verdict,
    held-out gain over the parent in bins) before its plan, and the prompt ends asking for
    the best bin ("OUTCOME: promoted, gain >=10%"). false: plan then outcome, no request."""
    record_screened: bool = True
    """The research record also holds every screened candidate (control ones included)
    with its screen loss and rank, not only the selected plans."""
    record_augment: int = 8
    """BONET-style trajectories added to the record: each a few record plans of one kind
    re-sampled and sorted worst to best by outcome. 0: none."""
    memory_order: str = "worst_to_best"
    """Order of the prompt's memory lines: worst_to_best (OPRO, with scores) | chronological."""


@dataclass
class SelfConfig(ProposerConfig):
    """proposer=self: the parent model decodes under the plan schema (self_model.py)."""

    temperature: float = 0.7
    """Sampling temperature; below 1 a young proposer imitates the record more than it explores."""
    max_new_tokens: int = 2000
    """Tokens decoded per candidate (a whole recipe module is most of them)."""
    code_max_chars: int = 1300
    """Length bound of the plan's code: the recipe grammar offers a whole module (at most
    grammar.module_max_chars(), 1240) and an edit of the parent's recipe where they fit."""
    code_grammar: bool = True
    """Decode `code` under the recipe grammar (recursive/proposers/grammar.py), so it always
    passes the policy; false: a short string, which the loop replaces by the parent's recipe."""
    rationale_max_chars: int = 48
    """Schema bound of the plan's rationale string."""


@dataclass
class RandomConfig(ProposerConfig):
    """proposer=random: uniform samples over the space the self proposer decodes in."""

    name: str = "random"


@dataclass
class FixedConfig(ProposerConfig):
    """proposer=fixed: the human seed recipe each generation, architecture shrunk to the budget."""

    name: str = "fixed"
    candidates: int = 1
    screen_steps: int = 0


@dataclass
class ReplayConfig(ProposerConfig):
    """proposer=replay: the given plan files, validated like any proposal (replay.py)."""

    name: str = "replay"
    candidates: int = 1
    screen_steps: int = 0
    plans: List[Any] = field(default_factory=list)
    """One plan file per generation (entry g-1 for generation g), or a list of files per
    attempt of that generation; paths relative to the working directory."""

    def problems(self, c: Any = None) -> list[str]:
        from .replay import problems
        return problems(self.plans)


@dataclass
class OpenAIConfig(ProposerConfig):
    """proposer=openai: any OpenAI-compatible chat-completions server (openai_api.py)."""

    name: str = "openai"
    base_url: str = "http://localhost:8000/v1"
    """API root; requests go to {base_url}/chat/completions."""
    model: Optional[str] = None
    """Served model name; null: the only one GET {base_url}/models lists."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the key; unset or empty: no Authorization header."""
    timeout_s: float = 120.0
    """Bound of one whole request: connect, headers and body, redirect hops included."""
    max_retries: int = 3
    """Retries of a request after 429, 5xx, a timeout or a connection error."""
    backoff_s: float = 1.0
    """First retry delay, doubled each retry; a Retry-After header overrides it."""
    max_backoff_s: float = 60.0
    """Cap of any delay, Retry-After included."""
    temperature: float = 0.7
    """Sampling temperature."""
    max_tokens: int = 900
    """Completion tokens per candidate; a reply cut there is "truncated"."""
    structured_output: str = "json_schema"
    """json_schema (the server decodes under the plan schema) | json_object | none."""
    link_context: bool = True
    """Root anyOf per context in the schema; false for APIs that refuse one (OpenAI's)."""
    logprobs: bool = False
    """Ask for token log-probs (selection uses them when nothing is screened)."""
    concurrency: int = 4
    """Requests in flight at once (a vLLM server batches them)."""
    price_per_1k_prompt: float = 0.0
    """USD per 1000 prompt tokens, for proposal.json usage.cost_usd."""
    price_per_1k_completion: float = 0.0
    """USD per 1000 completion tokens."""
    code_max_chars: int = 64
    """Schema bound of the plan's code string."""
    rationale_max_chars: int = 48
    """Schema bound of the plan's rationale string."""
    extra_body: Optional[Any] = None
    """A mapping merged into every request body, e.g. {top_k: 20} (vLLM)."""
    check_endpoint: bool = True
    """`recursive run` lists the endpoint's models before generation 0 trains and stops in one
    line if it cannot; false for an endpoint that starts later."""


CONFIGS: dict[str, type[ProposerConfig]] = {"self": SelfConfig, "random": RandomConfig, "fixed": FixedConfig,
                                            "replay": ReplayConfig, "openai": OpenAIConfig}
STAGE_KEYS = frozenset(f.name for f in fields(ProposerConfig)) - {"prompt_chars"}
"""Keys the proposal stage reads and no backend takes (prompt_chars is both)."""


def backend_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the backend named by cfg["name"]: its own config keys."""
    own = {f.name for f in fields(CONFIGS[cfg["name"]])} - STAGE_KEYS
    return {k: v for k, v in cfg.items() if k in own}
