"""Training checkpoints: one safetensors file, written atomically after every epoch.

The file holds every tensor needed to continue (model weights, optimizer state, best weights so far) and,
in its header metadata, a JSON document with everything else (epoch count, history, schedule and
early-stopping state, what the run was configured with). There is no pickle anywhere: loading parses a
JSON header and raw tensor bytes, so a checkpoint can never run code. It is written to a temporary file
and renamed over the previous one, so a kill at any moment leaves the last complete checkpoint intact.

The optimizer's ``state_dict`` is flattened into tensors (``state.{param}.{key}``) plus JSON (its
``param_groups`` and any non-tensor per-parameter values) and rebuilt from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from leanml.errors import StateError
from leanml.files import atomic_path

CHECKPOINT_FORMAT_VERSION = 1
METADATA_KEY = "leanml_checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: named tensors and the JSON state saved with them."""

    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors saved under ``prefix`` (e.g. ``model.``), with the prefix removed."""
        return {name[len(prefix) :]: t for name, t in self.tensors.items() if name.startswith(prefix)}


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Write ``tensors`` and the JSON-serializable ``state`` to ``path`` atomically."""
    payload = {"format_version": CHECKPOINT_FORMAT_VERSION, **state}
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata={METADATA_KEY: json.dumps(payload)})
    return Path(path)


def load_checkpoint(path: str | Path) -> Checkpoint | None:
    """The checkpoint at ``path``, or ``None`` when there is none; an unreadable one is an error."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        state = json.loads(metadata[METADATA_KEY])
    except (OSError, SafetensorError, KeyError, json.JSONDecodeError) as exc:
        raise StateError(f"cannot read checkpoint '{path}': {exc}") from None
    version = state.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise StateError(f"checkpoint '{path}': format version {version!r} is not one this leanml can resume")
    return Checkpoint(tensors=tensors, state=state)


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with ``prefix`` added to every name."""
    return {f"{prefix}{name}": t for name, t in tensors.items()}


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as tensors (``state.{param}.{key}``) and JSON (groups and other values)."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, Any] = {}
    for param, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param}.{key}"] = value
            else:
                values[f"{param}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "values": values}


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Load into ``optimizer`` the state :func:`flatten_optimizer` produced."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, param, key = name.split(".", 2)
        state.setdefault(int(param), {})[key] = tensor
    for name, value in meta["values"].items():
        param, key = name.split(".", 1)
        state.setdefault(int(param), {})[key] = value
    # JSON turned tuples (Adam's betas) into lists; give them back the type the optimizer uses.
    current = optimizer.param_groups
    groups = [
        {
            key: tuple(value) if isinstance(value, list) and isinstance(current[i].get(key), tuple) else value
            for key, value in group.items()
        }
        for i, group in enumerate(meta["param_groups"])
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
