"""Composing and checking the run configuration (hydra compose API).

`recursive run` has subcommands, so it composes with hydra's compose API instead of
`@hydra.main`; the config tree is the one configs/ describes, typed by
recursive/run_config.py (registered with hydra's ConfigStore before composing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recursive.errors import ConfigError
from recursive.run_config import RunConfig, register

# keys a resumed run may change: extending a lineage or allowing more attempts is safe, and
# so is deciding to go on past generation 0's precondition (no recorded result changes)
RESUMABLE_KEYS = {"lineage.generations", "lineage.max_attempts", "evaluate.require_gen0.refusal_margin",
                  "evaluate.require_gen0.action"}

__all__ = ["ConfigError", "compose_config", "compose_typed", "resume_conflicts", "dump_yaml", "package_path"]


def compose_typed(overrides: list[str]) -> tuple[RunConfig, dict[str, Any]]:
    """Compose configs/ with hydra overrides: the typed, checked RunConfig and the same
    tree as a plain dict (what config.json stores)."""
    register()
    try:
        with initialize_config_module(config_module="recursive.configs", version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        tree = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_first_line(str(e))) from None
    return RunConfig.from_dict(tree), tree  # types the proposer and launcher groups, runs every check


def compose_config(overrides: list[str]) -> dict[str, Any]:
    """Compose configs/ with hydra overrides into a plain, resolved, checked dict."""
    return compose_typed(overrides)[1]


def _first_line(msg: str) -> str:
    lines = [ln for ln in msg.strip().splitlines() if ln.strip()]
    return " ".join(ln.strip() for ln in lines[:8]) if lines else "invalid configuration"


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_conflicts(stored: dict, new: dict) -> list[str]:
    """Keys whose value differs between the run directory's config and this command's.
    A key only the new config has, at its schema default, is not a conflict: it was
    added to the schema after the run directory was written, and the old run used that
    default."""
    from recursive.launch import CONFIGS as LAUNCHERS
    from recursive.proposers.configs import CONFIGS as PROPOSERS
    a, b = flatten(stored), flatten(new)
    schema = OmegaConf.merge(OmegaConf.structured(RunConfig), {
        "proposer": OmegaConf.structured(PROPOSERS[(new.get("proposer") or {}).get("name", "self")]),
        "launcher": OmegaConf.structured(LAUNCHERS[(new.get("launcher") or {}).get("name", "local")])})
    defaults = flatten(OmegaConf.to_container(schema))
    keys = (set(a) | set(b)) - RESUMABLE_KEYS - {"run_dir"}
    return sorted(k for k in keys if a.get(k) != b.get(k)
                  and not (k not in a and k in defaults and b[k] == defaults[k]))


def dump_yaml(cfg: dict) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(cfg))


def package_path(rel: str) -> Path:
    return Path(__file__).parent / rel
