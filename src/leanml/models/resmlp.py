"""``resmlp``: a residual MLP, the teacher-sized architecture.

An input projection to ``width`` units, ``blocks`` pre-norm residual blocks
(``x + dropout(W2 · act(W1 · norm(x)))`` with an inner layer of ``inner`` units — one width for every
block, or a list of one per block, as structured pruning leaves it), then a final norm, activation and
linear output layer. Residual connections keep deep, wide networks trainable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leanml.config import ModelConfig
from leanml.models.layers import activation as make_activation
from leanml.models.layers import norm_layer
from leanml.models.registry import register


class ResidualBlock(nn.Module):
    """``x + dropout(W2 · act(W1 · norm(x)))``."""

    def __init__(self, width: int, inner: int, activation: str, dropout: float, norm: str) -> None:
        super().__init__()
        self.norm = norm_layer(norm, width)
        self.expand = nn.Linear(width, inner)
        self.activation = make_activation(activation)
        self.project = nn.Linear(inner, width)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input plus the block's residual."""
        return x + self.dropout(self.project(self.activation(self.expand(self.norm(x)))))


@register("resmlp")
class ResMLP(nn.Module):
    """Input projection, residual blocks, output head."""

    @classmethod
    def hyperparameters(cls, config: ModelConfig) -> dict[str, Any]:
        """Width and inner width (from ``hidden``), blocks, activation, dropout and norm."""
        return {
            "width": config.hidden[0],
            "inner": config.hidden[1] if len(config.hidden) > 1 else config.hidden[0],
            "blocks": config.blocks,
            "activation": config.activation,
            "dropout": config.dropout,
            "norm": config.norm,
        }

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        width: int,
        inner: int | list[int],
        blocks: int,
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
    ) -> None:
        super().__init__()
        inners = [inner] * blocks if isinstance(inner, int) else list(inner)
        if len(inners) != blocks:
            raise TypeError(f"inner lists {len(inners)} widths for {blocks} blocks")
        self.input = nn.Linear(n_inputs, width)
        self.blocks = nn.Sequential(*[ResidualBlock(width, n, activation, dropout, norm) for n in inners])
        self.head = nn.Sequential(
            norm_layer(norm, width), make_activation(activation), nn.Linear(width, n_outputs)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits or (standardized) values."""
        return self.head(self.blocks(self.input(features)))
