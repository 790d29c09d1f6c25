"""Composing and checking the run configuration (hydra compose API).

`recursive run` has subcommands, so it composes with hydra's compose API instead of
`@hydra.main`; the config tree is the same one `configs/` describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

# keys a resumed run may change: extending a lineage or allowing more attempts is safe
RESUMABLE_KEYS = {"lineage.generations", "lineage.max_attempts"}


class ConfigError(ValueError):
    pass


def compose_config(overrides: list[str]) -> dict[str, Any]:
    """Compose configs/ with hydra overrides into a plain, resolved dict."""
    try:
        with initialize_config_module(config_module="recursive.configs", version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        out = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_first_line(str(e))) from None
    _check(out)
    return out


def _first_line(msg: str) -> str:
    lines = [ln for ln in msg.strip().splitlines() if ln.strip()]
    return " ".join(ln.strip() for ln in lines[:8]) if lines else "invalid configuration"


def _check(cfg: dict) -> None:
    need = {"run_dir": str, "lineage.generations": int, "lineage.max_attempts": int, "lineage.seed": int,
            "budget.param_ratio": float, "budget.min_param_ratio": float, "budget.max_params": int,
            "budget.max_train_tokens": int, "budget.min_train_tokens": int,
            "proposer.name": str, "data.vocab_size": int, "evaluate.context": int}
    for key, typ in need.items():
        node: Any = cfg
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"missing config value {key} (expected {typ.__name__})")
            node = node[part]
        if typ is float and isinstance(node, int) and not isinstance(node, bool):
            node = float(node)
        if not isinstance(node, typ) or isinstance(node, bool):
            raise ConfigError(f"config value {key} must be {typ.__name__}, got {node!r}")
    if cfg["lineage"]["generations"] < 0 or cfg["lineage"]["max_attempts"] < 1:
        raise ConfigError("lineage.generations must be >= 0 and lineage.max_attempts >= 1")
    if not 0 < cfg["budget"]["param_ratio"] <= 1:
        raise ConfigError(f"budget.param_ratio must be in (0, 1], got {cfg['budget']['param_ratio']}")
    if cfg["proposer"]["name"] == "openai":  # here, not at generation 1 after hours of training
        from recursive.proposers.openai_api import settings_problems
        problems = settings_problems(cfg["proposer"])
        if problems:
            raise ConfigError("; ".join(problems))
    _check_launcher(cfg)


def _check_launcher(cfg: dict) -> None:
    lc = cfg.get("launcher") or {}
    if lc.get("name") not in ("local", "slurm"):
        raise ConfigError(f"launcher.name must be local or slurm, got {lc.get('name')!r}")
    if lc["name"] != "slurm":
        return
    for key, lo in (("nodes", 1), ("cpus_per_task", 1), ("max_retries", 0), ("gpus_per_node", 0)):
        v = lc.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ConfigError(f"launcher.{key} must be an integer >= {lo}, got {v!r}")
    v = lc.get("ntasks_per_node")
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
        raise ConfigError(f"launcher.ntasks_per_node must be null or an integer >= 1, got {v!r}")
    for key in ("time", "signal"):
        if not isinstance(lc.get(key), str) or not lc[key]:
            raise ConfigError(f"launcher.{key} must be a non-empty string (e.g. 01:00:00, USR1@90), got {lc.get(key)!r}")
    if not isinstance(lc.get("retry_states"), list) or not all(isinstance(x, str) for x in lc["retry_states"]):
        raise ConfigError(f"launcher.retry_states must be a list of Slurm job states, got {lc.get('retry_states')!r}")
    ranks, nodes = int(cfg["train"].get("num_processes", 1)), lc["nodes"]
    per_node = lc.get("ntasks_per_node") or max(1, ranks // nodes)
    if nodes * per_node != ranks:
        raise ConfigError(f"launcher.nodes ({nodes}) x ntasks_per_node ({per_node}) must equal "
                          f"train.num_processes ({ranks})")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_conflicts(stored: dict, new: dict) -> list[str]:
    """Keys whose value differs between the run directory's config and this command's."""
    a, b = flatten(stored), flatten(new)
    keys = (set(a) | set(b)) - RESUMABLE_KEYS - {"run_dir"}
    return sorted(k for k in keys if a.get(k) != b.get(k))


def dump_yaml(cfg: dict) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(cfg))


def package_path(rel: str) -> Path:
    return Path(__file__).parent / rel
