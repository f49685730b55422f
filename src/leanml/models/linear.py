"""``linear``: logistic regression (binary), softmax regression (multiclass), linear regression."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leanml.config import ModelConfig
from leanml.models.registry import register


@register("linear")
class Linear(nn.Module):
    """One affine layer from the features to the outputs."""

    @classmethod
    def hyperparameters(cls, config: ModelConfig) -> dict[str, Any]:
        """A linear model has no hyperparameters of its own."""
        return {}

    def __init__(self, n_inputs: int, n_outputs: int) -> None:
        super().__init__()
        self.layer = nn.Linear(n_inputs, n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits or (standardized) values."""
        return self.layer(features)
