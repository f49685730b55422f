"""The learning rate of each epoch: linear warm-up, then constant, cosine, step or plateau decay."""

from __future__ import annotations

import math
from typing import Any

from leanml.config import TrainConfig
from leanml.metrics import is_improvement


class LearningRateSchedule:
    """``lr(epoch)`` for 0-based epochs; :meth:`observe` feeds the validation metric to ``plateau``.

    Warm-up ramps linearly to ``lr`` over ``warmup_epochs``; the decay schedules count epochs from its end.
    All state is a few numbers (:meth:`state_dict`), so checkpoints store it as JSON.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.factor = 1.0  # plateau: product of the reductions so far
        self.best: float | None = None
        self.bad_epochs = 0

    def lr(self, epoch: int) -> float:
        """The learning rate for ``epoch``."""
        c = self.config
        if epoch < c.warmup_epochs:
            return c.lr * (epoch + 1) / (c.warmup_epochs + 1)
        t = epoch - c.warmup_epochs
        if c.schedule == "cosine":
            return c.lr * 0.5 * (1.0 + math.cos(math.pi * t / (c.epochs - c.warmup_epochs)))
        if c.schedule == "step":
            return c.lr * c.gamma ** (t // c.step_size)
        if c.schedule == "plateau":
            return c.lr * self.factor
        return c.lr

    def observe(self, metric: str, value: float) -> None:
        """Record an epoch's validation ``metric``; ``plateau`` decays after too many epochs without gain."""
        if self.config.schedule != "plateau":
            return
        if is_improvement(metric, value, self.best):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.config.plateau_patience:
            self.factor *= self.config.gamma
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state as JSON-serializable numbers."""
        return {"factor": self.factor, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.factor, self.best, self.bad_epochs = state["factor"], state["best"], state["bad_epochs"]
