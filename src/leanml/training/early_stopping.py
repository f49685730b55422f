"""The best epoch so far by the monitored validation metric, its weights, and early stopping's patience."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leanml.metrics import is_improvement


class BestEpoch:
    """Tracks which epoch scored best on ``metric``; with ``patience`` set, also when to stop.

    ``keep_weights`` keeps a copy of the best epoch's weights so they can be restored at the end.
    """

    def __init__(
        self, metric: str, patience: int | None = None, min_delta: float = 0.0, keep_weights: bool = False
    ) -> None:
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.keep_weights = keep_weights
        self.value: float | None = None
        self.epoch: int | None = None
        self.bad_epochs = 0
        self.weights: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, value: float, model: nn.Module) -> bool:
        """Record ``epoch``'s ``value``; return whether it is the new best."""
        if is_improvement(self.metric, value, self.value, self.min_delta):
            self.value, self.epoch, self.bad_epochs = value, epoch, 0
            if self.keep_weights:
                self.weights = {name: t.detach().clone() for name, t in model.state_dict().items()}
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` epochs have passed without improvement."""
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """The tracker's numbers, JSON-serializable (the weights are saved as tensors separately)."""
        return {"value": self.value, "epoch": self.epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any], weights: dict[str, torch.Tensor] | None) -> None:
        """Restore what :meth:`state_dict` returned, and the best weights."""
        self.value, self.epoch, self.bad_epochs = state["value"], state["epoch"], state["bad_epochs"]
        self.weights = weights or None
