"""Saving and loading models as ``model.json`` (the spec) + ``model.safetensors`` (the weights).

Nothing is pickled: the spec is plain JSON and the weights are safetensors, so loading a model never runs
code from the file. Loading is strict — every tensor the architecture expects must be present with its
shape, and no other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from leanml.errors import StateError
from leanml.files import atomic_path, write_json
from leanml.models.registry import TabularModel, build_model, check_spec

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors (copies), ready for safetensors."""
    return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}


def model_from_state(spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TabularModel:
    """Rebuild a model from its spec and state dict; a missing, extra or misshapen tensor is an error."""
    model = build_model(spec)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise StateError(
            f"model weights do not match the spec: missing {missing or 'none'}, extra {extra or 'none'}"
        )
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            got, wanted = tuple(tensor.shape), tuple(expected[name].shape)
            raise StateError(f"model weights: '{name}' has shape {got}, the spec needs {wanted}")
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model


def save_model(model: torch.nn.Module, spec: dict[str, Any], directory: str | Path) -> Path:
    """Write ``model.json`` and ``model.safetensors`` into ``directory`` (each atomically); return it."""
    check_spec(spec)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / MODEL_WEIGHTS) as tmp:
        save_file(state_tensors(model), str(tmp), metadata={"format": "pt"})
    write_json(directory / MODEL_JSON, spec)
    return directory


def load_model(directory: str | Path) -> tuple[TabularModel, dict[str, Any]]:
    """Read a model written by :func:`save_model`: the model (in eval mode) and its spec."""
    directory = Path(directory)
    try:
        spec = json.loads((directory / MODEL_JSON).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StateError(f"cannot read model spec '{directory / MODEL_JSON}': {exc}") from None
    try:
        tensors = load_file(str(directory / MODEL_WEIGHTS))
    except (OSError, ValueError, RuntimeError) as exc:
        raise StateError(f"cannot read model weights '{directory / MODEL_WEIGHTS}': {exc}") from None
    return model_from_state(spec, tensors), spec
