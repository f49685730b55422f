"""Batch-1 latency of teachers and their shrunk students, timed side by side, through what serves them.

For every ``TABLE/*/models/bench`` folder under ``--workdir`` (what ``bench/quality.py --students
--workdir DIR`` leaves: ``v1`` the teacher, ``v2`` its student) this loads both bundles and times, at batch
1 on the same test rows, in interleaved rounds (load from other processes falls on every contender alike):

* *served*: the graph the server runs (``Bundle.pipeline``: ``pipeline.onnx``'s packed twin, one input per
  kind of column) on packed arrays, as the server's reader makes them from JSON;
* *pipeline.onnx*: the contract graph itself on one array per column, as Triton or onnxruntime-node run it;
* *network*: ``model.onnx`` alone on the feature row.

Prints µs (median of the rounds' medians) and the teacher / student ratios.

Run: ``.venv/bin/python bench/student_latency.py --workdir /tmp/qwork`` (a minute per table).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from graph_ops import timed
from leanml.bundle.artifact import MODEL_ONNX, PIPELINE_ONNX, REFERENCE, load_bundle, reference_inputs
from leanml.bundle.graph import FEATURES, graph_inputs
from leanml.bundle.runtime import OnnxRuntime, PipelineRuntime

ROUNDS = 15


def contenders(folder: Path) -> dict[str, Callable[[], object]]:
    """The three calls to time for one bundle, on its first reference row."""
    bundle = load_bundle(folder, threads=1)
    row = reference_inputs(pl.read_parquet(folder / REFERENCE))[:1]
    feed = graph_inputs(row, bundle.state)
    contract = PipelineRuntime(folder / PIPELINE_ONNX, threads=1)
    features = contract.run(feed)[FEATURES]
    network = OnnxRuntime(folder / MODEL_ONNX, threads=1)
    served = bundle.pipeline.inputs(feed)  # what the server's reader makes from JSON
    return {
        "served": lambda: bundle.pipeline.run_inputs(served),
        "pipeline.onnx": lambda: contract.run(feed),
        "network": lambda: network.outputs(features),
    }


def main() -> None:
    """Time every teacher / student pair under ``--workdir`` and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="bench/quality.py's --workdir")
    parser.add_argument("--calls", type=int, default=400, help="calls per contender per round")
    args = parser.parse_args()
    stores = sorted(p for p in args.workdir.glob("*/*/models/bench") if (p / "v2").is_dir())
    if not stores:
        raise SystemExit(f"no teacher / student pairs (models/bench/v1 and v2) under {args.workdir}")
    heads = ["served, teacher → student µs", "faster", "pipeline.onnx µs", "faster", "network µs", "faster"]
    print("| table | " + " | ".join(heads) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for store in stores:
        calls = {version: contenders(store / version) for version in ("v1", "v2")}
        timings: dict[tuple[str, str], list[float]] = {}
        for _ in range(ROUNDS):
            for version, named in calls.items():
                for name, call in named.items():
                    call()  # one untimed call: the round's first call pays for cold caches
                    timings.setdefault((version, name), []).append(timed(call, args.calls))
        cells = []
        for name in ("served", "pipeline.onnx", "network"):
            teacher = float(np.median(timings[("v1", name)]))
            student = float(np.median(timings[("v2", name)]))
            cells += [f"{teacher:.1f} → {student:.1f}", f"**{teacher / student:.2f}×**"]
        print(f"| {store.parts[-4]} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
