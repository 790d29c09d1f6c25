"""In-process checks of the stage's small parts: which checkpoint a run resumes, the FLOPs
and MFU arithmetic, the SLURM environment mapping, the DeepSpeed config."""

import pytest
import torch

from recursive.io import atomic_write_json
from recursive.train import checkpoint
from recursive.train.distributed import deepspeed_config, env_from_slurm
from recursive.train.perf import flops_per_token, mfu, peak_flops


def fake_ckpt(root, step, fp):
    (root / f"step_{step:08d}").mkdir(parents=True)
    atomic_write_json(root / f"step_{step:08d}" / checkpoint.STATE, {"step": step, "fingerprint": fp})


def test_resume_takes_the_newest_complete_checkpoint_of_the_same_run(tmp_path):
    spec = {"shards": {"a": "a.bin"}, "mixture": {"a": 1.0}, "teacher": None, "precision": "fp32"}
    fp = checkpoint.fingerprint('{"plan": 1}', spec, "ddp", 2)
    assert fp == checkpoint.fingerprint('{"plan": 1}', spec, "ddp", 4)  # DDP state does not depend on ranks
    assert fp != checkpoint.fingerprint('{"plan": 2}', spec, "ddp", 2)  # another plan
    assert fp != checkpoint.fingerprint('{"plan": 1}', dict(spec, mixture={"a": 0.5}), "ddp", 2)
    z = checkpoint.fingerprint('{"plan": 1}', spec, "zero2", 2)
    assert z != checkpoint.fingerprint('{"plan": 1}', spec, "zero2", 4)  # ZeRO shards do
    root = tmp_path / "checkpoints"
    fake_ckpt(root, 4, fp)
    fake_ckpt(root, 8, fp)
    fake_ckpt(root, 12, "another run")
    (root / "step_00000016.tmp").mkdir()  # a crash while writing: never resumed
    (root / "step_00000020").mkdir()  # no trainer_state.json: incomplete
    assert checkpoint.latest(root, fp) == root / "step_00000008"
    assert checkpoint.latest(root, "nothing") is None
    assert checkpoint.latest(tmp_path / "absent", fp) is None


def test_flops_per_token_counts_matmuls_and_attention():
    # tied: every parameter is multiplied (the embedding is the output head)
    assert flops_per_token(1000, vocab_size=10, hidden=8, num_layers=2, context=16, attn_width=8,
                           tied=True) == 6 * 1000 + 12 * 2 * 16 * 8
    # untied: the input embedding is a lookup
    assert flops_per_token(1000, vocab_size=10, hidden=8, num_layers=2, context=16, attn_width=8,
                           tied=False) == 6 * (1000 - 80) + 12 * 2 * 16 * 8
    assert peak_flops(torch.device("cpu"), "bf16") is None and mfu(1e6, 1e9, None, 1) is None
    assert mfu(1e5, 1e9, 1e15, 2) == pytest.approx(0.05)


def test_srun_tasks_get_torch_distributed_variables():
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "2",
           "SLURM_JOB_ID": "1234", "MASTER_ADDR": "node7"}
    set_ = env_from_slurm(env)
    assert set_ == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                    "MASTER_ADDR": "node7", "MASTER_PORT": str(20000 + 1234)}
    assert env_from_slurm({"RANK": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}) == {}  # torchrun inside srun
    assert env_from_slurm({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == {}  # one task: a world of one


def test_deepspeed_config_has_no_optimizer_and_consistent_batch():
    c = deepspeed_config(3, micro_batch=4, grad_accum=2, world_size=2, grad_clip=1.0, bf16=False)
    assert c["train_batch_size"] == 16 and c["zero_optimization"]["stage"] == 3
    assert "optimizer" not in c and "scheduler" not in c  # torch's AdamW: nothing to compile
