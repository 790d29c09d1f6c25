"""Exact resume: a run preempted by SIGTERM at step k (checkpoint, exit 75 = requeue) and
started again ends where the uninterrupted run ends: bitwise in one CPU process, within
1e-6 relative with DDP over 2 real ranks. The data position needs no state (the sampler is
a pure function of (seed, step)); model, optimizer, scheduler and RNG come from the
checkpoint."""

import json
import signal
import subprocess

import pytest
import torch
from transformers import AutoModelForCausalLM

from recursive.train.protocol import EXIT_REQUEUE as REQUEUE_EXIT
from train_helpers import metrics, run_stage, stage_cmd, stage_env, tiny_plan, write_attempt

STEPS = 40


def preempt(d, nproc, after_step=5):
    """Start the stage, send SIGTERM (to the launcher when there is one) once `after_step`
    is logged, and wait for it to checkpoint and exit."""
    proc = subprocess.Popen(stage_cmd(d, nproc), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=stage_env(d.parent))
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line).get("step", -1) >= after_step:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=240)
    return proc.returncode, err


def weights(d):
    return AutoModelForCausalLM.from_pretrained(d / "model").state_dict()


@pytest.mark.parametrize("nproc,strategy", [(1, "single"), (2, "ddp")])
def test_preempted_and_resumed_run_ends_like_the_uninterrupted_one(tmp_path, prepared, nproc, strategy):
    plan = tiny_plan(prepared[3], steps=STEPS)
    spec = dict(strategy=strategy, num_processes=nproc)
    whole = write_attempt(tmp_path / "whole" / "attempt", prepared, plan, **spec)
    proc = run_stage(whole, nproc)
    assert proc.returncode == 0, proc.stderr[-3000:]

    cut = write_attempt(tmp_path / "cut" / "attempt", prepared, plan, checkpoint_every=4, keep_checkpoints=2, **spec)
    rc, err = preempt(cut, nproc)
    requeue = json.loads((cut / "train_requeue.json").read_text())
    if nproc == 1:
        assert rc == REQUEUE_EXIT, err[-3000:]
    else:  # torchrun itself exits 1 when it is signalled; the marker file is what the loop reads
        assert rc != 0
    k = requeue["step"]
    assert 5 < k < STEPS and not (cut / "model").exists()
    # checkpoints every 4 steps and at the preemption, the last 2 kept, none half-written
    names = sorted(p.name for p in (cut / "checkpoints").iterdir())
    assert len(names) == 2 and names[-1] == f"step_{k:08d}" and not any(n.endswith(".tmp") for n in names)

    proc = run_stage(cut, nproc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (cut / "train_requeue.json").exists()
    a, b = metrics(whole), metrics(cut)
    assert b["resumed_from_step"] == k and b["steps"] == STEPS and b["tokens"] == a["tokens"]
    assert [r["step"] for r in b["curve"]] == [r["step"] for r in a["curve"]]
    if nproc == 1:
        assert b["final_loss"] == a["final_loss"]  # bitwise
        assert [r["loss"] for r in b["curve"]] == [r["loss"] for r in a["curve"]]
        for (name, x), y in zip(weights(whole).items(), weights(cut).values()):
            assert torch.equal(x, y), name
    else:
        assert b["final_loss"] == pytest.approx(a["final_loss"], rel=1e-6)
        for (name, x), y in zip(weights(whole).items(), weights(cut).values()):
            torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-7, msg=name)
