"""Serving cost per batch without HTTP: the serving graph vs the Polars path, side by side in one run.

Both paths start from what the server holds after parsing a request body (one dict of JSON values per
column per request) and end with answers (labels and probabilities):

* graph: :meth:`leanml.serve.engine.ServedModel.infer` — each request's values to numpy arrays, one
  ``pipeline.onnx`` run for the batch, answers and per-row checks sliced back per request;
* polars: what the server did before the serving graph — the requests' columns merged into one Polars
  frame, the bundle's preprocessing expressions collected (``transform``, serve mode), the feature matrix
  through ``model.onnx``, then scores → labels.

Measured for a batch of 1 one-row request and of 64 one-row requests, in interleaved rounds (the machine
may be shared), median and middle half per path; the ratio is polars / graph. The bundle is the one
``bench/serve.py`` trains (cached under ``bench/out/serve/``).

Run: ``.venv/bin/python bench/graph.py`` (``--rounds`` and ``--calls`` to change the effort).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from leanml.bundle import load_bundle
from leanml.data.preprocessor import columns_frame, feature_matrix, transform
from leanml.metrics import classify
from leanml.serve.engine import Job, ServedModel
from serve import INPUTS, MODEL, OUT, ensure_store, request_rows


def jobs_of(rows: list[dict[str, Any]], loop: asyncio.AbstractEventLoop) -> list[Job]:
    """One one-row job per row, as the server queues them."""
    return [
        Job(columns={n: [row[n]] for n in INPUTS}, rows=1, future=loop.create_future(), deadline=1e18)
        for row in rows
    ]


def polars_path(bundle: Any, jobs: list[Job]) -> list[Any]:
    """The pre-graph serving path: merge, Polars preprocessing, model.onnx, scores → labels."""
    merged = {name: [v for job in jobs for v in job.columns[name]] for name in INPUTS}
    frame = columns_frame(merged, sum(job.rows for job in jobs))
    matrix = feature_matrix(transform(frame, bundle.state, mode="serve"), bundle.state, np.float32)
    classes, _ = classify(bundle.task, bundle.scores(matrix))
    return [bundle.labels[i] for i in classes]


def timed(work: Any, calls: int) -> float:
    """Median seconds of one call of ``work`` over ``calls`` calls."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Run the comparison and print a table with ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=200, help="calls per path per round")
    args = parser.parse_args()

    store = ensure_store(OUT, retrain=False)
    bundle = load_bundle(store / MODEL / "v1", threads=1)
    served = ServedModel(bundle)
    rows = request_rows(64)
    loop = asyncio.new_event_loop()
    cases = {"1 row": jobs_of(rows[:1], loop), "64 one-row requests": jobs_of(rows, loop)}

    for jobs in cases.values():  # same answers, and warm both paths
        graph_labels = [a.predictions[0] for a in served.infer(jobs)]
        assert graph_labels == polars_path(bundle, jobs), "the two paths disagree"

    print(f"{'batch':<22}{'graph µs':>12}{'polars µs':>12}{'polars / graph':>16}")
    for name, jobs in cases.items():
        graph_us, polars_us = [], []
        for _ in range(args.rounds):
            graph_us.append(timed(lambda jobs=jobs: served.infer(jobs), args.calls) * 1e6)
            polars_us.append(timed(lambda jobs=jobs: polars_path(bundle, jobs), args.calls // 4 or 1) * 1e6)
        g, p = statistics.median(graph_us), statistics.median(polars_us)
        print(f"{name:<22}{g:>12.1f}{p:>12.1f}{p / g:>15.1f}×")
    loop.close()


if __name__ == "__main__":
    main()
