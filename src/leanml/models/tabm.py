"""``tabm``: a parameter-efficient ensemble of MLPs (TabM-mini; Gorishniy et al., *TabM: Advancing Tabular
Deep Learning with Parameter-Efficient Ensembling*, ICLR 2025; reference code: the ``tabm`` package).

``members`` (k) MLPs share every hidden layer. What makes them differ is a per-member scaling of the input
(``x * r_i``, ``r_i`` initialised to random signs, then trained) and a per-member output layer. One
forward pass computes all k at once as a ``[batch, k, width]`` tensor, so an ensemble of 32 costs about
32 MLP forward passes of compute but only a little more memory and parameters than one MLP.

Training minimises the mean of the k members' losses (each member learns on its own), and the model's
output averages their probabilities (:func:`leanml.models.registry.combine_members`) — in PyTorch and in
the exported ONNX graph, whose output keeps the shape and meaning of the other architectures'.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from leanml.config import ModelConfig
from leanml.models.layers import activation as make_activation
from leanml.models.registry import register


class EnsembleHead(nn.Module):
    """k independent linear layers, one per member: ``[batch, k, width]`` → ``[batch, k, n_outputs]``."""

    def __init__(self, members: int, width: int, n_outputs: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(width)  # nn.Linear's default initialisation, per member
        self.weight = nn.Parameter(torch.empty(members, width, n_outputs).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, n_outputs).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's outputs from its own slice of ``x``."""
        return torch.einsum("bkw,kwo->bko", x, self.weight) + self.bias


@register("tabm")
class TabM(nn.Module):
    """Per-member input scaling, shared hidden layers, per-member output layers."""

    @classmethod
    def hyperparameters(cls, config: ModelConfig) -> dict[str, Any]:
        """Members, hidden widths, activation and dropout (``norm`` does not apply)."""
        return {
            "members": config.members,
            "hidden": list(config.hidden),
            "activation": config.activation,
            "dropout": config.dropout,
        }

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        members: int,
        hidden: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if members < 1:
            raise TypeError(f"members must be at least 1, got {members}")
        self.members = members
        signs = torch.randint(0, 2, (members, n_inputs)).float() * 2 - 1
        self.scaling = nn.Parameter(signs)
        layers: list[nn.Module] = []
        width = n_inputs
        for size in hidden:
            layers += [nn.Linear(width, size), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.layers = nn.Sequential(*layers)
        self.head = EnsembleHead(members, width, n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[batch, n_inputs]`` → ``[batch, members, n_outputs]`` logits or (standardized) values."""
        x = features[:, None, :] * self.scaling  # [batch, k, n_inputs]
        return self.head(self.layers(x))
