"""Structured pruning (train/prune.py) and the family rules (train/families.py)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from recursive.train import families, prune

LLAMA_LIKE = [LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config]


def _parent(config_cls, tie):
    cfg = config_cls(vocab_size=300, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=96, num_hidden_layers=3, head_dim=16, tie_word_embeddings=tie)
    base = cfg.to_dict()
    spec = families.spec_from_config(base, 64)
    model = families.build(base, spec, seed=1)
    with torch.no_grad():  # norms and biases away from their init, so a wrong slice shows
        for name, p in model.named_parameters():
            if "norm" in name or "bias" in name:
                p.normal_()
    return base, spec, model.eval()


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("config_cls", LLAMA_LIKE, ids=lambda c: c.model_type)
def test_pruning_nothing_reproduces_the_parent(config_cls, tie):
    base, spec, parent = _parent(config_cls, tie)
    ids = torch.randint(0, 300, (3, 24))
    child = families.build(base, spec, seed=2).eval()
    prune.prune(parent, spec, child, spec, ids)
    with torch.no_grad():
        assert torch.equal(parent(input_ids=ids).logits, child(input_ids=ids).logits)


@pytest.mark.parametrize("config_cls", LLAMA_LIKE, ids=lambda c: c.model_type)
def test_pruned_child_has_the_plan_architecture_and_reloads(config_cls, tmp_path):
    base, spec, parent = _parent(config_cls, False)
    small = dict(spec, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=40)
    child = families.build(base, small, seed=3)
    info = prune.prune(parent, spec, child, small, torch.randint(0, 300, (2, 16)))
    assert len(info["layers_kept"]) == 2 and info["hidden_kept"] == 32
    assert sum(p.numel() for p in child.parameters()) == families.count(base, small)
    child.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(again) is type(parent) and again.config.num_hidden_layers == 2
    ids = torch.randint(0, 300, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, child(input_ids=ids).logits)


def test_importance_keeps_the_layer_that_does_the_work():
    base, spec, parent = _parent(LlamaConfig, True)
    with torch.no_grad():  # layer 1 becomes the identity: its output projections write nothing
        parent.model.layers[1].self_attn.o_proj.weight.zero_()
        parent.model.layers[1].mlp.down_proj.weight.zero_()
    scores = prune.importance(parent, torch.randint(0, 300, (2, 16)))
    assert scores["block"][1] < 1e-6 < scores["block"][0]
    kept = prune.select(scores, spec, dict(spec, num_layers=2))
    assert [k["layer"] for k in kept["layers"]] == [0, 2]


def test_family_rules_name_the_field():
    gpt2 = GPT2Config(vocab_size=300, n_embd=64, n_head=4, n_layer=2).to_dict()
    parent = families.spec_from_config(gpt2, 128)
    child = dict(parent, num_kv_heads=2, init="scratch")
    problems = dict(families.family_problems(gpt2, child, parent))
    assert "grouped-query" in problems["model.num_kv_heads"]
    problems = dict(families.family_problems(gpt2, dict(parent, init="prune"), parent))
    assert "prune is not available for gpt2" in problems["model.init"]
    llama = LlamaConfig(vocab_size=300, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=96, num_hidden_layers=3, head_dim=16).to_dict()
    p = families.spec_from_config(llama, 64)
    assert families.family_problems(llama, dict(p, num_layers=2, init="prune"), p) == []
    wider = dict(p, intermediate_size=128, init="prune")
    assert "exceeds the parent's 96" in dict(families.family_problems(llama, wider, p))["model.init"]


@pytest.mark.parametrize("config_cls", LLAMA_LIKE + [GPT2Config], ids=lambda c: c.model_type)
def test_parameter_count_is_the_instantiated_model(config_cls):
    kw = dict(vocab_size=333)
    cfg = (config_cls(n_embd=64, n_head=4, n_layer=3, **kw) if config_cls is GPT2Config else
           config_cls(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                      num_hidden_layers=3, head_dim=16, **kw))
    base = cfg.to_dict()
    spec = dict(families.spec_from_config(base, 64), num_layers=2, intermediate_size=72)
    model = families.build(base, spec, seed=0)
    assert families.count(base, spec) == sum(p.numel() for p in model.parameters())


def _decoupled_parent():
    """A Qwen3-0.6B-shaped parent: head_dim (32) is not hidden / heads (64 / 4 = 16)."""
    cfg = Qwen3Config(vocab_size=300, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=96, num_hidden_layers=3, head_dim=32, tie_word_embeddings=True)
    base = cfg.to_dict()
    assert families.refusal(base, "q3") is None
    spec = families.spec_from_config(base, 64)
    model = families.build(base, spec, seed=1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_()
    return base, spec, model.eval()


def test_a_decoupled_head_dim_lineage_keeps_its_width_per_head():
    base, spec, parent = _decoupled_parent()
    assert families.hidden_per_head(base) == 16 and spec["head_dim"] == 32
    assert parent.config.hidden_size == 64 and parent.config.head_dim == 32  # generation 0 as it was
    ids = torch.randint(0, 300, (2, 20))
    same = families.build(base, spec, seed=2).eval()
    prune.prune(parent, spec, same, spec, ids)
    with torch.no_grad():
        assert torch.equal(parent(input_ids=ids).logits, same(input_ids=ids).logits)
    # a child with half the heads: hidden 2 x 16, head_dim still the plan's 32
    small = dict(spec, num_heads=2, num_kv_heads=1, num_layers=2, intermediate_size=40)
    child = families.build(base, small, seed=3)
    assert (child.config.hidden_size, child.config.head_dim) == (32, 32)
    info = prune.prune(parent, spec, child, small, ids)
    assert info["hidden_kept"] == 32
    assert families.count(base, small) == sum(p.numel() for p in child.parameters())
    with torch.no_grad():
        assert torch.isfinite(child(input_ids=ids).logits).all()


def test_a_width_the_plan_cannot_describe_is_refused_in_one_line():
    # a config.json as a checkpoint could hold it (transformers' own config class refuses to build it)
    odd = dict(LlamaConfig(vocab_size=300, hidden_size=64, num_attention_heads=4, head_dim=16).to_dict(),
               hidden_size=70)
    why = families.refusal(odd, "ckpt")
    assert why.startswith("model.name_or_path=ckpt: hidden size 70") and "\n" not in why
    gpt2 = GPT2Config(vocab_size=300, n_embd=64, n_head=4, n_layer=2).to_dict()
    assert families.refusal(gpt2, "g") is None
