"""Tune: TPE vs random vs grid search over the same space, and parallel trials (``jobs 2`` vs ``jobs 1``).

On a slice of NYC flights 2013 (target: arrival delay over 15 minutes, validation ROC AUC), every sampler
searches the same space: the learning rate (log-uniform in [1e-4, 1e-1]; the grid takes 4 values of it),
the optimizer (sgd, momentum, adam, adamw) and the hidden layers ([32], [64, 32], [128, 64]) — a grid of
48 points. Random and TPE run a third of the grid's trials (16), for several seeds. Reported:

* the best validation score reached after k trials (mean over seeds; the grid in its seeded order);
* after how many trials each TPE / random run reaches the grid's best (the best of all 48 points) within
  the noise: the standard deviation of the score when the grid's best point is trained with other
  ``train.seed`` values (SPEC §4 target: TPE within 1/3 of the grid's trials);
* throughput (trials per minute) of one random search with ``jobs 2`` vs ``jobs 1``, with longer
  trials (``--parallel-epochs``): over the whole call, and once the worker processes are up (from the
  end of the first trial to the end of the last).

Run: ``.venv/bin/python bench/tune.py`` (``--quick`` for a small smoke run; ``--rows --epochs --seeds``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from leanml.config import Config, parse_config
from leanml.datasets import flights_frame
from leanml.tuning import TuneResult, run_tune
from leanml.tuning.study import STUDY_NAME, open_storage

COLUMNS: dict[str, Any] = {
    "dep_delay": {"type": "numeric", "outliers": {"method": "iqr", "k": 3.0, "action": "clip"}},
    "sched_dep_time": {"type": "numeric"},
    "sched_arr_time": {"type": "numeric"},
    "distance": {"type": "numeric", "scale": "minmax"},
    "carrier": {"type": "categorical"},
    "origin": {"type": "categorical"},
    "dest": {"type": "categorical", "min_frequency": 100},
    "time_hour": {"type": "datetime", "parts": ["hour", "dayofweek", "month"]},
}
LEARNING_RATES = [1e-4, 1e-3, 1e-2, 1e-1]
OPTIMIZERS = ["sgd", "momentum", "adam", "adamw"]
HIDDEN = [[32], [64, 32], [128, 64]]


def main() -> None:
    """Write the data, run the grid, then random and TPE per seed, then jobs 1 vs 2; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast run (a smoke test)")
    parser.add_argument("--rows", type=int, default=30_000, help="flights rows (spread over the year)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--tolerance", type=float, default=None, help="'reached' = within this (default: noise)"
    )
    parser.add_argument("--parallel-trials", type=int, default=16, help="trials of the jobs comparison")
    parser.add_argument(
        "--parallel-epochs", type=int, default=12, help="epochs per trial of the jobs comparison"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side of the jobs comparison")
    parser.add_argument("--part", choices=["all", "samplers", "jobs"], default="all")
    parser.add_argument("--workdir", default=None, help="where data and outputs go (default: a temp folder)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.epochs, args.seeds, args.parallel_trials, args.parallel_epochs = 5_000, 2, 2, 4, 2
        args.repeats = 1
    if args.workdir:
        run(args, Path(args.workdir))
        return
    with tempfile.TemporaryDirectory(prefix="leanml-bench-tune-") as workdir:
        run(args, Path(workdir))


def run(args: argparse.Namespace, workdir: Path) -> None:
    """The whole benchmark in ``workdir``."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    workdir.mkdir(parents=True, exist_ok=True)
    frame = flights_frame().drop_nulls("delayed").collect()
    frame = frame.gather_every(max(1, frame.height // args.rows)).head(args.rows)
    data = workdir / "flights.parquet"
    frame.write_parquet(data)
    space: dict[str, Any] = {
        "train.lr": LEARNING_RATES if not args.quick else LEARNING_RATES[1:3],
        "train.optimizer": OPTIMIZERS if not args.quick else ["sgd", "adam"],
        "model.hidden": HIDDEN if not args.quick else HIDDEN[:2],
    }
    grid_size = len(space["train.lr"]) * len(space["train.optimizer"]) * len(space["model.hidden"])
    budget = max(1, grid_size // 3)
    continuous = {**space, "train.lr": {"log_uniform": [min(space["train.lr"]), max(space["train.lr"])]}}
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), optuna {optuna.__version__}"
    )
    print(
        f"data: {frame.height:,} flights, {args.epochs} epochs per trial; grid {grid_size} points; "
        f"random and TPE {budget} trials x {args.seeds} seeds\n"
    )

    if args.part in ("all", "samplers"):
        compare_samplers(args, data, workdir, space, continuous, grid_size, budget)
    if args.part in ("all", "jobs"):
        compare_jobs(args, data, workdir, continuous)


def compare_samplers(
    args: argparse.Namespace,
    data: Path,
    workdir: Path,
    space: dict[str, Any],
    continuous: dict[str, Any],
    grid_size: int,
    budget: int,
) -> None:
    """The grid once, the noise of its best point, then TPE and random per seed; print the tables."""
    started = time.perf_counter()
    grid = _tune(data, workdir / "grid", space, sampler="grid", seed=0, epochs=args.epochs)
    grid_seconds = time.perf_counter() - started
    grid_best = grid.best.value
    print(f"grid: {len(grid.trials)} trials in {grid_seconds:.0f}s, best {grid.metric} {grid_best:.4f}")
    print(f"  best point: {grid.best.values}")
    # The noise: the grid's best point trained with three other seeds (a grid over train.seed).
    noise_space = {key: [value] for key, value in grid.best.values.items()} | {"train.seed": [1, 2, 3]}
    noise = _tune(data, workdir / "noise", noise_space, "grid", seed=0, epochs=args.epochs)
    scores = [grid_best] + [r.value for r in noise.trials if r.value is not None]
    tolerance = args.tolerance if args.tolerance is not None else statistics.stdev(scores)
    print(
        f"  the same point with train.seed 0-3: {', '.join(f'{v:.4f}' for v in scores)}; "
        f"'reached' = within {tolerance:.4f} of the grid's best\n"
    )

    curves: dict[str, list[list[float]]] = {"grid": [_best_so_far(grid)]}
    reached: dict[str, list[int | None]] = {"tpe": [], "random": []}
    for seed in range(args.seeds):
        for sampler in ("tpe", "random"):
            result = _tune(
                data, workdir / f"{sampler}-{seed}", continuous, sampler, seed, args.epochs, trials=budget
            )
            curve = _best_so_far(result)
            curves.setdefault(sampler, []).append(curve)
            hit = next((i + 1 for i, v in enumerate(curve) if v >= grid_best - tolerance), None)
            reached[sampler].append(hit)
            print(
                f"{sampler:>6} seed {seed}: best {curve[-1]:.4f} "
                f"({result.best.values}); reaches the grid's best at trial {hit or '—'}"
            )

    checkpoints = sorted({k for k in (1, 2, 4, 8, budget, grid_size) if k <= grid_size})
    print(f"\nBest validation {grid.metric} after k trials (mean over seeds; grid: its seeded order)\n")
    print("| sampler | " + " | ".join(f"k={k}" for k in checkpoints) + " |")
    print("|---|" + "---:|" * len(checkpoints))
    for sampler, runs in curves.items():
        cells = []
        for k in checkpoints:
            values = [curve[k - 1] for curve in runs if len(curve) >= k]
            cells.append(f"{statistics.mean(values):.4f}" if values else "·")
        print(f"| {sampler} | " + " | ".join(cells) + " |")

    print(f"\nTrials to reach the grid's best ({grid_best:.4f}) within {tolerance:.4f}, budget {budget}\n")
    print("| sampler | per seed | reached | mean trials (when reached) | share of the grid's trials |")
    print("|---|---|---:|---:|---:|")
    for sampler, hits in reached.items():
        found = [h for h in hits if h is not None]
        mean = statistics.mean(found) if found else None
        share = f"{mean / grid_size:.2f}" if mean is not None else "·"
        per_seed = ", ".join(str(h) if h else "—" for h in hits)
        mean_text = f"{mean:.1f}" if mean is not None else "·"
        print(f"| {sampler} | {per_seed} | {len(found)}/{len(hits)} | {mean_text} | {share} |")


def compare_jobs(args: argparse.Namespace, data: Path, workdir: Path, continuous: dict[str, Any]) -> None:
    """The same random search with jobs 1 and 2, interleaved, best of ``--repeats``: trials per minute
    over the whole call and once the workers are up."""
    print(
        f"\nParallel trials: one random search, {args.parallel_trials} trials of {args.parallel_epochs} "
        f"epochs each; best of {args.repeats}, interleaved\n"
    )
    default_threads = torch.get_num_threads()
    # (jobs, torch threads of the tuning process): jobs 1 trains in this process; jobs 2 in workers with
    # cores // 2 threads each. "jobs 1, 1 thread" separates process parallelism from thread contention.
    sides = [(1, default_threads), (1, 1), (2, default_threads)]
    best: dict[str, tuple[float, float]] = {}
    for repeat in range(args.repeats):
        for jobs, threads in sides:
            label = f"{jobs} ({threads} thread{'s' if threads > 1 else ''})" if jobs == 1 else str(jobs)
            torch.set_num_threads(threads)
            started = time.perf_counter()
            result = _tune(
                data,
                workdir / f"jobs-{jobs}-{threads}-{repeat}",
                continuous,
                "random",
                seed=100,
                epochs=args.parallel_epochs,
                trials=args.parallel_trials,
                jobs=jobs,
            )
            seconds = time.perf_counter() - started
            torch.set_num_threads(default_threads)
            storage = open_storage(result.folder / "study.log")
            trials = optuna.load_study(study_name=STUDY_NAME, storage=storage).trials
            # Once started: from the end of the first trial (the workers are up by then) to the end of
            # the last, in which the other trials but the first of each worker ran.
            ends = sorted(t.datetime_complete for t in trials if t.datetime_complete is not None)
            running = (ends[-1] - ends[0]).total_seconds()
            rates = (args.parallel_trials / seconds * 60, (len(ends) - jobs) / running * 60)
            print(f"  jobs {label}, run {repeat + 1}: {seconds:.1f}s, {rates[0]:.1f} trials/min")
            previous = best.get(label, (0.0, 0.0))
            best[label] = (max(previous[0], rates[0]), max(previous[1], rates[1]))
    first = next(iter(best.values()))
    print("\n| jobs | trials/min | vs jobs 1 | trials/min once started | vs jobs 1 |")
    print("|---|---:|---:|---:|---:|")
    for label, (rate, steady) in best.items():
        print(f"| {label} | {rate:.1f} | {rate / first[0]:.2f}x | {steady:.1f} | {steady / first[1]:.2f}x |")


def _tune(
    data: Path,
    workdir: Path,
    space: dict[str, Any],
    sampler: str,
    seed: int,
    epochs: int,
    trials: int | None = None,
    jobs: int = 1,
) -> TuneResult:
    config = _config(data, workdir, space, sampler, seed, epochs, trials, jobs)
    return run_tune(config, bundle=False)


def _config(
    data: Path,
    workdir: Path,
    space: dict[str, Any],
    sampler: str,
    seed: int,
    epochs: int,
    trials: int | None,
    jobs: int,
) -> Config:
    return parse_config(
        {
            "name": "flights",
            "data": {"train": str(data), "split": {"validation": 0.2, "test": 0.1, "seed": 0}},
            "target": "delayed",
            "columns": COLUMNS,
            "model": {"arch": "mlp", "hidden": [64, 32], "dropout": 0.0},
            "train": {"optimizer": "adam", "lr": 1e-3, "batch_size": 256, "epochs": epochs},
            "tune": {
                "sampler": sampler,
                "seed": seed,
                "trials": trials,
                "jobs": jobs,
                "pruner": "none",
                "space": space,
            },
            "workdir": str(workdir),
            "store": str(workdir / "models"),
        }
    )


def _best_so_far(result: TuneResult) -> list[float]:
    """The best score after each trial, in trial order (a failed trial keeps the previous best)."""
    sign = 1.0 if result.direction == "maximize" else -1.0
    best = -float("inf")
    curve = []
    for row in sorted(result.trials, key=lambda r: r.number):
        if row.state == "complete" and row.value is not None:
            best = max(best, sign * row.value)
        curve.append(sign * best)
    return curve


if __name__ == "__main__":
    main()
