"""What one input tensor costs ONNX Runtime's Python binding per ``session.run`` at batch 1.

The serving graph takes one ``[N, 1]`` tensor per input column (SPEC §3.7), so a table's column count sets
a floor under every call that no model can lower. This times graphs that do next to nothing with ``k``
inputs: ``k`` DOUBLE columns joined by one ``Concat``, and ``k`` STRING columns passed through
``Identity`` (a string goes in and comes out, as the categorical inputs' encoders read them), ONNX
Runtime with one thread and spinning off, as leanml runs it. Prints µs per call and the slope per input.

Run: ``.venv/bin/python bench/ort_inputs.py`` (a few seconds).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from leanml.bundle.runtime import session_options


def session(k: int, kind: str) -> ort.InferenceSession:
    """A graph of ``k`` ``[N, 1]`` inputs of ``kind`` (``double`` or ``string``) that does next to nothing."""
    element = TensorProto.DOUBLE if kind == "double" else TensorProto.STRING
    inputs = [helper.make_tensor_value_info(f"c{i}", element, ["N", 1]) for i in range(k)]
    if kind == "double":
        nodes = [helper.make_node("Concat", [f"c{i}" for i in range(k)], ["y"], axis=1)]
        outputs = [helper.make_tensor_value_info("y", element, ["N", k])]
    else:
        nodes = [helper.make_node("Identity", [f"c{i}"], [f"o{i}"]) for i in range(k)]
        outputs = [helper.make_tensor_value_info(f"o{i}", element, ["N", 1]) for i in range(k)]
    graph = helper.make_graph(nodes, "inputs", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(
        model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"]
    )


def per_call_us(run: ort.InferenceSession, feed: dict[str, np.ndarray], calls: int) -> float:
    """Median over five rounds of the mean µs per ``run`` call."""
    for _ in range(calls // 10):
        run.run(None, feed)
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            run.run(None, feed)
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return float(np.median(rounds))


def main() -> None:
    """Time each input count and kind; print a markdown table and the cost per added input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,4,8,16,28,64", help="input counts")
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    args = parser.parse_args()
    counts = [int(k) for k in args.counts.split(",")]
    print(f"onnxruntime {ort.__version__}, one thread, batch 1\n")
    print("| inputs | DOUBLE → Concat µs | STRING → Identity µs |")
    print("|---:|---:|---:|")
    figures: dict[str, list[float]] = {"double": [], "string": []}
    for k in counts:
        row = []
        for kind, value in (("double", np.array([[1.0]])), ("string", np.array([["x"]], dtype=object))):
            us = per_call_us(session(k, kind), {f"c{i}": value for i in range(k)}, args.calls)
            figures[kind].append(us)
            row.append(f"{us:.1f}")
        print(f"| {k} | " + " | ".join(row) + " |")
    for kind, values in figures.items():
        slope = np.polyfit(counts, values, 1)[0]
        print(f"\n{kind}: {slope:.2f} µs per added input (least squares over the counts)")


if __name__ == "__main__":
    main()
