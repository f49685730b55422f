"""int8 quantization with ONNX Runtime's dynamic quantization.

Weights of the matrix multiplications are stored as int8 (per output channel by default, one scale per
row); activations are quantized on the fly per batch (``DynamicQuantizeLinear``) and the products run in
integer arithmetic. There is no calibration data to pick, and the graph keeps its float32 inputs and
outputs, so it is served exactly like the fp32 one.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic

from leanml.bundle.runtime import is_int8

__all__ = ["is_int8", "quantize_int8"]


def quantize_int8(onnx_model: bytes, per_channel: bool = True) -> bytes:
    """The int8 version of an fp32 ONNX graph (as bytes)."""
    with tempfile.TemporaryDirectory(prefix="leanml-int8-") as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(onnx_model)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs advice about pre-processing at WARNING
        try:
            quantize_dynamic(source, target, per_channel=per_channel, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        return target.read_bytes()
