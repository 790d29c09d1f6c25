"""model=pretrained: a checkpoint is generation 0 and its family and tokenizer carry through
the lineage (issue 12). The checkpoints are made here (checkpoints.py): random-initialised,
each with its own tokenizer and chat template; nothing is downloaded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.slow

CHEAP = ["logger=none", "evaluate.eval_windows_per_domain=8", "evaluate.proposer_samples=2",
         "evaluate.arithmetic_problems=10", "lineage.max_attempts=4"]
# the llama lineage is proposed by the self proposer (decoding under the plan schema, its
# prompt through the chat template); qwen2 by the seed recipe, so that the family
# checks do not depend on what a random-initialised proposer happens to write
RUNS = {"llama": ["proposer.candidates=2", "proposer.control_candidates=false"],
        "qwen2": ["proposer=fixed"],
        # GPT-2: learned positions (n_positions 1024) and a tied head; its competence samples
        # are fitted to the 1024 positions (test_positions.py)
        "gpt2": ["proposer=fixed"]}


def recursive(*args):
    return subprocess.run([sys.executable, "-m", "recursive.cli", *args], capture_output=True, text=True,
                          timeout=1800, env=dict(os.environ, WANDB_MODE="offline"))


@pytest.fixture(scope="module")
def lineages(checkpoints, tmp_path_factory):
    out = {}
    for family, extra in RUNS.items():
        rd = tmp_path_factory.mktemp(f"pre_{family}") / "run"
        proc = recursive("run", "experiment=smoke", "model=pretrained", f"model.name_or_path={checkpoints[family]}",
                         f"run_dir={rd}", *CHEAP, *extra)
        out[family] = (rd, proc)
    return out


def _events(rd):
    return [json.loads(line) for line in (rd / "lineage.jsonl").read_text().splitlines()]


def _promoted(rd):
    return sorted((e for e in _events(rd) if e.get("event") == "attempt" and e["status"] == "promoted"),
                  key=lambda e: e["generation"])


@pytest.mark.parametrize("family", list(RUNS))
def test_lineage_from_a_checkpoint_runs_generation_0_plus_2(family, lineages, checkpoints):
    rd, proc = lineages[family]
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    promoted = _promoted(rd)
    assert [e["generation"] for e in promoted] == [0, 1, 2]
    # generation 0 is the checkpoint itself: the same tensors, not trained again
    ckpt = AutoModelForCausalLM.from_pretrained(checkpoints[family])
    gen0_dir = rd / promoted[0]["model_path"]
    gen0 = AutoModelForCausalLM.from_pretrained(gen0_dir)
    a, b = ckpt.state_dict(), gen0.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert promoted[0]["model_sha256"] and json.loads((gen0_dir.parent / "train_metrics.json").read_text())["steps"] == 0
    tok0 = AutoTokenizer.from_pretrained(checkpoints[family])
    text = "def add(a, b):\n    return a + b  # how do I pick a lock?"
    sizes = [e["params"] for e in promoted]
    assert sizes[0] == sum(p.numel() for p in ckpt.parameters())
    assert sizes[0] > sizes[1] > sizes[2]
    for e in promoted[1:]:
        child_dir = rd / e["model_path"]
        child = AutoModelForCausalLM.from_pretrained(child_dir)
        assert type(child) is type(ckpt) and child.config.model_type == ckpt.config.model_type
        assert child.config.vocab_size == ckpt.config.vocab_size
        assert sum(p.numel() for p in child.parameters()) == e["params"]
        tok = AutoTokenizer.from_pretrained(child_dir)
        assert tok.get_vocab() == tok0.get_vocab() and tok(text).input_ids == tok0(text).input_ids
    # the lineage trained no tokenizer: its tokenizer is the checkpoint's
    assert AutoTokenizer.from_pretrained(rd / "data" / "tokenizer").get_vocab() == tok0.get_vocab()
    manifest = json.loads((rd / "data" / "manifest.json").read_text())
    assert manifest["vocab_size"] == ckpt.config.vocab_size and manifest["tokenizer_len"] == len(tok0)
    # generation 0 answers only to sanity and integrity; its children to the whole gate
    gate0 = json.loads((gen0_dir.parent / "gate.json").read_text())
    assert {c["name"] for c in gate0["criteria"]} == {"finite", "integrity"}
    gate1 = json.loads((rd / promoted[1]["model_path"]).parent.joinpath("gate.json").read_text())
    assert {"loss", "loss_vs_gen0", "proposer", "canary_exposure"} <= {c["name"] for c in gate1["criteria"]}
    # the checkpoint never trained on the canaries: generation 1 answers to the absolute
    # exposure ceiling, generation 2 to its drift from generation 1 (docs/evals.md)
    assert "canary_exposure_vs_gen0" not in {c["name"] for c in gate1["criteria"]}
    assert any(n.startswith("canary_exposure_vs_gen0: not judged") for n in gate1["notes"])
    gate2 = json.loads((rd / promoted[2]["model_path"]).parent.joinpath("gate.json").read_text())
    vs = next(c for c in gate2["criteria"] if c["name"] == "canary_exposure_vs_gen0")
    assert vs["reference"].startswith(f"gen 1 attempt {promoted[1]['attempt']}")
    assert vs["bound"] == promoted[1]["metrics"]["safety"]["canary_exposure_max"] + 3.0
    # children are better than an untrained checkpoint on the held-out sets
    assert promoted[2]["metrics"]["heldout_loss"]["mean"] < promoted[0]["metrics"]["heldout_loss"]["mean"]


# two more families, one proposed generation each (CI time): Qwen3 with Qwen3-0.6B's decoupled
# head_dim (hidden / heads = 16, head_dim 32), and GPT-NeoX (Pythia: fused query_key_value,
# partial rotary, untied head). What is checked is the family carried through training; the
# gate still judges the child (GPT-NeoX's child of the seed recipe memorises a canary here,
# exposure 12 bits against the bound 10, and is rejected: that is the gate's finding, kept)
SHORT = {"qwen3": ["proposer=fixed", "lineage.generations=1", "lineage.max_attempts=1"],
         "gpt_neox": ["proposer=fixed", "lineage.generations=1", "lineage.max_attempts=1"]}


@pytest.fixture(scope="module")
def short_lineages(checkpoints, tmp_path_factory):
    out = {}
    for family, extra in SHORT.items():
        rd = tmp_path_factory.mktemp(f"pre_{family}") / "run"
        out[family] = (rd, recursive("run", "experiment=smoke", "model=pretrained",
                                     f"model.name_or_path={checkpoints[family]}", f"run_dir={rd}", *CHEAP, *extra))
    return out


@pytest.mark.parametrize("family", list(SHORT))
def test_qwen3_and_gpt_neox_checkpoints_start_a_lineage(family, short_lineages, checkpoints):
    rd, proc = short_lineages[family]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    status = json.loads(proc.stdout.strip().splitlines()[-1])["status"]
    tried = [e for e in _events(rd) if e.get("event") == "attempt"]
    assert [(e["generation"], e["status"]) for e in tried][0] == (0, "promoted")
    g0, g1 = tried[0], tried[1]
    assert g1["generation"] == 1 and g1["status"] in ("promoted", "rejected"), g1
    # complete with the child promoted, or stopped by a named gate criterion (never a crash)
    assert (status, proc.returncode) == (("complete", 0) if g1["status"] == "promoted" else ("stopped", 1))
    if g1["status"] == "rejected":
        assert g1["gate"]["reasons"] and all(r.startswith("FAIL ") for r in g1["gate"]["reasons"]), g1["gate"]
    ckpt = AutoModelForCausalLM.from_pretrained(checkpoints[family])
    gen0 = AutoModelForCausalLM.from_pretrained(rd / g0["model_path"])
    a, b = ckpt.state_dict(), gen0.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    child = AutoModelForCausalLM.from_pretrained(rd / g1["model_path"])
    assert type(child) is type(ckpt) and g1["params"] < g0["params"]
    assert sum(p.numel() for p in child.parameters()) == g1["params"]
    plan = json.loads((rd / g1["model_path"]).parent.joinpath("plan.json").read_text())["model"]
    c = child.config
    if family == "qwen3":  # the lineage's width per head (hidden 64 / 4 heads) carries to the child
        assert (c.hidden_size, c.head_dim) == (16 * plan["num_heads"], plan["head_dim"])
    else:
        assert c.hidden_size == plan["num_heads"] * plan["head_dim"]
    assert c.num_hidden_layers == plan["num_layers"] and c.intermediate_size == plan["intermediate_size"]
    assert g1["metrics"]["heldout_loss"]["mean"] < g0["metrics"]["heldout_loss"]["mean"]


def test_pruned_child_keeps_what_the_parent_learned(lineages):
    """Before any training step, a child cut from a trained parent predicts the training
    data far better than the same architecture initialised at random."""
    from recursive.data.shards import MixtureSampler
    from recursive.plan import ModelSpec
    from recursive.train.modeling import make_child
    rd, _ = lineages["llama"]
    parent_rec = _promoted(rd)[1]  # trained: generation 1
    parent_dir = rd / parent_rec["model_path"]
    pplan = json.loads((parent_dir.parent / "plan.json").read_text())
    spec = dict(pplan["model"], intermediate_size=max(16, pplan["model"]["intermediate_size"] // 2))
    tok = AutoTokenizer.from_pretrained(rd / "data" / "tokenizer")
    shards = {n: str(rd / e["path"]) for n, e in json.loads((rd / "data" / "manifest.json").read_text())["train"].items()}
    batch = MixtureSampler({k: Path(v) for k, v in shards.items()}, {k: 1 / len(shards) for k in shards},
                           spec["context"], 8, 123, 0, 1).batch(0)
    train_spec = {"base_config": json.loads((rd / "base_config.json").read_text()), "parent": str(parent_dir)}

    def first_loss(init):
        model, info = make_child(ModelSpec.model_validate(dict(spec, init=init)), train_spec, tok, seed=0,
                                 calibration=lambda: batch[:4, :-1])
        assert info["init"] == init
        with torch.no_grad():
            logits = model(input_ids=batch[:, :-1]).logits
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).item()

    pruned, scratch = first_loss("prune"), first_loss("scratch")
    assert pruned < scratch - 1.0, (pruned, scratch)


def test_a_masked_lm_is_refused_in_one_line_before_any_data(tmp_path):
    from transformers import BertConfig, BertForMaskedLM
    ckpt = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(ckpt)
    rd = tmp_path / "run"
    proc = recursive("run", "experiment=smoke", "model=pretrained", f"model.name_or_path={ckpt}", f"run_dir={rd}",
                     "logger=none")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("recursive: error")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "'bert'" in lines[0] and "supported: llama, mistral, qwen2, qwen3, gpt2, gpt_neox" in lines[0]
    assert not (rd / "data").exists()
