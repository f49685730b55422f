"""Model runtimes: ONNX Runtime (the default for serving) and PyTorch (the fallback), one interface.

A runtime maps a float32 feature matrix to the network's raw outputs (logits or values); ``scores`` turns
those into probabilities or values with the same function training uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
import torch

from leanml.models import ONNX_INPUT
from leanml.models.predict import to_predictions


class Runtime(Protocol):
    """Something that runs the network on a float32 matrix."""

    name: str

    def outputs(self, features: np.ndarray) -> np.ndarray:
        """Raw network outputs, ``[n, n_outputs]``."""
        ...


class OnnxRuntime:
    """ONNX Runtime on the CPU, sized for low latency at batch 1 and good throughput on batches."""

    name = "onnx"

    def __init__(self, model: bytes | str | Path, threads: int | None = None) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning intra-op threads busy-wait between calls; in a server that idles between small batches
        # they burned about a third of the CPU (bench/serve.py), so they sleep instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
        self.output_name = self.session.get_outputs()[0].name

    def outputs(self, features: np.ndarray) -> np.ndarray:
        """Run the graph; ``features`` must be float32 ``[n, n_inputs]``."""
        matrix = np.ascontiguousarray(features, dtype=np.float32)
        return self.session.run([self.output_name], {ONNX_INPUT: matrix})[0]


class TorchRuntime:
    """The PyTorch module itself, in eval mode without autograd."""

    name = "torch"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    def outputs(self, features: np.ndarray) -> np.ndarray:
        """Forward pass on the CPU."""
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
            return self.model(tensor).numpy()


def scores(raw: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Predictions from raw network outputs, in :func:`leanml.models.predict.to_predictions`'s shapes.

    ``binary``: ``[n]`` probability of class index 1; ``multiclass``: ``[n, K]``; ``regression``: ``[n]``.
    """
    tensor = torch.from_numpy(np.asarray(raw, dtype=np.float32).reshape(len(raw), -1))
    return to_predictions(spec["task"], tensor).numpy().astype(np.float64)


def is_int8(onnx_model: bytes) -> bool:
    """Whether a graph was dynamically quantized (it holds ``DynamicQuantizeLinear`` nodes)."""
    return b"DynamicQuantizeLinear" in onnx_model
