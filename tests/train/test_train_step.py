"""The training step (train/step.py): the chunked loss equals the whole-sequence one, the
compiled step runs on CPU (inductor), a recipe loss that does not compile runs eagerly with
the reason logged, and nothing inside a step reads a device value on the host."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recursive import sandbox
from recursive.plan import ModelSpec
from recursive.recipe import load_recipe
from recursive.train.step import TrainStep, chunked_loss

from train_helpers import TINY, tiny_plan, write_attempt

SEED = (Path(__file__).parents[2] / "recursive" / "recipes" / "seed.py").read_text()
HP = {"distill_weight": 0.0, "distill_temperature": 2.0}


def tiny_model(seed: int = 0):
    from recursive.train.modeling import build_model
    return build_model(ModelSpec(**TINY), 256, eos_token_id=0, seed=seed)


def batch(seed: int = 0):
    rows = torch.randint(0, 256, (2, TINY["context"] + 1), generator=torch.Generator().manual_seed(seed))
    return rows[:, :-1], rows[:, 1:]


@pytest.mark.parametrize("distill", [0.0, 0.5])
def test_chunked_loss_equals_the_whole_sequence_loss_values_and_gradients(distill):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 37, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    t_hidden, t_weight = torch.randn(3, 37, 16, generator=g), torch.randn(50, 16, generator=g)
    labels = torch.randint(0, 50, (3, 37), generator=g)
    labels[0, :5] = -100
    labels[:, 8:16] = -100  # one chunk without a single label
    hp = {"distill_weight": distill, "distill_temperature": 2.0}
    recipe = load_recipe(SEED)
    if distill:
        want = recipe.loss(hidden @ weight.T, labels, t_hidden @ t_weight.T, hp)
    else:
        want = F.cross_entropy((hidden @ weight.T).reshape(-1, 50), labels.reshape(-1), ignore_index=-100)
    want_grads = torch.autograd.grad(want, (hidden, weight))
    got = chunked_loss(recipe.loss, hidden, weight, labels, hp, 8, t_hidden if distill else None,
                       t_weight if distill else None)  # 37 = 4 x 8 + 5: a short last chunk
    got_grads = torch.autograd.grad(got, (hidden, weight))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_compiled_step_runs_on_cpu_with_inductor_as_one_graph():
    torch.manual_seed(0)
    model, recipe, (x, y) = tiny_model(), load_recipe(SEED), batch()
    eager = TrainStep(model, model, recipe, HP)(x, y)
    want = torch.autograd.grad(eager, list(model.parameters()))
    step = TrainStep(model, model, recipe, HP, compile=True, fuse=True, loss_chunk=16, backend="inductor")
    loss = step(x, y)
    got = torch.autograd.grad(loss, list(model.parameters()))
    assert step.mode == "fused" and step.fallbacks == []
    torch.testing.assert_close(loss, eager, atol=1e-5, rtol=1e-5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


NO_COMPILE = SEED.replace("    vocab = logits.shape[-1]\n",
                          "    vocab = logits.shape[-1]\n"
                          "    if logits.float().mean().item() > 1e9:  # a host read: no graph\n"
                          "        return logits.sum()\n", 1)


def test_recipe_loss_that_does_not_compile_runs_eagerly_with_the_reason_logged(caplog):
    assert NO_COMPILE != SEED
    model, recipe, (x, y) = tiny_model(), load_recipe(NO_COMPILE), batch()
    # backend "eager": dynamo traces (where the graph breaks), nothing is compiled
    step = TrainStep(model, model, recipe, HP, compile=True, fuse=True, backend="eager")
    with caplog.at_level(logging.WARNING, logger="recursive.train.step"):
        loss = step(x, y)
        again = step(x, y)
    assert [f["part"] for f in step.fallbacks] == ["model and loss graph", "recipe loss"]
    assert all(f["reason"] for f in step.fallbacks)
    assert step.mode == "split"  # the model still compiled, the loss eager
    assert "recipe loss does not compile, running it eagerly" in caplog.text
    want = TrainStep(model, model, recipe, HP)(x, y)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(again, want)


def test_a_compiled_recipe_still_cannot_write_files(tmp_path, monkeypatch):
    import recursive.recipe as package
    monkeypatch.setattr(package, "check_policy", lambda source: [])  # the runtime layer alone
    if not sandbox.installed():
        sandbox.install_guard(scoped=True)
    target = tmp_path / "leak.pt"
    code = SEED.replace("    vocab = logits.shape[-1]\n",
                        f"    vocab = logits.shape[-1]\n    torch.save(logits.detach(), {str(target)!r})\n", 1)
    model, recipe, (x, y) = tiny_model(), load_recipe(code), batch()
    step = TrainStep(model, model, recipe, HP, compile=True, fuse=True, backend="eager")
    with pytest.raises(ValueError, match="torch.save"):  # RecipeRuntimeError from the eager fallback
        step(x, y)
    assert not target.exists()


SYNCS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


def count_host_reads(monkeypatch) -> list[str]:
    """Every read of a tensor's value on the host, by caller. AdamW's step counters are
    host tensors on CPU (torch/optim reads them; on CUDA the fused AdamW keeps them on the
    device), so torch/optim is left out."""
    calls: list[str] = []
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def patched(self, *a, _original=original, _name=name, **k):
            caller = sys._getframe(1).f_code.co_filename
            if "torch/optim/" not in caller:
                calls.append(f"{_name} from {caller}")
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, patched)
    return calls


def test_no_host_sync_inside_a_step(prepared, tmp_path, monkeypatch):
    from dataclasses import asdict

    from recursive.train.distributed import make_accelerator
    from recursive.train.protocol import TrainSpec
    from recursive.train.trainer import fit
    plan = tiny_plan(prepared[3], steps=6)
    spec = asdict(TrainSpec.read(write_attempt(tmp_path, prepared, plan, log_every=10**6, check_every=10**6)))
    accelerator, layout = make_accelerator(spec, batch_size=plan.hparams.batch_size, grad_clip=plan.hparams.grad_clip)
    calls = count_host_reads(monkeypatch)
    marks: list[int] = []
    _, metrics, _ = fit(plan, spec, accelerator, layout, verbose=False, on_step=lambda done: marks.append(len(calls)))
    assert len(marks) == 6
    # after on_step(1): the log row of step 0; from step 2 on, with the check and the log row
    # not due, a step reads nothing back (on a GPU: it never waits for the device)
    per_step = [b - a for a, b in zip(marks[1:], marks[2:])]
    assert per_step == [0, 0, 0, 0], calls[marks[1]:]
    assert calls, "the check and the log rows do read values: the counter must see them"
    assert metrics["compile"] == {"mode": "eager", "fallbacks": [], "loss_chunk": 0}


def test_the_stage_with_a_chunked_loss_trains_like_the_whole_logits(prepared, tmp_path):
    from dataclasses import asdict

    from recursive.train.distributed import make_accelerator
    from recursive.train.protocol import TrainSpec
    from recursive.train.trainer import fit
    plan = tiny_plan(prepared[3], steps=3)
    losses = []
    for chunk in (0, 24):
        d = tmp_path / str(chunk)
        spec = asdict(TrainSpec.read(write_attempt(d, prepared, plan, loss_chunk=chunk)))
        accelerator, layout = make_accelerator(spec, batch_size=plan.hparams.batch_size,
                                               grad_clip=plan.hparams.grad_clip)
        _, m, _ = fit(plan, spec, accelerator, layout, verbose=False)
        losses.append([row["loss"] for row in m["curve"]])
        assert m["compile"]["loss_chunk"] == chunk
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_a_negative_loss_chunk_is_refused_naming_the_field():
    from recursive.config import compose_config
    from recursive.errors import ConfigError
    from recursive.train.distributed import StageConfigError, make_accelerator
    with pytest.raises(StageConfigError, match=r"^train.loss_chunk must be an integer >= 0, got -1$"):
        make_accelerator({"loss_chunk": -1, "threads": 1}, batch_size=8, grad_clip=1.0)
    with pytest.raises(ConfigError, match="train.loss_chunk must be >= 0"):
        compose_config(["experiment=smoke", "train.loss_chunk=-1"])
