"""Seed recipe: the human-written training code of generation 0.

A recipe module is the part of training a proposer may rewrite. The trainer calls:

  lr_lambda(step, total_steps, warmup_steps) -> float
      learning-rate multiplier in [0, 10] for optimiser step `step` (0-based);
      the trainer multiplies it with hparams.lr.
  loss(logits, labels, teacher_logits, hp) -> scalar tensor
      logits: (batch, seq, vocab) float; labels: (batch, seq) int64, already shifted,
      -100 where ignored; teacher_logits: same shape as logits, or None when the plan
      has no teacher; hp: dict with "distill_weight" and "distill_temperature".

Only `math`, `torch` and `torch.nn.functional` may be imported; recursive.recipe enforces
the policy before this code runs anywhere.
"""

import math

import torch
import torch.nn.functional as F


def lr_lambda(step, total_steps, warmup_steps):
    # linear warmup, then cosine decay to 10% of the peak
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def loss(logits, labels, teacher_logits, hp):
    vocab = logits.shape[-1]
    ce = F.cross_entropy(logits.reshape(-1, vocab).float(), labels.reshape(-1), ignore_index=-100)
    w = hp["distill_weight"]
    if teacher_logits is None or w <= 0:
        return ce
    t = hp["distill_temperature"]
    mask = (labels.reshape(-1) != -100).float()
    student = F.log_softmax(logits.reshape(-1, vocab).float() / t, dim=-1)
    teacher = F.log_softmax(teacher_logits.reshape(-1, vocab).float() / t, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    kl = (kl * mask).sum() / torch.clamp(mask.sum(), min=1.0)
    # t^2 keeps the gradient scale of the soft term independent of t (Hinton et al. 2015)
    return (1.0 - w) * ce + w * (t * t) * kl
