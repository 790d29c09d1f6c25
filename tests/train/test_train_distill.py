"""Distillation from the parent: with the seed recipe's CE + temperature-scaled KL and the
teacher's logits computed on the fly, the student ends closer to the teacher than a student
trained with CE alone for the same steps on the same batches."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from recursive.data.shards import MixtureSampler
from train_helpers import metrics, run_stage, tiny_plan, write_attempt


@torch.no_grad()
def kl_to_teacher(student, teacher, windows):
    s = F.log_softmax(student(input_ids=windows).logits.float(), -1)
    t = F.log_softmax(teacher(input_ids=windows).logits.float(), -1)
    return float((t.exp() * (t - s)).sum(-1).mean())


def test_distillation_moves_the_student_towards_the_teacher(tmp_path, prepared):
    _, run_dir, manifest, base = prepared
    # the parent: a wider model trained longer
    teacher_plan = tiny_plan(base, steps=40)
    teacher_plan = teacher_plan.model_copy(update={"model": teacher_plan.model.model_copy(
        update={"num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256})})
    td = write_attempt(tmp_path / "teacher" / "attempt", prepared, teacher_plan)
    proc = run_stage(td)
    assert proc.returncode == 0, proc.stderr[-3000:]

    students = {}
    for name, w in (("ce", 0.0), ("distill", 0.8)):
        plan = tiny_plan(base, steps=20, distill_weight=w, distill_temperature=2.0)
        d = write_attempt(tmp_path / name / "attempt", prepared, plan, teacher=str(td / "model"))
        proc = run_stage(d)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert metrics(d)["steps"] == 20
        students[name] = AutoModelForCausalLM.from_pretrained(d / "model").eval()

    teacher = AutoModelForCausalLM.from_pretrained(td / "model").eval()
    shards = {n: run_dir / e["path"] for n, e in manifest["train"].items()}
    # batches the students never trained on (steps far past theirs)
    sampler = MixtureSampler(shards, {n: 1.0 for n in shards}, 64, 16, seed=12345)
    windows = torch.cat([sampler.batch(s)[:, :-1] for s in (1000, 1001)])
    kl = {n: kl_to_teacher(m, teacher, windows) for n, m in students.items()}
    assert np.isfinite(list(kl.values())).all()
    assert kl["distill"] < kl["ce"], kl
