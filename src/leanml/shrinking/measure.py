"""What every shrink step is judged by: size, latency on ONNX Runtime, and the metric.

* parameters of the PyTorch model, bytes of the served graph (``model.onnx``) and of the graph
  compressed with zlib (what unstructured pruning saves);
* p50 and p99 latency of one ``session.run`` at batch 1 and at batch 1024, on ONNX Runtime with one
  intra-op thread (the figure a single serving thread gives, and stable on a busy machine), after warm-up,
  on real validation rows (see :func:`latency`);
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

from leanml.bundle.runtime import OnnxRuntime, scores
from leanml.metrics import evaluate, metric_value

SCORE_BATCH_ROWS = 8192
LARGE_BATCH = 1024
WARMUP_RUNS = 20
ROUNDS = 5


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
) -> tuple[Measurement, np.ndarray]:
    """Measure a graph on the validation ``features`` and ``target`` (see the module docstring); also
    return its predictions on them."""
    session = OnnxRuntime(onnx_model, threads=1)
    predictions = predict_graph(session, spec, features)
    metrics = evaluate(spec["task"], target, predictions) if len(predictions) else {}
    p50_1, p99_1 = latency(session, repeat_rows(features, 1), runs)
    p50_k, p99_k = latency(session, repeat_rows(features, LARGE_BATCH), max(10, runs // 50))
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


def latency(session: OnnxRuntime, batch: np.ndarray, runs: int) -> tuple[float, float]:
    """p50 and p99 wall time of ``session.outputs(batch)`` over ``runs`` calls, in microseconds.

    The calls are made in ``ROUNDS`` rounds; p50 is the median of the rounds' medians (a burst of load from
    another process spoils one round, not the figure) and p99 is over all calls.
    """
    for _ in range(WARMUP_RUNS):
        session.outputs(batch)
    per_round = max(runs // ROUNDS, 2)
    times = np.empty((ROUNDS, per_round))
    for r in range(ROUNDS):
        for i in range(per_round):
            start = time.perf_counter_ns()
            session.outputs(batch)
            times[r, i] = time.perf_counter_ns() - start
    p50 = float(np.median(np.median(times, axis=1))) / 1000.0
    p99 = float(np.percentile(times, 99)) / 1000.0
    return p50, p99


def side_by_side(graphs: list[bytes], features: np.ndarray, runs: int) -> list[float]:
    """p50 latency at batch 1 of each graph (µs), timed in interleaved rounds so that load from other
    processes falls on every graph alike: the fair way to decide which of two graphs is faster."""
    sessions = [OnnxRuntime(graph, threads=1) for graph in graphs]
    batch = repeat_rows(features, 1)
    rounds: list[list[float]] = [[] for _ in graphs]
    for _ in range(ROUNDS):
        for timings, session in zip(rounds, sessions, strict=True):
            timings.append(latency(session, batch, max(runs // ROUNDS, 10))[0])
    return [float(np.median(timings)) for timings in rounds]


def repeat_rows(features: np.ndarray, count: int) -> np.ndarray:
    """``count`` rows of ``features`` (repeated when there are fewer), float32 and contiguous."""
    if len(features) == 0:
        raise ValueError("no validation rows to time the model on")
    index = np.arange(count) % len(features)
    return np.ascontiguousarray(features[index], dtype=np.float32)
