"""``mlp``: a multilayer perceptron — per hidden layer: linear, norm, activation, dropout."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leanml.config import ModelConfig
from leanml.models.layers import activation as make_activation
from leanml.models.layers import norm_layer
from leanml.models.registry import register


@register("mlp")
class MLP(nn.Module):
    """Fully connected layers of the ``hidden`` widths, then a linear output layer."""

    @classmethod
    def hyperparameters(cls, config: ModelConfig) -> dict[str, Any]:
        """Hidden widths, activation, dropout and norm."""
        return {
            "hidden": list(config.hidden),
            "activation": config.activation,
            "dropout": config.dropout,
            "norm": config.norm,
        }

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        hidden: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for size in hidden:
            layers += [nn.Linear(width, size), norm_layer(norm, size), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits or (standardized) values."""
        return self.layers(features)
