"""Export a model to ONNX for serving: input ``features`` (float32, ``[batch, n_inputs]``, dynamic batch).

Uses the ``torch.export``-based exporter (``dynamo=True``, the default since PyTorch 2.9; it needs
onnxscript). The output ``output`` is what the PyTorch model returns: logits, or values in the target's
units for regression (see :class:`~leanml.models.registry.TabularModel`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from leanml.data.io import atomic_path

ONNX_INPUT = "features"
ONNX_OUTPUT = "output"
EXAMPLE_BATCH = 4  # not 0 or 1, which torch.export would specialise on


def export_onnx(model: torch.nn.Module, spec: dict[str, Any], path: str | Path) -> Path:
    """Write ``model`` (in eval mode, on the CPU; the argument itself is left untouched) to ``path``."""
    path = Path(path)
    frozen = copy.deepcopy(model).to("cpu").eval()
    example = torch.zeros(EXAMPLE_BATCH, spec["n_inputs"], dtype=torch.float32)
    with _quiet_exporter():
        program = torch.onnx.export(
            frozen,
            (example,),
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            verbose=False,
        )
    if program is None:  # pragma: no cover - only the legacy exporter returns None
        raise RuntimeError("the ONNX exporter returned no program")
    with atomic_path(path) as tmp:
        program.save(str(tmp))
    return path


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter logs notes about optional packages (torchvision) and emits deprecation warnings from
    # its own internals; neither is actionable for a leanml user.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_graph(model: torch.nn.Module, spec: dict[str, Any]) -> bytes:
    """The fp32 ONNX graph of ``model``, as bytes."""
    with tempfile.TemporaryDirectory(prefix="leanml-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(model, spec, path)
        return path.read_bytes()
