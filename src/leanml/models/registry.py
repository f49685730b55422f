"""The architecture registry and the model spec: how a network is described as JSON and rebuilt from it.

A *spec* is a small JSON-serializable dict that, together with a safetensors state dict, rebuilds a model
exactly::

    {"format_version": 1, "arch": "mlp", "hyperparameters": {"hidden": [256, 128], ...},
     "n_inputs": 42, "n_outputs": 1, "task": "binary", "output": "logit"}

``output`` says what the network's outputs mean: ``logit`` (binary: one logit of class index 1),
``logits`` (multiclass: one per class) or ``value`` (regression: the prediction in the target's units).
An optional ``embedding`` entry describes numeric feature embeddings applied before the architecture
(see :mod:`leanml.models.embeddings`); specs without it have none.

A new architecture is one module holding an ``nn.Module`` class decorated with :func:`register`: its
``__init__`` takes ``n_inputs``, ``n_outputs`` and its hyperparameters as keywords, and its classmethod
``hyperparameters(config)`` picks those hyperparameters out of a :class:`~leanml.config.ModelConfig`.
An ensemble architecture sets the attribute ``members`` (k > 1) and returns ``[batch, k, n_outputs]``;
:class:`TabularModel` averages its members' probabilities (see :func:`combine_members`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from leanml.config import ModelConfig
from leanml.errors import StateError, require_format_version
from leanml.models.embeddings import build_embedding, embedding_spec

SPEC_FORMAT_VERSION = 1
OUTPUT_KINDS = {"binary": "logit", "multiclass": "logits", "regression": "value"}
SPEC_KEYS = ("format_version", "arch", "hyperparameters", "n_inputs", "n_outputs", "task", "output")

ARCHITECTURES: dict[str, type[nn.Module]] = {}
M = TypeVar("M", bound=type[nn.Module])


def register(name: str) -> Callable[[M], M]:
    """Class decorator: make an architecture buildable by ``name`` (see the module docstring)."""

    def decorate(cls: M) -> M:
        if name in ARCHITECTURES and ARCHITECTURES[name] is not cls:
            raise ValueError(f"architecture '{name}' is already registered by {ARCHITECTURES[name].__name__}")
        if not callable(getattr(cls, "hyperparameters", None)):
            raise TypeError(f"architecture '{name}' needs a classmethod hyperparameters(config) -> dict")
        ARCHITECTURES[name] = cls
        return cls

    return decorate


class TabularModel(nn.Module):
    """An architecture's network, its optional numeric embeddings, and the output convention of the task.

    ``forward`` maps ``features`` (float32, ``[batch, n_inputs]``) to ``[batch, n_outputs]`` logits or
    values. For regression the network learns the standardized target and the de-standardization
    (``target_scale``, ``target_shift``: buffers in the state dict) is folded in, so outputs are in the
    target's own units — in PyTorch and in the exported ONNX graph alike. An ensemble network's members
    are combined into one output of the same kind (:func:`combine_members`); training uses
    :meth:`member_outputs`, so each member learns on its own loss.
    """

    def __init__(self, net: nn.Module, n_outputs: int, task: str, embed: nn.Module | None = None) -> None:
        super().__init__()
        self.embed = embed
        self.net = net
        self.task = task
        self.members = int(getattr(net, "members", 1))
        self.rescale = task == "regression"
        if self.rescale:
            self.register_buffer("target_scale", torch.ones(n_outputs))
            self.register_buffer("target_shift", torch.zeros(n_outputs))

    def member_outputs(self, features: torch.Tensor) -> torch.Tensor:
        """``[batch, members, n_outputs]``: every member's logits or values (one member for plain nets)."""
        out = self._network(features)
        return self._in_target_units(out[:, None, :] if out.ndim == 2 else out)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (classification) or values in the target's units (regression)."""
        if self.members == 1:
            # member_outputs without its member axis, which would export as two more ONNX nodes
            # (Unsqueeze, Gather): at batch 1 each node costs about half a microsecond.
            out = self._network(features)
            return self._in_target_units(out[:, 0] if out.ndim == 3 else out)
        return combine_members(self.task, self.member_outputs(features))

    def _network(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.embed(features) if self.embed is not None else features)

    def _in_target_units(self, out: torch.Tensor) -> torch.Tensor:
        return out * self.target_scale + self.target_shift if self.rescale else out

    def set_target_scaling(self, mean: float, std: float) -> None:
        """Fold the training target's standardization into the output (regression only)."""
        if not self.rescale:
            raise ValueError("target scaling applies to regression models only")
        with torch.no_grad():
            self.target_scale.fill_(std)
            self.target_shift.fill_(mean)


