"""Runtimes: the serving graph (``pipeline.onnx``), and the bare network in ONNX Runtime or PyTorch.

:class:`PipelineRuntime` runs the whole serving graph: raw columns in, answers and per-row checks out. It
is what the server runs. :class:`OnnxRuntime` and :class:`TorchRuntime` map a float32 feature matrix to
the network's raw outputs (logits or values), for batch prediction over the Polars path and for checks;
``scores`` turns those into probabilities or values with the same rule as training, in numpy.

Nothing here imports PyTorch until a :class:`TorchRuntime` is made, so the serving process never does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import onnxruntime as ort

from leanml.bundle.graph import FEATURES, FLAGS, PROBLEMS, PackedInput, pack

if TYPE_CHECKING:
    import torch

ONNX_INPUT = "features"  # the exported network's input (see leanml.models.export)


class Runtime(Protocol):
    """Something that runs the network on a float32 matrix."""

    name: str

    def outputs(self, features: np.ndarray) -> np.ndarray:
        """Raw network outputs, ``[n, n_outputs]``."""
        ...


def session_options(threads: int | None) -> ort.SessionOptions:
    """CPU options sized for low latency at batch 1 and good throughput on batches."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning intra-op threads busy-wait between calls; in a server that idles between small batches
    # they burned about a third of the CPU (bench/serve.py), so they sleep instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _session(model: bytes | str | Path, threads: int | None) -> ort.InferenceSession:
    source = model if isinstance(model, bytes) else str(model)
    options = session_options(threads)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxRuntime:
    """The exported network in ONNX Runtime on the CPU."""

    name = "onnx"

    def __init__(self, model: bytes | str | Path, threads: int | None = None) -> None:
        self.session = _session(model, threads)
        self.output_name = self.session.get_outputs()[0].name
        self._run_options = ort.RunOptions()

    def outputs(self, features: np.ndarray) -> np.ndarray:
        """Run the graph; ``features`` must be float32 ``[n, n_inputs]``."""
        matrix = np.ascontiguousarray(features, dtype=np.float32)
        return self.session.run([self.output_name], {ONNX_INPUT: matrix}, self._run_options)[0]


class TorchRuntime:
    """The PyTorch module itself, in eval mode without autograd."""

    name = "torch"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    def outputs(self, features: np.ndarray) -> np.ndarray:
        """Forward pass on the CPU."""
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
            return self.model(tensor).numpy()


class PipelineRuntime:
    """The serving graph: raw columns in, answers, ``problems`` and ``flags`` out.

    ``packing`` (:func:`leanml.bundle.graph.packed_inputs`) says that the graph takes one ``[N, k]``
    tensor per kind of column (``build_pipeline(..., packed=True)``); :meth:`run` still takes one array
    per column and packs them.
    """

    def __init__(
        self,
        model: bytes | str | Path,
        threads: int | None = None,
        packing: Sequence[PackedInput] | None = None,
    ) -> None:
        self.session = _session(model, threads)
        self.packing = list(packing) if packing else None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._empty: list[str] = []
        self._plans: dict[tuple[str, ...] | None, _Plan] = {}
        if self.packing is not None:  # a check output with no columns is left out of the packed graph
            self._empty = [name for name in (PROBLEMS, FLAGS) if name not in self.output_names]
            answers = [name for name in self.output_names if name not in (PROBLEMS, FLAGS, FEATURES)]
            tail = [FEATURES] if FEATURES in self.output_names else []
            self.output_names = [*answers, PROBLEMS, FLAGS, *tail]  # pipeline.onnx's order
        # Made once: a run without options makes its own, which costs a few µs of a ~40 µs call at batch 1.
        self._run_options = ort.RunOptions()
        if self.packing is not None and self.input_names != [entry.name for entry in self.packing]:
            raise ValueError(f"the graph's inputs {self.input_names} are not the packed inputs")

    def run(
        self, feed: Mapping[str, np.ndarray], names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The outputs ``names`` (all when omitted) of the graph for a per-column ``feed``
        (:func:`leanml.bundle.graph.graph_inputs`, :func:`leanml.bundle.feed.read_batch`)."""
        return self.run_inputs(self.inputs(feed), names)

    def inputs(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """The graph's own inputs for a per-column ``feed``: packed when the graph packs."""
        return feed if self.packing is None else pack(feed, self.packing)

    def run_inputs(
        self, inputs: Mapping[str, np.ndarray], names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The outputs ``names`` (all when omitted) for the graph's own inputs: packed when it packs
        (:func:`leanml.bundle.feed.read_batch` with ``packing=self.packing`` makes them)."""
        key = None if names is None else tuple(names)
        plan = self._plans.get(key)
        if plan is None:  # made once per list of names: at batch 1 each µs of Python shows
            if len(self._plans) >= _PLANS:
                self._plans.clear()
            wanted = self.output_names if names is None else list(names)
            computed = [name for name in wanted if name not in self._empty]
            plan = self._plans[key] = _Plan(wanted, computed, len(computed) < len(wanted))
        feed = inputs if type(inputs) is dict else dict(inputs)
        outputs = self.session.run(plan.computed, feed, self._run_options)
        if not plan.fills:
            return dict(zip(plan.wanted, outputs, strict=True))
        got = dict(zip(plan.computed, outputs, strict=True))
        rows = len(next(iter(feed.values())))
        return {name: got[name] if name in got else np.zeros((rows, 0), dtype=bool) for name in plan.wanted}


class _Plan(NamedTuple):
    """What :meth:`PipelineRuntime.run_inputs` asks the session for, and whether it adds empty checks."""

    wanted: list[str]
    computed: list[str]
    fills: bool


_PLANS = 16
"""Lists of output names a runtime remembers (callers ask for one or two)."""


def scores(raw: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Predictions from raw network outputs, in :func:`leanml.models.predict.to_predictions`'s shapes.

    ``binary``: ``[n]`` probability of class index 1 (sigmoid); ``multiclass``: ``[n, K]`` (softmax);
    ``regression``: ``[n]``. Computed in float32 like the network, returned as float64.
    """
    logits = np.asarray(raw, dtype=np.float32).reshape(len(raw), -1)
    task = spec["task"]
    with np.errstate(over="ignore"):
        if task == "binary":
            result = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        elif task == "multiclass":
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            result = shifted / shifted.sum(axis=1, keepdims=True)
        elif task == "regression":
            result = logits[:, 0]
        else:
            raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")
    return result.astype(np.float64)


def is_int8(onnx_model: bytes) -> bool:
    """Whether a graph was dynamically quantized (it holds ``DynamicQuantizeLinear`` nodes)."""
    return b"DynamicQuantizeLinear" in onnx_model
