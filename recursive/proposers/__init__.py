"""Proposers: who writes the next generation's plan.

    self    the parent model, constrained to the plan's JSON schema (SelfProposer)
    random  uniform samples from the same space (RandomProposer)
    fixed   the human seed recipe on a shrunk copy of the parent (FixedProposer)
    replay  given plan files, one per generation or attempt (ReplayProposer)
    openai  any OpenAI-compatible chat-completions server, e.g. vLLM (OpenAIProposer)

Every backend returns `Candidate`s in the Plan's JSON shape; validation is the caller's.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import Candidate, ProposalContext, Proposer, ordered_plan, plan_text
from .prompt import PLAN_MARKER, build_prompt
from .schema import proposal_schema


def _self(**kw: Any) -> Proposer:
    from .self_model import SelfProposer  # imports torch, transformers, xgrammar

    return SelfProposer(**kw)


def _random(**kw: Any) -> Proposer:
    from .random_search import RandomProposer

    return RandomProposer(**kw)


def _fixed(**kw: Any) -> Proposer:
    from .fixed import FixedProposer

    return FixedProposer(**kw)


def _replay(**kw: Any) -> Proposer:
    from .replay import ReplayProposer

    return ReplayProposer(**kw)


def _openai(**kw: Any) -> Proposer:
    from .openai_api import OpenAIProposer  # standard library only

    return OpenAIProposer(**kw)


# name -> factory
PROPOSERS: dict[str, Callable[..., Proposer]] = {"self": _self, "random": _random, "fixed": _fixed,
                                                 "replay": _replay, "openai": _openai}


def make_proposer(name: str, **kwargs: Any) -> Proposer:
    """Build the proposer called `name` ("self", "random", "fixed", "replay", "openai") with its kwargs
    (SelfProposer needs model_path=..., OpenAIProposer its config keys). Unknown names
    raise ValueError with the options."""
    try:
        factory = PROPOSERS[name]
    except KeyError:
        raise ValueError(f"unknown proposer {name!r}; options: {', '.join(sorted(PROPOSERS))}") from None
    return factory(**kwargs)


__all__ = [
    "Candidate", "PLAN_MARKER", "PROPOSERS", "ProposalContext", "Proposer", "build_prompt",
    "make_proposer", "ordered_plan", "plan_text", "proposal_schema",
]
