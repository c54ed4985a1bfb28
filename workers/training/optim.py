"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import torch

from service.spec import TrainSpec
from workers.training.models import Classifier


def build_optimizer(model: Classifier, train: TrainSpec) -> torch.optim.Optimizer:
    params = model.parameters()
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
        )
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
