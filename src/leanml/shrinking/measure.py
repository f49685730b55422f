"""What every shrink step is judged by: size, latency on ONNX Runtime, and the metric.

* parameters of the PyTorch model, bytes of the served graph (``model.onnx``) and of the graph
  compressed with zlib (what unstructured pruning saves);
* p50 and p99 latency of one ``session.run`` at batch 1 and at batch 1024, on ONNX Runtime with one
  intra-op thread (the figure a single serving thread gives, and stable on a busy machine), after warm-up
  (see :func:`latency`). With a :class:`Serving` (what shrink passes), the graph timed is the one clients
  meet, the whole serving graph (preprocessing + network + head, ``pipeline.onnx``) on raw rows; without
  one, the bare network on validation feature rows;
* every metric of the task on the validation split, scored from the served graph's outputs — so an int8
  graph is judged by what it serves, not by its fp32 weights.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from leanml.bundle.artifact import packed_pipeline
from leanml.bundle.runtime import OnnxRuntime, scores
from leanml.data.state import PreprocessState
from leanml.metrics import evaluate, metric_value

SCORE_BATCH_ROWS = 8192
LARGE_BATCH = 1024
WARMUP_RUNS = 20
ROUNDS = 5


@dataclass(frozen=True)
class Serving:
    """What the serving graph of a candidate is built from and timed on: the state and raw input rows."""

    state: PreprocessState
    feed: dict[str, np.ndarray]
    """Raw rows as the graph's inputs (:func:`leanml.bundle.graph.graph_inputs`), ``[n, 1]`` each."""


@dataclass(frozen=True)
class Measurement:
    """One model's figures (see the module docstring); latencies in microseconds."""

    parameters: int
    onnx_bytes: int
    compressed_bytes: int
    p50_batch1_us: float
    p99_batch1_us: float
    p50_batch1024_us: float
    p99_batch1024_us: float
    metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def measure(
    onnx_model: bytes,
    parameters: int,
    spec: dict[str, Any],
    features: np.ndarray,
    target: np.ndarray,
    runs: int,
    serving: Serving | None = None,
) -> tuple[Measurement, np.ndarray]:
    """Measure a graph on the validation ``features`` and ``target`` (see the module docstring); also
    return its predictions on them."""
    session = OnnxRuntime(onnx_model, threads=1)
    predictions = predict_graph(session, spec, features)
    metrics = evaluate(spec["task"], target, predictions) if len(predictions) else {}
    call = timed_call(onnx_model, spec, features, serving)
    p50_1, p99_1 = latency(call(1), runs)
    p50_k, p99_k = latency(call(LARGE_BATCH), max(10, runs // 50))
    figures = Measurement(
        parameters=parameters,
        onnx_bytes=len(onnx_model),
        compressed_bytes=len(zlib.compress(onnx_model, 6)),
        p50_batch1_us=p50_1,
        p99_batch1_us=p99_1,
        p50_batch1024_us=p50_k,
        p99_batch1024_us=p99_k,
        metrics=metrics,
    )
    return figures, predictions


def predict_graph(session: OnnxRuntime, spec: dict[str, Any], features: np.ndarray) -> np.ndarray:
    """The graph's predictions (probabilities or values) for ``features``, in chunks."""
    parts = [
        scores(session.outputs(features[start : start + SCORE_BATCH_ROWS]), spec)
        for start in range(0, len(features), SCORE_BATCH_ROWS)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def score_graph(
    session: OnnxRuntime, spec: dict[str, Any], features: np.ndarray, target: np.ndarray
) -> dict[str, float]:
    """Every metric of the task, from the graph's predictions on ``features``."""
    if len(features) == 0:
        return {}
    return evaluate(spec["task"], target, predict_graph(session, spec, features))


def bootstrap_drops(
    task: str,
    metric: str,
    target: np.ndarray,
    parent: np.ndarray,
    candidate: np.ndarray,
    drop: Callable[[float, float], float],
    resamples: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """The drop ``drop(parent_value, candidate_value)`` on ``resamples`` bootstrap resamples of the rows,
    the same rows for both models (a paired bootstrap: what varies is which rows were drawn)."""
    rng = np.random.default_rng(seed)
    drops = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(0, len(target), len(target))
        y = target[rows]
        drops[i] = drop(
            metric_value(task, metric, y, parent[rows]), metric_value(task, metric, y, candidate[rows])
        )
    return drops


def timed_call(
    onnx_model: bytes, spec: dict[str, Any], features: np.ndarray, serving: Serving | None
) -> Callable[[int], Callable[[], object]]:
    """``rows → a call that runs the graph on that many rows``: the serving graph on raw rows when
    ``serving`` is given, else the bare network on feature rows."""
    if serving is None:
        session = OnnxRuntime(onnx_model, threads=1)

        def network(rows: int) -> Callable[[], object]:
            batch = repeat_rows(features, rows)
            return lambda: session.outputs(batch)

        return network
    pipeline = packed_pipeline(serving.state, onnx_model, spec, threads=1)  # as the server runs it
    available = len(next(iter(serving.feed.values())))
    if available == 0:
        raise ValueError("no raw rows to time the serving graph on")

    def whole(rows: int) -> Callable[[], object]:
        index = np.arange(rows) % available
        feed = {name: np.ascontiguousarray(values[index]) for name, values in serving.feed.items()}
        inputs = pipeline.inputs(feed)  # made before the clock, as the server's reader makes them
        return lambda: pipeline.run_inputs(inputs)

    return whole


def latency(call: Callable[[], object], runs: int) -> tuple[float, float]:
    """p50 and p99 wall time of ``call()`` over ``runs`` calls, in microseconds.

    The calls are made in ``ROUNDS`` rounds; p50 is the median of the rounds' medians (a burst of load from
    another process spoils one round, not the figure) and p99 is over all calls.
    """
    for _ in range(WARMUP_RUNS):
        call()
    per_round = max(runs // ROUNDS, 2)
    times = np.empty((ROUNDS, per_round))
    for r in range(ROUNDS):
        for i in range(per_round):
            start = time.perf_counter_ns()
            call()
            times[r, i] = time.perf_counter_ns() - start
    p50 = float(np.median(np.median(times, axis=1))) / 1000.0
    p99 = float(np.percentile(times, 99)) / 1000.0
    return p50, p99


def side_by_side(
    graphs: list[bytes],
    features: np.ndarray,
    runs: int,
    spec: dict[str, Any] | None = None,
    serving: Serving | None = None,
) -> list[float]:
    """p50 latency at batch 1 of each graph (µs), timed in interleaved rounds so that load from other
    processes falls on every graph alike: the fair way to decide which of two graphs is faster. With
    ``serving`` (and the ``spec`` the graphs share), each is timed as its whole serving graph."""
    calls = [timed_call(graph, spec or {}, features, serving)(1) for graph in graphs]
    rounds: list[list[float]] = [[] for _ in graphs]
    for _ in range(ROUNDS):
        for timings, call in zip(rounds, calls, strict=True):
            timings.append(latency(call, max(runs // ROUNDS, 10))[0])
    return [float(np.median(timings)) for timings in rounds]


def repeat_rows(features: np.ndarray, count: int) -> np.ndarray:
    """``count`` rows of ``features`` (repeated when there are fewer), float32 and contiguous."""
    if len(features) == 0:
        raise ValueError("no validation rows to time the model on")
    index = np.arange(count) % len(features)
    return np.ascontiguousarray(features[index], dtype=np.float32)
