"""Magnitude pruning: structured (hidden units physically removed) and unstructured (weights zeroed).

Structured pruning works on *unit groups*: a layer that produces hidden units (``producer``), an optional
batch norm over them, and the layer that consumes them (``consumer``). In an ``mlp`` every hidden layer is
a group; in a ``resmlp`` every block's inner layer is (the residual width is shared by all blocks and is
not pruned). A unit's importance is the norm of what flows into it times the norm of what flows out of it;
the least important units are removed by slicing the weight matrices, so the layers become smaller dense
layers. Removing a unit gives exactly the outputs of the original with that unit's outgoing weights set to
zero (:func:`mask_units`), which is what the tests check.

Unstructured pruning (:func:`prune_unstructured`) zeroes the globally smallest weights with
``torch.nn.utils.prune``; the tensors keep their shapes, so it saves space only once compressed.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from leanml.models import TabularModel, model_from_state


@dataclass(frozen=True)
class UnitGroup:
    """State-dict names of the tensors around one layer of hidden units."""

    producer: str
    """Prefix of the ``nn.Linear`` producing the units (its rows)."""
    consumer: str
    """Prefix of the ``nn.Linear`` reading them (its columns)."""
    norm: str | None
    """Prefix of a ``BatchNorm1d`` over the units, if any."""
    width: int


def structured_blocker(spec: dict[str, Any]) -> str | None:
    """Why the model of ``spec`` cannot be pruned structurally, or ``None`` when it can."""
    arch, hyper = spec["arch"], spec["hyperparameters"]
    if arch == "linear":
        return "a linear model has no hidden units"
    if arch == "mlp" and hyper.get("norm") == "layer":
        return "layer norm over the hidden units: removing a unit changes how every other unit is normalised"
    if arch not in ("mlp", "resmlp"):
        return f"architecture '{arch}' has no structured pruning"
    return None


def unit_groups(model: TabularModel, spec: dict[str, Any]) -> list[UnitGroup]:
    """The prunable unit groups of an ``mlp`` or ``resmlp`` model, in network order."""
    net = model.net
    if spec["arch"] == "resmlp":
        return [
            UnitGroup(f"net.blocks.{i}.expand", f"net.blocks.{i}.project", None, block.expand.out_features)
            for i, block in enumerate(net.blocks)  # type: ignore[union-attr]
        ]
    layers = list(net.layers)  # type: ignore[union-attr]
    linear_at = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    groups = []
    for producer, consumer in itertools.pairwise(linear_at):
        norm = layers[producer + 1]
        groups.append(
            UnitGroup(
                f"net.layers.{producer}",
                f"net.layers.{consumer}",
                f"net.layers.{producer + 1}" if isinstance(norm, nn.BatchNorm1d) else None,
                layers[producer].out_features,
            )
        )
    return groups


def unit_importance(state: dict[str, torch.Tensor], group: UnitGroup) -> torch.Tensor:
    """Per unit: the L2 norm of its incoming weights and bias (scaled by its batch norm) times the L2 norm
    of its outgoing weights."""
    incoming = torch.cat([state[f"{group.producer}.weight"], state[f"{group.producer}.bias"][:, None]], 1)
    importance = incoming.norm(dim=1)
    if group.norm is not None:
        scale = state[f"{group.norm}.weight"].abs() / (state[f"{group.norm}.running_var"] + 1e-5).sqrt()
        importance = importance * scale
    return importance * state[f"{group.consumer}.weight"].norm(dim=0)


def units_to_keep(
    model: TabularModel, spec: dict[str, Any], step: float, min_units: int
) -> list[torch.Tensor]:
    """Per group, the indices (ascending) of the units kept when ``step`` of each layer's units go."""
    state = model.state_dict()
    kept = []
    for group in unit_groups(model, spec):
        count = max(min(min_units, group.width), round(group.width * (1.0 - step)))
        order = torch.argsort(unit_importance(state, group), descending=True, stable=True)
        kept.append(torch.sort(order[:count]).values)
    return kept


def remove_units(
    model: TabularModel, spec: dict[str, Any], keep: list[torch.Tensor]
) -> tuple[TabularModel, dict[str, Any]]:
    """A smaller model holding only the ``keep`` units of each group, and its spec."""
    groups = unit_groups(model, spec)
    if len(keep) != len(groups):
        raise ValueError(f"{len(keep)} index lists for {len(groups)} unit groups")
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    for group, index in zip(groups, keep, strict=True):
        for name in ("weight", "bias"):
            state[f"{group.producer}.{name}"] = state[f"{group.producer}.{name}"][index]
        if group.norm is not None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                state[f"{group.norm}.{name}"] = state[f"{group.norm}.{name}"][index]
        state[f"{group.consumer}.weight"] = state[f"{group.consumer}.weight"][:, index]
    widths = [len(index) for index in keep]
    hyper = dict(spec["hyperparameters"])
    if spec["arch"] == "resmlp":
        hyper["inner"] = widths
    else:
        hyper["hidden"] = widths
    new_spec = {**spec, "hyperparameters": hyper}
    return model_from_state(new_spec, {k: v.contiguous() for k, v in state.items()}), new_spec


def mask_units(model: TabularModel, spec: dict[str, Any], keep: list[torch.Tensor]) -> TabularModel:
    """A copy of ``model`` whose units outside ``keep`` have their outgoing weights zeroed."""
    masked = copy.deepcopy(model)
    state = masked.state_dict()
    with torch.no_grad():
        for group, index in zip(unit_groups(model, spec), keep, strict=True):
            dropped = torch.ones(group.width, dtype=torch.bool)
            dropped[index] = False
            state[f"{group.consumer}.weight"][:, dropped] = 0.0
    return masked


def hidden_widths(spec: dict[str, Any]) -> list[int]:
    """The widths structured pruning works on: ``mlp`` hidden layers, ``resmlp`` inner layers."""
    hyper = spec["hyperparameters"]
    if spec["arch"] == "resmlp":
        inner = hyper["inner"]
        return list(inner) if isinstance(inner, list) else [inner] * hyper["blocks"]
    return list(hyper.get("hidden", []))


def prune_unstructured(model: TabularModel, sparsity: float) -> list[tuple[nn.Module, str]]:
    """Zero the ``sparsity`` share of all linear weights with the smallest magnitudes (global ranking).

    The zeros are kept by ``torch.nn.utils.prune`` masks while the model is fine-tuned; call
    :func:`make_permanent` with the returned parameters afterwards.
    """
    parameters = [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]
    torch_prune.global_unstructured(parameters, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    return parameters


def make_permanent(parameters: list[tuple[nn.Module, str]]) -> None:
    """Fold the pruning masks into the weights and drop them (the state dict is plain again)."""
    for module, name in parameters:
        torch_prune.remove(module, name)


def sparsity(model: nn.Module) -> float:
    """Share of the linear layers' weights that are exactly zero."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(total, 1)
