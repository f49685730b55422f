"""The optimizer named by the train config, with weight decay on weight matrices only."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leanml.config import TrainConfig


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``gd`` and ``sgd``: plain SGD; ``momentum``: SGD with (Nesterov) momentum; ``adam``; ``adamw``.

    ``gd`` differs from ``sgd`` only in how the loop batches: it takes one step per epoch on the gradient
    of the whole training set.
    """
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer in ("gd", "sgd"):
        return torch.optim.SGD(groups, lr=config.lr)
    if config.optimizer == "momentum":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay weight matrices; never biases or normalisation parameters (1-D tensors), as in nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    if weight_decay == 0:
        return [{"params": params, "weight_decay": 0.0}]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
