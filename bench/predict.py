"""Batch prediction throughput: ``leanml predict`` over a 1,000,000-row file, ONNX Runtime vs PyTorch.

Builds (once, cached under bench/out/) a synthetic table and a small MLP trained on it, then times
streaming prediction file → file, and the in-memory ``Bundle.predict`` on the same rows, with both
runtimes. Prints rows per second and the ratios.

    .venv/bin/python bench/predict.py [--rows 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import polars as pl

from leanml.bundle import load_bundle
from leanml.bundle.predict import predict_file
from leanml.bundle.store import ModelStore
from leanml.config import parse_config
from leanml.data.synthetic import SyntheticSpec, write_synthetic
from leanml.training.stage import train_and_bundle

OUT = Path(__file__).parent / "out" / "predict"


def build(rows: int) -> tuple[Path, Path]:
    """The data file and a trained bundle for it (cached)."""
    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / f"synthetic-{rows}.parquet"
    if not data.exists():
        write_synthetic(SyntheticSpec(rows=rows, seed=1), data)
    store = OUT / "models"
    if not ModelStore(store).versions("bench"):
        train_file = OUT / "train.parquet"
        write_synthetic(SyntheticSpec(rows=100_000, seed=2), train_file)
        columns = {f"num_{i}": {"type": "numeric"} for i in range(10)}
        columns |= {f"cat_{i}": {"type": "categorical", "min_frequency": 20} for i in range(5)}
        columns["event_time"] = {"type": "datetime", "parts": ["hour", "dayofweek", "month"]}
        config = parse_config(
            {
                "name": "bench",
                "data": {"train": str(train_file)},
                "target": "label",
                "columns": columns,
                "model": {"arch": "mlp", "hidden": [128, 64]},
                "train": {"epochs": 1, "batch_size": 1024},
                "workdir": str(OUT / "runs"),
                "store": str(store),
            }
        )
        train_and_bundle(config)
    return data, ModelStore(store).resolve("bench").path


def timed(repeats: int, work) -> float:  # type: ignore[no-untyped-def]
    """Median wall time of ``work()`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data, bundle_path = build(args.rows)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; polars {pl.__version__}")
    print(f"{args.rows:,} rows, bundle {bundle_path}")
    frame = pl.read_parquet(data)
    results: dict[str, float] = {}
    for runtime in ("onnx", "torch"):
        bundle = load_bundle(bundle_path, runtime=runtime)
        target = OUT / f"predictions-{runtime}.parquet"
        results[f"file → file, {runtime}"] = timed(
            args.repeats, lambda b=bundle, t=target: predict_file(b, str(data), t)
        )
        results[f"in memory, {runtime}"] = timed(args.repeats, lambda b=bundle: b.predict(frame))
    same = (
        pl.read_parquet(OUT / "predictions-onnx.parquet")["proba_1"]
        - pl.read_parquet(OUT / "predictions-torch.parquet")["proba_1"]
    )
    print(f"max |onnx − torch| probability: {same.abs().max():.2e}")
    print(f"\n{'path':<26}{'seconds':>10}{'rows/s':>14}")
    for name, seconds in results.items():
        print(f"{name:<26}{seconds:>10.2f}{args.rows / seconds:>14,.0f}")
    base = results["file → file, torch"]
    print(f"\nstreaming ONNX Runtime vs PyTorch: {base / results['file → file, onnx']:.2f}×")


if __name__ == "__main__":
    main()
