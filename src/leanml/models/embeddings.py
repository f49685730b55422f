"""Numeric feature embeddings: each numeric feature becomes a small vector before the network sees it.

``periodic`` is PLR from Gorishniy, Rubachev and Babenko, *On Embeddings for Numerical Features in Tabular
Deep Learning* (NeurIPS 2022; reference code: ``rtdl_num_embeddings.PeriodicEmbeddings``): per feature,
``x → ReLU(W · [cos(2π c x), sin(2π c x)] + b)`` with ``frequencies`` trainable coefficients ``c`` drawn
from ``N(0, scale²)`` and a linear layer of its own (``dim`` outputs). It lets an MLP fit the sharp,
non-monotone per-feature shapes that trees find easily, and is the largest single gain reported for MLPs.

Only the features listed in ``features`` (indices into the model's input, the numeric columns and
datetime parts) are embedded; the others (one-hot categories, ``__missing`` flags) pass through unchanged.
The embedded vectors and the passed-through features are concatenated, so the network behind sees a
flat ``[batch, width]`` matrix. The model's input stays the ``[batch, n_inputs]`` float32 ``features``
matrix, and the whole thing exports to ONNX as ``Gather``, ``Einsum`` and elementwise ops.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

EMBEDDING_KINDS = ("none", "periodic")


class PeriodicEmbedding(nn.Module):
    """PLR embeddings of some input features, concatenated with the features left as they are."""

    def __init__(self, n_inputs: int, features: list[int], frequencies: int, dim: int, scale: float) -> None:
        super().__init__()
        if not features:
            raise ValueError("a periodic embedding needs at least one feature to embed")
        if len(set(features)) != len(features) or min(features) < 0 or max(features) >= n_inputs:
            raise ValueError(f"embedded features must be distinct indices below {n_inputs}, got {features}")
        others = [i for i in range(n_inputs) if i not in set(features)]
        # Index buffers travel in the state dict, so a loaded model embeds exactly the same columns.
        self.register_buffer("embedded", torch.tensor(features, dtype=torch.long))
        self.register_buffer("passed", torch.tensor(others, dtype=torch.long))
        n = len(features)
        self.coefficients = nn.Parameter(torch.randn(n, frequencies) * scale)
        bound = 1.0 / math.sqrt(2 * frequencies)  # nn.Linear's default initialisation, per feature
        self.weight = nn.Parameter(torch.empty(n, 2 * frequencies, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, dim).uniform_(-bound, bound))
        self.width = n * dim + len(others)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[batch, n_inputs]`` → ``[batch, width]``: embedded features, then the passed-through ones."""
        x = features.index_select(1, self.embedded)  # [batch, n]
        angles = 2 * math.pi * self.coefficients * x[..., None]  # [batch, n, frequencies]
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        embedded = torch.relu(torch.einsum("bnf,nfd->bnd", periodic, self.weight) + self.bias)
        return torch.cat([embedded.flatten(1), features.index_select(1, self.passed)], dim=1)


def embedding_spec(config: Any, n_inputs: int, features: list[int] | None) -> dict[str, Any] | None:
    """The ``embedding`` entry of a model spec for a :class:`~leanml.config.ModelConfig` (or ``None``).

    ``features`` are the input indices to embed (``None``: all of them). With no feature to embed the
    model gets no embedding.
    """
    if config.embedding == "none":
        return None
    chosen = list(range(n_inputs)) if features is None else sorted(int(i) for i in features)
    if not chosen:
        return None
    return {
        "kind": config.embedding,
        "features": chosen,
        "frequencies": config.embedding_frequencies,
        "dim": config.embedding_dim,
        "scale": config.embedding_scale,
    }


def build_embedding(spec: dict[str, Any] | None, n_inputs: int) -> PeriodicEmbedding | None:
    """The embedding module a spec's ``embedding`` entry describes (``None`` for none)."""
    if spec is None:
        return None
    if spec.get("kind") != "periodic":
        raise ValueError(f"embedding kind must be one of {', '.join(EMBEDDING_KINDS[1:])}, got {spec!r}")
    return PeriodicEmbedding(n_inputs, spec["features"], spec["frequencies"], spec["dim"], spec["scale"])
