"""Optimizers and learning-rate schedules.

The learning rate is a pure function of the global batch index (`lr_at`), set on
the optimizer before every step (`set_lr`). A resumed run therefore needs no
scheduler state: it knows the epoch and the batch it stopped at, and that is
all the schedule depends on.

Schedules (`train.schedule`), after a linear warm-up over `train.warmup_epochs`
(step s of W warm-up steps trains at lr * (s + 1) / W, so the first step is
not wasted at lr 0 and the last warm-up step is at the full lr):

- constant: lr.
- cosine: from lr down to 0 along half a cosine over the steps after warm-up;
  the step after the last one would be at exactly 0.
- step: lr * step_gamma^m, m the number of milestones already passed: a
  milestone e (1-based epoch) lowers the lr from epoch e + 1 on. Without
  `step_milestones`, after half and after three quarters of the epochs
  (int(0.5 * epochs), int(0.75 * epochs); a 0 is dropped and a repeat counts
  once, so short jobs are not decayed from the start or twice at once).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from counterweight.service.spec import TrainSpec


def build_optimizer(model: nn.Module, train: TrainSpec) -> torch.optim.Optimizer:
    params = model.parameters()
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
        )
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)


def step_milestones(train: TrainSpec) -> list[int]:
    """The epochs after which the step schedule multiplies the lr by step_gamma."""
    if train.step_milestones is not None:
        return sorted(train.step_milestones)  # a repeat given explicitly counts twice
    defaults = {int(0.5 * train.epochs), int(0.75 * train.epochs)}
    return sorted(m for m in defaults if m > 0)


def lr_at(train: TrainSpec, step: int, steps_per_epoch: int) -> float:
    """The learning rate of global batch `step` (0-based, over all epochs)."""
    warmup_steps = train.warmup_epochs * steps_per_epoch
    warmup = (step + 1) / warmup_steps if step < warmup_steps else 1.0
    if train.schedule == "constant":
        return train.lr * warmup
    if train.schedule == "cosine":
        decay_steps = max(train.epochs * steps_per_epoch - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
        return train.lr * warmup * 0.5 * (1.0 + math.cos(math.pi * progress))
    epoch = step // steps_per_epoch
    passed = sum(1 for milestone in step_milestones(train) if epoch >= milestone)
    return train.lr * warmup * train.step_gamma**passed


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
