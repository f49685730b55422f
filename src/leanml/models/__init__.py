"""Model architectures, their registry and JSON spec, weights I/O and ONNX export.

Importing this package registers the built-in architectures: ``linear``, ``mlp``, ``resmlp`` and ``tabm``.
"""

from __future__ import annotations

from leanml.models import linear, mlp, resmlp, tabm  # noqa: F401  (imported to register them)
from leanml.models.export import ONNX_INPUT, ONNX_OUTPUT, export_onnx
from leanml.models.registry import (
    ARCHITECTURES,
    OUTPUT_KINDS,
    TabularModel,
    build_model,
    check_spec,
    model_spec,
    register,
)
from leanml.models.serialize import (
    MODEL_JSON,
    MODEL_WEIGHTS,
    load_model,
    model_from_state,
    save_model,
    state_tensors,
)

__all__ = [
    "ARCHITECTURES",
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "ONNX_INPUT",
    "ONNX_OUTPUT",
    "OUTPUT_KINDS",
    "TabularModel",
    "build_model",
    "check_spec",
    "export_onnx",
    "load_model",
    "model_from_state",
    "model_spec",
    "register",
    "save_model",
    "state_tensors",
]