def combine_members(task: str, members: torch.Tensor) -> torch.Tensor:
    """One output from ensemble members' outputs ``[batch, k, n_outputs]``: their probabilities averaged.

    The result keeps the meaning of a single network's output, so the sigmoid / softmax of
    :func:`leanml.models.predict.to_predictions` and of the serving runtime give the averaged
    probability: binary returns ``logit(mean_k sigmoid(z_k))``, multiclass ``log(mean_k softmax(z_k))``
    (log-probabilities: their softmax is themselves), both through log-sum-exp so that probabilities near
    0 or 1 keep their precision; regression averages the values.
    """
    if task == "regression":
        return members.mean(dim=1)
    log_k = math.log(members.shape[1])
    if task == "binary":
        log_p = torch.logsumexp(nn.functional.logsigmoid(members), dim=1) - log_k
        log_q = torch.logsumexp(nn.functional.logsigmoid(-members), dim=1) - log_k
        return log_p - log_q
    return torch.logsumexp(torch.log_softmax(members, dim=2), dim=1) - log_k


def model_spec(
    config: ModelConfig,
    n_inputs: int,
    task: str,
    n_classes: int = 0,
    numeric_features: list[int] | None = None,
) -> dict[str, Any]:
    """The JSON spec of the model ``config`` describes, for ``n_inputs`` features and ``task``.

    ``n_classes`` is the number of classes for classification (ignored for regression).
    ``numeric_features`` are the input indices that ``model.embedding`` embeds (``None``: every input).
    """
    if task not in OUTPUT_KINDS:
        raise ValueError(f"task must be one of {', '.join(OUTPUT_KINDS)}, got {task!r}")
    if task == "multiclass" and n_classes < 3:
        raise ValueError(f"a multiclass model needs at least 3 classes, got {n_classes}")
    cls = _architecture(config.arch)
    spec = {
        "format_version": SPEC_FORMAT_VERSION,
        "arch": config.arch,
        "hyperparameters": cls.hyperparameters(config),  # type: ignore[attr-defined]
        "n_inputs": int(n_inputs),
        "n_outputs": n_classes if task == "multiclass" else 1,
        "task": task,
        "output": OUTPUT_KINDS[task],
    }
    embedding = embedding_spec(config, int(n_inputs), numeric_features)
    if embedding is not None:
        spec["embedding"] = embedding
    return spec


def build_model(spec: dict[str, Any]) -> TabularModel:
    """A freshly initialised model for ``spec`` (seed torch first for reproducible weights)."""
    check_spec(spec)
    cls = _architecture(spec["arch"])
    try:
        embed = build_embedding(spec.get("embedding"), spec["n_inputs"])
    except (TypeError, ValueError, KeyError) as exc:
        raise StateError(f"model spec: bad embedding: {exc}") from None
    width = embed.width if embed is not None else spec["n_inputs"]
    try:
        net = cls(n_inputs=width, n_outputs=spec["n_outputs"], **spec["hyperparameters"])
    except TypeError as exc:
        raise StateError(f"model spec: bad hyperparameters for '{spec['arch']}': {exc}") from None
    return TabularModel(net, spec["n_outputs"], task=spec["task"], embed=embed)


def check_spec(spec: Any) -> None:
    """Raise :class:`StateError` naming the problem when ``spec`` is not a usable model spec."""
    if not isinstance(spec, dict):
        raise StateError("model spec: expected a JSON object")
    missing = [key for key in SPEC_KEYS if key not in spec]
    if missing:
        raise StateError(f"model spec: missing {', '.join(missing)}")
    require_format_version(spec, SPEC_FORMAT_VERSION, "model spec")
    if spec["task"] not in OUTPUT_KINDS or spec["output"] != OUTPUT_KINDS[spec["task"]]:
        raise StateError(f"model spec: task {spec['task']!r} with output {spec['output']!r} is not valid")
    for key in ("n_inputs", "n_outputs"):
        if not isinstance(spec[key], int) or spec[key] < 1:
            raise StateError(f"model spec: {key} must be a positive integer, got {spec[key]!r}")
    if not isinstance(spec["hyperparameters"], dict):
        raise StateError("model spec: hyperparameters must be an object")
    if "embedding" in spec and not isinstance(spec["embedding"], dict):
        raise StateError("model spec: embedding must be an object")


def _architecture(name: str) -> type[nn.Module]:
    cls = ARCHITECTURES.get(name)
    if cls is None:
        known = ", ".join(sorted(ARCHITECTURES)) or "none registered"
        raise StateError(f"unknown model architecture '{name}' (known: {known})")
    return cls
