"""Building blocks shared by the architectures: activations and normalisation layers by name."""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
    """The activation layer called ``name`` (relu, gelu, silu or tanh)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def norm_layer(kind: str, width: int) -> nn.Module:
    """A normalisation layer over ``width`` features: ``batch``, ``layer`` or ``none`` (identity)."""
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of batch, layer, none, got {kind!r}")
