"""The eval suite: what runs on every candidate successor (`run_suite`) and what each
metric means.

Each eval declares its metrics with their direction (which way is better, `DIRECTIONS`)
and the files it reads (`SUITE`); `<attempt>/eval_suite.json` records those declarations
with the data hashes (`write_declarations`), and `<attempt>/eval.json` holds the numbers
(a nested dict of numbers, as in the lineage). The evals themselves are in capability.py
and safety.py; the integrity check that comes first is in integrity.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from recursive.evaluate.integrity import code_hashes
from recursive.io import atomic_write_json

# metric path -> "lower" or "higher" is better; `*` stands for each domain
DIRECTIONS = {
    "heldout_loss.*": "lower", "arithmetic.exact_match": "higher", "arithmetic.digits_*": "higher",
    "proposer.valid_plan_rate": "higher", "proposer.code_valid_rate": "higher",
    "proposer.win_rate_vs_random": "higher",
    "fidelity.kl_to_parent": "lower",
    "safety.refusal_score": "higher", "safety.over_refusal_score": "lower", "safety.refusal_margin": "higher",
    "safety.refusal_auroc": "higher", "safety.refusal_margin_*": "higher", "safety.refusal_auroc_*": "higher",
    "safety.refusal_rate": "higher", "safety.over_refusal_rate": "lower",
    "safety.canary_exposure": "lower", "safety.canary_exposure_max": "lower",
    "safety.canary_recall": "lower", "safety.canary_prefix_match": "lower",
    "contamination.*": "lower", "contamination.max": "lower",
    "safety.distinct_1": "higher", "safety.distinct_2": "higher", "safety.entropy": "higher",
    "safety.code_policy_incidents": "lower", "safety.selected_code_incidents": "lower",
    "integrity.ok": "higher",
}

SUITE = {
    "heldout_loss": {"metrics": ["heldout_loss.*"], "data": ["eval"]},
    "arithmetic": {"metrics": ["arithmetic.exact_match", "arithmetic.digits_*"], "data": ["eval_items:arithmetic"]},
    "proposer_competence": {"metrics": ["proposer.valid_plan_rate", "proposer.code_valid_rate"], "data": []},
    # of the proposal that made the attempt: its candidates against random controls, on screen
    # loss (training shards only; recursive/propose.py::win_rate)
    "proposal_win_rate": {"metrics": ["proposer.win_rate_vs_random"], "data": []},
    "fidelity": {"metrics": ["fidelity.kl_to_parent"], "data": ["eval"]},
    "refusal_likelihood": {"metrics": ["safety.refusal_score", "safety.over_refusal_score", "safety.refusal_margin",
                                       "safety.refusal_auroc", "safety.refusal_margin_*", "safety.refusal_auroc_*"], "data": ["eval_items:safety"]},
    "refusal": {"metrics": ["safety.refusal_rate", "safety.over_refusal_rate"], "data": ["eval_items:safety"]},
    "memorisation": {"metrics": ["safety.canary_exposure", "safety.canary_exposure_max", "safety.canary_recall",
                                 "safety.canary_prefix_match"], "data": ["eval_items:canary"]},
    "contamination": {"metrics": ["contamination.*", "contamination.max"], "data": ["eval"]},
    "collapse": {"metrics": ["safety.distinct_1", "safety.distinct_2", "safety.entropy"], "data": ["eval"]},
    "code_policy": {"metrics": ["safety.code_policy_incidents", "safety.selected_code_incidents"], "data": []},
    "integrity": {"metrics": ["integrity.ok"], "data": ["eval", "eval_items", "code"]},
}


def run_suite(model_path: Path, parent_path: Path | None, run_dir: Path, manifest: dict, cfg: dict,
              proposal: dict, training: dict | None = None) -> dict:
    """Every eval of the suite except proposer competence (the loop adds that) on the model
    at `model_path`; `parent_path` is the proposing model (None for generation 0);
    `training` is the attempt's train_spec.json (its mixture and shards), for contamination."""
    # heavy imports only when evaluating: the declarations above need neither torch nor a model
    import numpy as np
    import torch

    from recursive.evaluate import safety
    from recursive.evaluate.capability import arithmetic_exact_match, heldout_loss, load_model
    model, tok = load_model(model_path)
    ctx, windows = int(cfg["context"]), int(cfg["eval_windows_per_domain"])
    shards = {name: run_dir / e["path"] for name, e in sorted(manifest["eval"].items())}
    losses = {name: heldout_loss(model, path, ctx, windows) for name, path in shards.items()}
    losses["mean"] = float(np.mean(list(losses.values())))
    out = {"heldout_loss": losses, "params": sum(p.numel() for p in model.parameters())}
    out["arithmetic"] = arithmetic_exact_match(model, tok, load_items(run_dir, manifest, "arithmetic"),
                                               int(cfg["arithmetic_problems"]))
    text_shards = [shards[n] for n in sorted(shards) if manifest["eval"][n]["domain"] in ("code", "prose")]
    requests, canaries = load_items(run_dir, manifest, "safety"), load_items(run_dir, manifest, "canary")
    sfty = safety.refusal_likelihood(model, tok, requests) if requests else {}
    sfty.update(safety.refusal(model, tok, requests, int(cfg["refusal_items"])))
    sfty.update(safety.canary_exposure(model, tok, canaries, int(cfg["canary_candidates"]), seed=manifest["seed"]))
    sfty.update(safety.canary_recall(model, tok, canaries))
    sfty.update(safety.collapse(model, text_shards or list(shards.values()), ctx, int(cfg["collapse_samples"]),
                                int(cfg["collapse_tokens"]), seed=0))
    sfty.update(safety.code_incidents(proposal))
    out["safety"] = sfty
    if training is not None:
        out["contamination"] = training_contamination(training, run_dir, manifest)
    if parent_path is not None:
        parent, _ = load_model(parent_path)
        out["fidelity"] = {"kl_to_parent": safety.kl_to_parent(model, parent, list(shards.values()), ctx,
                                                                max(1, windows // 2))}
    harness = cfg.get("lm_eval") or {}
    if harness.get("tasks"):  # optional extra: imported only when tasks are configured
        model = parent = None  # the harness loads its own copy from model_path
        from recursive.evaluate.lm_harness import run_lm_eval
        out["lm_eval"] = run_lm_eval(model_path, list(harness["tasks"]), harness.get("include_path"),
                                     harness.get("limit"), harness.get("batch_size", 8),
                                     device="cuda" if torch.cuda.is_available() else "cpu")
    return out


def training_contamination(training: dict, run_dir: Path, manifest: dict) -> dict:
    """The share of each eval set's documents contaminated by the sources this child trained
    on (weight > 0 in its mixture): for each eval set the highest rate among those sources,
    from the manifest's table (data preparation computed it), and computed here for a
    per-generation source (the research record) that did not exist then. A document whose
    13-grams are split across two sources is not counted (docs/evals.md)."""
    from recursive.data.contamination import contamination_table
    from recursive.data.shards import open_shard
    table, cc = manifest.get("contamination") or {}, manifest.get("contamination_config") or {}
    evals = {name: run_dir / e["path"] for name, e in sorted(manifest["eval"].items())}
    rates = {name: 0.0 for name in evals}
    for source, weight in (training.get("mixture") or {}).items():
        if weight <= 0:
            continue
        row = table.get(source)
        if row is None:  # a per-generation shard (the research record)
            row = contamination_table({source: open_shard(Path(training["shards"][source]))},
                                      {name: open_shard(path) for name, path in evals.items()},
                                      int(cc.get("eos", 0)), n=int(cc.get("ngram", 13)),
                                      doc_threshold=float(cc.get("doc_threshold", 0.8)))[source]
        for name in evals:
            rates[name] = max(rates[name], float((row.get(name) or {}).get("rate", 0.0)))
    return {**rates, "max": max(rates.values(), default=0.0)}


def write_declarations(path: Path, manifest: dict) -> None:
    decl = {name: {"metrics": {m: DIRECTIONS[m] for m in spec["metrics"]},
                   "data_sha256": _data_hashes(manifest, spec["data"])} for name, spec in SUITE.items()}
    atomic_write_json(path, decl)


def _data_hashes(manifest: dict, kinds: list[str]) -> dict[str, str]:
    out = {}
    for kind in kinds:
        if kind == "eval":
            out.update({e["path"]: e["sha256"] for e in manifest["eval"].values()})
        elif kind.startswith("eval_items"):
            task = kind.split(":", 1)[1] if ":" in kind else None
            out.update({e["path"]: e["sha256"] for e in manifest["eval_items"].values() if task in (None, e["task"])})
        elif kind == "code":
            out.update(code_hashes())
    return out


def load_items(run_dir: Path, manifest: dict, task: str) -> list[dict]:
    for entry in manifest["eval_items"].values():
        if entry["task"] == task:
            return [json.loads(ln) for ln in (run_dir / entry["path"]).read_text().splitlines() if ln.strip()]
    return []
