"""Ray: the stages on a local Ray cluster vs in one process, Ray Tune vs leanml's trials, 8–64 nodes.

Four questions, each answered side by side in one run (SPEC §4: on Ray, 2 workers, the same output and
≥ 1.6× faster than the single-process path):

1. **prepare**: the same config (bench/prepare.py's columns: 10 numeric, 5 categorical, a datetime read
   from text; ``event_time`` imputed with its mean, as in bench/prepare.py's case 2) over the same
   synthetic CSV (bench/prepare.py's generator, written once to ``bench/out/ray/``), run by the local
   ``prepare()`` and by ``prepare_on_ray`` with 1, 2, … workers (``--workers``). Reported: Ray start-up
   (``ray.init`` + one warm-up task per worker) apart from the stage's own time, rows/s, speed-ups, the
   time of each wave of Ray tasks with the bytes its results carry to the driver, and whether the outputs
   are equal (``preprocess.json`` within 1e-9, the rows of each split, a hash of every row of each split).
2. **train**: ``train_model`` in this process (``--cpus-per-worker`` torch threads, and all cores) vs
   ``train_model_on_ray`` with the same worker counts, for ``--epochs`` epochs on the first
   ``--train-rows`` rows of the prepared training split (validation and test cut to ``--eval-rows``), with
   ``--model``'s model (by default what ``leanml init`` writes for the table), and two local one-thread
   trainings at once on half the rows each (the most two workers can get from the machine): seconds per
   epoch, training rows/s.
3. **tune**: the same grid of ``--tune-trials`` short trainings, ``--tune-concurrency`` at once, run by
   leanml's ``tune_on_ray`` (Optuna trials as Ray tasks) and by Ray Tune's ``Tuner`` with ``OptunaSearch``
   (Optuna's ``GridSampler``, so both run the same trials), the latter with its default
   ``reuse_actors=False`` and with ``reuse_actors=True``. Each trial's own training time is taken inside
   the trial (around ``train_model``); overhead per trial = (wall × concurrency − Σ training) / trials.
4. **estimate** for 8 and 64 nodes from the measured per-worker throughput and the bytes that move: for
   prepare, the waves of tasks scaled by the workers, the driver's serial work, the results sent to the
   driver and the input each worker reads; for train, compute per step plus a ring all-reduce of the
   gradients at ``--bandwidth-gbps`` (the formulas and inputs are printed).

Each side runs in a fresh subprocess of this script (``--side``); each Ray side starts its own local
cluster, ``ray.init(num_cpus=workers × cpus_per_worker)``. Times are measured inside the side process.
Outputs, logs and ``ray.md`` (the report, also printed) go to ``bench/out/ray/`` (git-ignored); the results
of each part are kept in ``results.json`` there, so parts run by separate commands (``--only``) on the same
machine and sizes are reported together.

Run: ``.venv/bin/python bench/ray.py --quick`` (200,000 rows; 5–8 minutes on 2 shared cores). At 20M rows
(the default ``--rows``) a Ray worker with one CPU prepares about 10–15k rows/s, so one part per command
(``--only data``, ``--only prepare --workers 16``, then ``--workers 8 --reuse-local`` …, ``--only
train``, ``--only tune``): a command adds its sides to those of earlier commands on the same machine and
sizes, and the report marks them. ``--side-timeout`` bounds each side.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import math
import os
import pickle
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out" / "ray"
PYTHON = sys.executable
PARTS = ("prepare", "train", "tune")
STEPS = ("data", *PARTS)
RESULT_MARK = "BENCH-RESULT "
MIB = 1 << 20
SMALL_MODEL = {"arch": "mlp", "hidden": [256, 128], "dropout": 0.1}  # bench/train.py's model
SMALL_BATCH = 512
SCORED_ROW_BYTES = 16
"""A scored validation row as the workers swap it (target and prediction as float64; binary task)."""
TRAIN_MODELS = ("init", "small")
"""``--model``: what ``leanml init`` writes for the table (its model and train sections, the batch size
scaled to the table's rows), or bench/train.py's small MLP at batch 512 (46,849 parameters: a step is a
few ms, so the all-reduce weighs most)."""
TUNE_HIDDEN = [[64], [128, 64]]
TUNE_METRIC = "roc_auc"
TOLERANCE = 1e-9

console = Console(highlight=False)
Save = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------------------------------
# Setup: this file's name, bench/prepare.py's generator, the configs
# --------------------------------------------------------------------------------------------------
def drop_script_folder() -> None:
    """Take ``bench/`` off ``sys.path``: ``python bench/ray.py`` puts it first, and ``import ray`` would
    then import this file instead of Ray. Called before anything imports Ray."""
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != str(BENCH)]


def bench_prepare() -> ModuleType:
    """bench/prepare.py (its synthetic table and config), loaded by path under its own name, since
    putting ``bench/`` on ``sys.path`` would shadow Ray (see :func:`drop_script_folder`)."""
    name = "leanml_bench_prepare"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / "prepare.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def base_config(train: Path, name: str) -> dict[str, Any]:
    """bench/prepare.py's config over ``train`` (with the datetime column), writing under ``bench/out/ray``.

    ``event_time`` is imputed with its mean, as in bench/prepare.py's case 2: a median keeps one count per
    distinct value, about one per row for a timestamp.
    """
    raw = bench_prepare().raw_config(train, with_datetime=True)
    raw["columns"]["event_time"]["impute"] = "mean"
    raw["name"] = name
    raw["workdir"] = str(OUT / "runs")
    raw["store"] = str(OUT / "models")
    return raw


def ray_section(workers: int, cpus: float, storage: Path) -> dict[str, Any]:
    """The config's ``ray`` section for a local cluster of ``workers`` × ``cpus``."""
    return {
        "address": "local",
        "num_workers": workers,
        "cpus_per_worker": cpus,
        "storage": str(storage),
        "max_failures": 0,  # a lost worker should fail the benchmark, not retry inside the timing
    }


def train_sections(model: str, table_rows: int, epochs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``model`` and ``train`` sections of ``--model`` for a table of ``table_rows`` rows, trained
    ``epochs`` epochs."""
    if model == "small":
        return dict(SMALL_MODEL), {
            "optimizer": "adamw",
            "lr": 1e-3,
            "batch_size": SMALL_BATCH,
            "epochs": epochs,
        }
    from leanml.data.infer import STARTER_MODEL, starter_train

    return dict(STARTER_MODEL), {**starter_train(table_rows), "epochs": epochs}


def train_config(
    data: Path, model: str, table_rows: int, epochs: int, workers: int, cpus: float, storage: Path
) -> dict[str, Any]:
    """The training config (of the prepare part's data): ``--model``'s sections, ``epochs`` epochs."""
    raw = base_config(data, "bench-ray-train")
    raw["model"], raw["train"] = train_sections(model, table_rows, epochs)
    raw["ray"] = ray_section(workers, cpus, storage)
    return raw


def model_words(model: dict[str, Any]) -> str:
    """``MLP [256, 128]`` (with ``, periodic embeddings`` when it has them)."""
    words = f"{model['arch'].upper()} {model['hidden']}"
    return words + (f", {model['embedding']} embeddings" if model.get("embedding", "none") != "none" else "")


def tune_config(data: Path, trials: int, epochs: int, concurrency: int, cpus: float) -> dict[str, Any]:
    """The search both tuners run: a grid of learning rates × two hidden layouts (``trials`` points)."""
    rates = [round(1e-3 * 10 ** (i / max(1, trials // 2 - 1)), 6) for i in range(trials // 2)]
    raw = base_config(data, "bench-ray-tune")
    raw["model"] = {"arch": "mlp", "hidden": TUNE_HIDDEN[0], "dropout": 0.0}
    raw["train"] = {"optimizer": "adam", "lr": 1e-3, "batch_size": 256, "epochs": epochs}
    raw["tune"] = {
        "sampler": "grid",
        "seed": 0,
        "pruner": "none",
        "metric": TUNE_METRIC,
        "space": {"train.lr": rates, "model.hidden": TUNE_HIDDEN},
    }
    raw["ray"] = ray_section(concurrency, cpus, OUT / "storage" / "tune")
    return raw


# --------------------------------------------------------------------------------------------------
# Running a side in a fresh process
# --------------------------------------------------------------------------------------------------
def run_side(
    name: str, params: dict[str, Any], label: str, timeout: float, status: bool = True
) -> dict[str, Any]:
    """Run side ``name`` of this benchmark in a fresh interpreter (its own process group, killed whole on
    timeout); return its result, or ``{"error": ...}`` with the end of its log. ``status``: show a spinner
    (one at a time: sides run together show none)."""
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{label.replace(' ', '-').replace('×', 'x')}.log"
    command = [PYTHON, str(Path(__file__).resolve()), "--side", name, "--params", json.dumps(params)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    spinner = console.status(f"{label}…") if status else contextlib.nullcontext()
    with spinner, open(log, "w") as err:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, env=env, start_new_session=True
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, _ = proc.communicate()
    wall = time.perf_counter() - start
    result: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK) :])
    if proc.returncode != 0 or not result:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        why = f"timed out after {timeout:.0f}s" if proc.returncode == -signal.SIGKILL else "failed"
        console.print(f"[red]✗ {label} {why} (exit {proc.returncode}); log {log}[/red]")
        console.print("\n".join(tail))
        return {"error": f"{why} (exit {proc.returncode}): {tail[-1] if tail else ''}", "process_s": wall}
    result["process_s"] = wall
    return result


def run_sides_together(runs: list[tuple[str, dict[str, Any], str]], timeout: float) -> list[dict[str, Any]]:
    """Several sides at once, each in its own interpreter (as :func:`run_side`); their results in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(runs)) as pool:
        futures = [pool.submit(run_side, name, params, label, timeout, False) for name, params, label in runs]
        return [future.result() for future in futures]


def peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def start_ray(cpus: float) -> float:
    """Start a local Ray cluster of ``cpus`` CPUs; return the seconds it took."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - start


def connected_side(params: dict[str, Any], width: int) -> tuple[Any, Any, float]:
    """A Ray side's start: a local cluster of ``width`` × ``params["cpus"]`` CPUs, the side's config, and
    leanml connected to that cluster; returns ``(config, cluster, seconds ray.init took)``."""
    from leanml.cluster.session import connect
    from leanml.config import parse_config

    init_s = start_ray(width * float(params["cpus"]))
    config = parse_config(params["config"])
    return config, connect(config), init_s


# --------------------------------------------------------------------------------------------------
# Part 1: prepare
# --------------------------------------------------------------------------------------------------
def payload_bytes(value: Any) -> int:
    """About how many bytes a task result carries to the driver (frames and arrays by their buffers)."""
    import numpy as np
    import polars as pl

    if isinstance(value, pl.DataFrame):
        return int(value.estimated_size())
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, list | tuple):
        return sum(payload_bytes(v) for v in value)
    return len(pickle.dumps(value))


def wrap(module: Any, name: str, record: Callable[[str, float, Any, tuple[Any, ...]], None]) -> None:
    """Replace ``module.name`` by a wrapper that times each call and hands it to ``record``."""
    original = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = original(*args, **kwargs)
        record(name, time.perf_counter() - start, result, args)
        return result

    setattr(module, name, timed)


def instrument_prepare(on_ray: bool) -> dict[str, list[dict[str, Any]]]:
    """Record (in this side process only) each step's time, and on Ray each wave of tasks: its time,
    pieces and the bytes of its results; returns the lists that fill up as the stage runs."""
    import leanml.data.prepare as local_prepare
    from leanml import progress

    record: dict[str, list[dict[str, Any]]] = {"steps": [], "phases": [], "calls": []}
    original_step = progress.Steps.step

    @contextlib.contextmanager
    def step(self: Any, description: str) -> Iterator[None]:
        start = time.perf_counter()
        with original_step(self, description):
            yield
        record["steps"].append({"step": description, "seconds": time.perf_counter() - start})

    progress.Steps.step = step  # type: ignore[method-assign]

    def call(name: str, seconds: float, result: Any, args: tuple[Any, ...]) -> None:
        record["calls"].append({"call": name, "seconds": seconds})

    wrap(local_prepare, "fingerprint", call)
    if not on_ray:
        return record
    import leanml.cluster.prepare as ray_prepare

    inside = {"datetime": False}

    def phase(name: str, seconds: float, result: Any, args: tuple[Any, ...]) -> None:
        if name == "_with_datetime_formats":  # (job, pieces, options): two waves, one task per piece
            inside["datetime"] = False
            label = "datetime formats (2 waves)"
            record["phases"].append({"phase": label, "seconds": seconds, "bytes": 0, "tasks": len(args[1])})
        elif name == "_plan_split":  # (job, pieces, options): histograms, then the cut buckets' hashes
            label = "split: histograms + cut-bucket hashes (2 waves)"
            record["phases"].append({"phase": label, "seconds": seconds, "bytes": 0, "tasks": len(args[1])})
        elif name == "_write_pieces":  # (job, state, pieces, ...): one task per piece, then the key shuffle
            label = "transform + write pieces (+ distinct-key shuffle)"
            record["phases"].append({"phase": label, "seconds": seconds, "bytes": 0, "tasks": len(args[2])})
        elif name == "plan_pieces":  # (paths, ...): one task per input file
            label = "count rows (one task per file)"
            record["phases"].append({"phase": label, "seconds": seconds, "bytes": 0, "tasks": len(args[0])})
        elif not inside["datetime"]:
            func = getattr(args[1], "_function", args[1])
            label = PHASE_LABELS.get(func.__name__, func.__name__)
            if func.__name__ == "_fit_round":
                label += f" {sum(p['phase'].startswith(label) for p in record['phases']) + 1}"
            record["phases"].append(
                {"phase": label, "seconds": seconds, "bytes": payload_bytes(result), "tasks": len(args[2])}
            )

    original_formats = ray_prepare._with_datetime_formats

    def formats(*args: Any, **kwargs: Any) -> Any:
        inside["datetime"] = True
        return original_formats(*args, **kwargs)

    ray_prepare._with_datetime_formats = formats  # type: ignore[assignment]
    for name in ("_run", "plan_pieces", "_with_datetime_formats", "_plan_split", "_write_pieces"):
        wrap(ray_prepare, name, phase)
    wrap(ray_prepare, "publish_prepared", call)
    return record


PHASE_LABELS = {
    "_distinct_targets": "distinct targets",
    "_split_times": "split times (a time split)",
    "_fit_round": "analyze round",
}


def side_prepare_local(params: dict[str, Any]) -> dict[str, Any]:
    """The local stage, as ``leanml prepare`` runs it (Polars with all of this machine's cores, or
    ``threads``)."""
    if params.get("threads"):
        os.environ["POLARS_MAX_THREADS"] = str(params["threads"])  # read when Polars is imported
    import polars as pl

    from leanml.config import parse_config
    from leanml.data.prepare import prepare

    record = instrument_prepare(on_ray=False)
    config = parse_config(params["config"])
    start = time.perf_counter()
    prepare(config, out_dir=params["output"])
    return {
        "stage_s": time.perf_counter() - start,
        "threads": pl.thread_pool_size(),
        **record,
        "peak_rss_mib": peak_rss_mib(),
    }


def _warm_worker(seconds: float) -> int:
    """A warm-up task: import what the stage's tasks import, hold the worker a moment (so that every
    worker of the wave starts), return its process id."""
    import leanml.cluster.prepare  # noqa: F401

    time.sleep(seconds)
    return os.getpid()


def side_prepare_ray(params: dict[str, Any]) -> dict[str, Any]:
    """``prepare_on_ray`` on a fresh local cluster of ``workers`` × ``cpus``; start-up timed apart."""
    from leanml.cluster.pieces import task_options
    from leanml.cluster.prepare import prepare_on_ray

    workers = int(params["workers"])
    config, cluster, init_s = connected_side(params, workers)
    import ray

    start = time.perf_counter()
    warm = ray.remote(_warm_worker).options(**task_options(cluster))
    pids = ray.get([warm.remote(0.3) for _ in range(workers)])
    warm_s = time.perf_counter() - start
    record = instrument_prepare(on_ray=True)
    start = time.perf_counter()
    prepare_on_ray(config, cluster, out_dir=params["output"])
    stage_s = time.perf_counter() - start
    ray.shutdown()
    return {
        "init_s": init_s,
        "warm_s": warm_s,
        "warm_workers": len(set(pids)),
        "stage_s": stage_s,
        **record,
        "peak_rss_mib": peak_rss_mib(),
    }


def json_difference(a: Any, b: Any, path: str = "") -> tuple[str | None, float]:
    """The first place two JSON values differ (floats beyond 1e-9, relative to their size) and the largest
    difference between their floats."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path or '.'}: keys {sorted(set(a) ^ set(b))}", math.inf
        pairs: list[tuple[Any, Any, str]] = [(a[k], b[k], f"{path}.{k}") for k in a]
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items", math.inf
        pairs = [(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))]
    elif isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return f"{path}: {a!r} vs {b!r}", math.inf
        if math.isnan(a) and math.isnan(b):
            return None, 0.0
        diff = abs(a - b)
        close = math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
        return (None if close else f"{path}: {a!r} vs {b!r}"), diff
    else:
        return (None if a == b else f"{path}: {a!r} vs {b!r}"), 0.0
    first, largest = None, 0.0
    for x, y, where in pairs:
        problem, diff = json_difference(x, y, where)
        first = first or problem
        largest = max(largest, diff)
    return first, largest


def split_files(folder: Path, split: str) -> list[Path]:
    """A prepared split's files: the one file (local prepare) or the shards (Ray prepare)."""
    from leanml.data.prepared import PreparedData

    return PreparedData(folder).split(split)


def split_rows(folder: Path) -> dict[str, int]:
    """Rows of each prepared split (from the Parquet footers)."""
    import pyarrow.parquet as pq

    return {s: sum(pq.ParquetFile(f).metadata.num_rows for f in split_files(folder, s)) for s in SPLIT_NAMES}


SPLIT_NAMES = ("train", "validation", "test")


def row_hashes(folder: Path) -> dict[str, int]:
    """An order-free fingerprint of every split: the wrapping sum of a 64-bit hash of every row."""
    import polars as pl

    return {
        s: int(
            pl.scan_parquet(split_files(folder, s))
            .select(pl.struct(pl.all()).hash(seed=0).sum())
            .collect(engine="streaming")
            .item()
        )
        for s in SPLIT_NAMES
    }


def compare_prepared(local: Path, other: Path, local_hashes: dict[str, int]) -> dict[str, Any]:
    """Whether ``other`` holds the local stage's outputs: the state, the rows, and every row's hash."""
    first, largest = json_difference(
        json.loads((local / "preprocess.json").read_text()),
        json.loads((other / "preprocess.json").read_text()),
    )
    rows_local, rows_other = split_rows(local), split_rows(other)
    return {
        "state_equal": first is None,
        "state_first_difference": first,
        "state_max_abs_diff": largest,
        "rows_equal": rows_local == rows_other,
        "rows": rows_other,
        "hashes_equal": (hashes_equal := row_hashes(other) == local_hashes),
        # Merged statistics may differ from one pass's in the last bit (another summation order), and so
        # may a feature computed from them: when the hashes differ, how far apart are the values?
        "values_max_rel_diff": None if hashes_equal else max_relative_difference(local, other),
    }


def max_relative_difference(local: Path, other: Path) -> float:
    """The largest ``|a − b| / max(1, |a|)`` over every value of every split, rows matched by row id."""
    import polars as pl

    largest = 0.0
    for split in SPLIT_NAMES:
        a = pl.scan_parquet(split_files(local, split))
        b = pl.scan_parquet(split_files(other, split))
        columns = [c for c, t in a.collect_schema().items() if t.is_numeric() and c != "__row_id"]
        joined = a.join(b, on="__row_id", how="full", suffix="__ray")
        worst = joined.select(
            pl.max_horizontal(
                ((pl.col(c) - pl.col(f"{c}__ray")).abs() / pl.max_horizontal(pl.col(c).abs(), pl.lit(1.0)))
                .fill_null(float("inf"))  # a row on one side only
                .max()
                for c in columns
            )
        ).collect(engine="streaming")
        largest = max(largest, float(worst.item()))
    return largest


def write_data(args: argparse.Namespace) -> Path:
    """The synthetic CSV of ``--rows`` rows (bench/prepare.py's generator), written once."""
    csv = OUT / f"synthetic-{args.rows}.csv"
    if not csv.exists():
        with console.status(f"writing {args.rows:,} synthetic rows to {csv}…"):
            start = time.perf_counter()
            bench_prepare().write_table(csv, args.rows, with_datetime=True)
        console.print(
            f"wrote {csv.name} ({csv.stat().st_size / MIB:,.0f} MiB) in {time.perf_counter() - start:.0f}s"
        )
    return csv


def part_prepare(args: argparse.Namespace, earlier: dict[str, Any] | None, save: Save) -> dict[str, Any]:
    """Part 1: write (or reuse) the CSV, prepare it locally and on Ray with each worker count (adding
    to the sides an earlier command measured on the same rows); ``save`` after every side."""
    csv = write_data(args)
    csv_bytes = csv.stat().st_size
    console.print(f"[bold]prepare[/bold]: {args.rows:,} rows, {csv_bytes / MIB:,.0f} MiB of CSV ({csv})")
    raw = base_config(csv, "bench-ray-prepare")
    local_out = prepared_folder(args.rows)
    sides = earlier_sides(earlier, rows=args.rows, cpus_per_worker=args.cpus_per_worker)
    entry: dict[str, Any] = {
        "rows": args.rows,
        "csv_bytes": csv_bytes,
        "cpus_per_worker": args.cpus_per_worker,
        "sides": sides,
    }
    reuse = args.reuse_local and "error" not in sides.get("local", {"error": ""}) and local_out.exists()
    if reuse:
        console.print("  local prepare(): reusing the earlier command's figures and outputs")
    else:
        sides["local"] = stamp(
            run_side(
                "prepare-local",
                {"config": raw, "output": str(local_out), "threads": args.local_threads},
                "prepare local",
                args.side_timeout,
            ),
            args,
        )
    local = sides["local"]
    if "error" in local:
        return entry
    console.print(f"  local prepare(): {local['stage_s']:.1f}s ({local['threads']} Polars threads)")
    entry["split_rows"] = split_rows(local_out)
    entry["split_bytes"] = {s: (local_out / f"{s}.parquet").stat().st_size for s in SPLIT_NAMES}
    save(entry)
    hashes = row_hashes(local_out)
    for workers in args.workers:
        out = OUT / f"prepared-ray{workers}-{args.rows}"
        config = {**raw, "ray": ray_section(workers, args.cpus_per_worker, OUT / "storage" / "prepare")}
        label = f"prepare ray {workers}x{args.cpus_per_worker:g}"
        result = run_side(
            "prepare-ray",
            {"config": config, "output": str(out), "workers": workers, "cpus": args.cpus_per_worker},
            label,
            args.side_timeout,
        )
        if "error" not in result:
            result["equal"] = compare_prepared(local_out, out, hashes)
            console.print(
                f"  Ray {workers} worker(s): start-up {result['init_s'] + result['warm_s']:.1f}s, "
                f"stage {result['stage_s']:.1f}s, same outputs: {same_outputs(result['equal'])}"
            )
            if not args.keep_outputs:
                shutil.rmtree(out, ignore_errors=True)
        sides[f"ray-{workers}"] = stamp(result, args)
        save(entry)
    return entry


def earlier_sides(earlier: dict[str, Any] | None, **same: Any) -> dict[str, dict[str, Any]]:
    """The sides an earlier command measured for this part, when it ran with the same ``same`` settings."""
    if not earlier or any(earlier.get(key) != value for key, value in same.items()):
        return {}
    return {key: side for key, side in earlier.get("sides", {}).items() if "error" not in side}


def stamp(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``result`` marked with the command that measured it."""
    result["run"] = args.run
    return result


def ray_workers(sides: dict[str, Any]) -> list[int]:
    """The worker counts of the Ray sides, smallest first."""
    return sorted(int(key.split("-")[1]) for key in sides if key.startswith("ray-"))


FLOAT32_STEP = 2.0**-23
"""The prepared features are float32: a statistic merged from pieces that differs from one pass's in its
last float64 bit can move a feature that lies near a float32 rounding boundary by one float32 step
(relative 2⁻²³ at most). At 2M rows no value moved that far (3e-14); at 20M one did (1e-7)."""


def prepared_folder(rows: int) -> Path:
    """Where the local stage's outputs of ``rows`` rows go (kept: train reads them)."""
    return OUT / f"prepared-local-{rows}"


def same_outputs(equal: dict[str, Any]) -> str:
    """A few words on an equality check."""
    parts = [
        ("preprocess.json", equal["state_equal"]),
        ("rows", equal["rows_equal"]),
        ("row hashes", equal["hashes_equal"]),
    ]
    if all(ok for _, ok in parts):
        return "yes"
    diff = equal.get("values_max_rel_diff")
    if equal["state_equal"] and equal["rows_equal"] and diff is not None and diff <= FLOAT32_STEP:
        return f"yes, values within {diff:.0e} (rounding of merged sums)"
    return "NO: " + ", ".join(name for name, ok in parts if not ok) + " differ"


# --------------------------------------------------------------------------------------------------
# Part 2: train
# --------------------------------------------------------------------------------------------------
def write_train_sample(source: Path, rows: int | None, eval_rows: int, folder: Path) -> dict[str, int]:
    """A prepared folder with the first ``rows`` training rows of ``source`` and the first ``eval_rows``
    validation and test rows (the same state and report)."""
    import polars as pl

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in ("preprocess.json", "quality.json"):
        shutil.copy(source / name, folder / name)
    caps = {"train": rows, "validation": eval_rows, "test": eval_rows}
    for split, cap in caps.items():
        frame = pl.scan_parquet(split_files(source, split))
        (frame.head(cap) if cap else frame).sink_parquet(folder / f"{split}.parquet")
    return split_rows(folder)


def epoch_figures(history: list[dict[str, Any]]) -> list[float]:
    """Seconds of each epoch (training, validation, checkpoint)."""
    return [float(h["seconds"]) for h in history]


def side_train_local(params: dict[str, Any]) -> dict[str, Any]:
    """``train_model`` in this process with ``threads`` torch threads; then one timed validation pass."""
    import torch

    from leanml.config import parse_config
    from leanml.data.prepared import PreparedData
    from leanml.training.batching import open_split
    from leanml.training.loop import EVAL_BATCH_ROWS, evaluate_split, make_loss, train_model

    torch.set_num_threads(int(params["threads"]))
    config = parse_config(params["config"])
    start = time.perf_counter()
    result = train_model(config, params["input"], params["output"], plots=False)
    wall = time.perf_counter() - start
    prepared = PreparedData(Path(params["input"]))
    state = prepared.state()
    batches = open_split(
        prepared.split("validation"),
        state.feature_names,
        state.target.task,
        EVAL_BATCH_ROWS,
        config.train.memory_budget_mb,
    )
    start = time.perf_counter()
    evaluate_split(
        result.model, batches, state.target.task, make_loss(state.target.task), torch.device("cpu")
    )
    return {
        "wall_s": wall,
        "epoch_s": epoch_figures(result.history),
        "eval_s": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in result.model.parameters()),
        "features": len(state.feature_names),
        "test_roc_auc": result.test.get("roc_auc"),
        "peak_rss_mib": peak_rss_mib(),
    }


def side_train_ray(params: dict[str, Any]) -> dict[str, Any]:
    """``train_model_on_ray`` on a fresh local cluster of ``workers`` × ``cpus``."""
    from leanml.cluster.train import train_model_on_ray
    from leanml.data.prepared import PreparedData

    workers = int(params["workers"])
    config, cluster, init_s = connected_side(params, workers)
    import ray

    start = time.perf_counter()
    result = train_model_on_ray(config, cluster, PreparedData(Path(params["input"])), Path(params["output"]))
    fit_s = time.perf_counter() - start
    ray.shutdown()
    return {
        "init_s": init_s,
        "wall_s": fit_s,
        "epoch_s": epoch_figures(result.history),
        "test_roc_auc": result.test.get("roc_auc"),
        "peak_rss_mib": peak_rss_mib(),
    }


def part_train(args: argparse.Namespace, earlier: dict[str, Any] | None, save: Save) -> dict[str, Any]:
    """Part 2: the local loop (C threads, all cores) and Ray Train with each worker count (adding to the
    sides an earlier command measured with the same sizes); ``save`` after every side."""
    source = prepared_folder(args.rows)
    if not (source / "quality.json").exists():
        console.print(f"[yellow]train: {source} is missing; run the prepare part first[/yellow]")
        return {"error": f"no prepared data in {source}"}
    sample, csv = OUT / "train-sample", OUT / f"synthetic-{args.rows}.csv"
    with console.status("cutting the training sample…"):
        rows = write_train_sample(source, args.train_rows, args.eval_rows, sample)
    full = split_rows(source)
    model, train = train_sections(args.model, args.rows, args.epochs)
    batch = int(train["batch_size"])
    console.print(
        f"[bold]train[/bold]: {rows['train']:,} of the {full['train']:,} prepared training rows, "
        f"{rows['validation']:,} validation rows, {args.epochs} epochs, {model_words(model)}, batch {batch}"
    )
    storage = OUT / "storage" / "train"
    shutil.rmtree(storage, ignore_errors=True)
    same = {"rows": args.rows, "train_rows": rows["train"], "epochs": args.epochs, "model": args.model}
    sides = earlier_sides(earlier, **same, eval_rows=rows["validation"], cpus_per_worker=args.cpus_per_worker)
    entry: dict[str, Any] = {
        **same,
        "eval_rows": rows["validation"],
        "full_rows": full,
        "model_section": model,
        "batch": batch,
        "cpus_per_worker": args.cpus_per_worker,
        "sides": sides,
    }
    threads = sorted({max(1, int(args.cpus_per_worker)), args.local_threads or os.cpu_count() or 1})
    for count in threads:
        config = train_config(csv, args.model, args.rows, args.epochs, 1, args.cpus_per_worker, storage)
        result = run_side(
            "train-local",
            {"config": config, "input": str(sample), "output": str(OUT / "train-local"), "threads": count},
            f"train local {count} threads",
            args.side_timeout,
        )
        sides[f"local-{count}"] = stamp(result, args)
        save(entry)
        if "error" not in result:
            console.print(f"  local, {count} threads: {statistics.median(result['epoch_s']):.1f} s/epoch")
    if 2 in args.workers:  # the ceiling of two workers here: two trainings at once, nothing shared
        half = OUT / "train-half"
        with console.status("cutting the half sample…"):
            write_train_sample(source, rows["train"] // 2, args.eval_rows, half)
        config = train_config(csv, args.model, args.rows, args.epochs, 1, args.cpus_per_worker, storage)
        pair = run_sides_together(
            [
                (
                    "train-local",
                    {
                        "config": config,
                        "input": str(half),
                        "output": str(OUT / f"train-pair{i}"),
                        "threads": 1,
                    },
                    f"train local pair {i}",
                )
                for i in (1, 2)
            ],
            args.side_timeout,
        )
        failed = [side for side in pair if "error" in side]
        sides["pair-2"] = stamp(
            failed[0]
            if failed
            else {
                "wall_s": max(side["wall_s"] for side in pair),
                # the pair's epoch ends when its slower member's does
                "epoch_s": [max(times) for times in zip(*(side["epoch_s"] for side in pair), strict=True)],
                "test_roc_auc": None,
            },
            args,
        )
        save(entry)
        if not failed:
            console.print(
                f"  two local 1-thread trainings at once: {median_epoch(sides['pair-2']):.1f} s/epoch"
            )
    for workers in args.workers:
        config = train_config(csv, args.model, args.rows, args.epochs, workers, args.cpus_per_worker, storage)
        result = run_side(
            "train-ray",
            {
                "config": config,
                "input": str(sample),
                "output": str(OUT / f"train-ray{workers}"),
                "workers": workers,
                "cpus": args.cpus_per_worker,
            },
            f"train ray {workers}x{args.cpus_per_worker:g}",
            args.side_timeout,
        )
        sides[f"ray-{workers}"] = stamp(result, args)
        save(entry)
        if "error" not in result:
            console.print(f"  Ray, {workers} worker(s): {statistics.median(result['epoch_s']):.1f} s/epoch")
    shutil.rmtree(storage, ignore_errors=True)
    return entry


def side_order(key: str) -> tuple[int, int]:
    """Local sides first, then Ray sides by worker count."""
    kind, _, count = key.partition("-")
    return ({"local": 0, "pair": 2}.get(kind, 1), int(count) if count.isdigit() else 0)


# --------------------------------------------------------------------------------------------------
# Part 3: tune
# --------------------------------------------------------------------------------------------------
def timed_trials(path: str) -> Callable[..., Any]:
    """leanml's trial task (:func:`leanml.tuning.study._run_in_worker`), recording when the trial's
    training (its ``train_model`` call) starts and ends, one JSON line per trial in ``path``."""

    def run_in_worker(task: Any, storage: str, tune: Any) -> Any:
        import torch

        import leanml.tuning.trial as trial_module
        from leanml.tuning import study

        train = trial_module.train_model
        if not getattr(train, "bench_timed", False):

            def timed_train(*args: Any, **kwargs: Any) -> Any:
                start = time.time()
                try:
                    return train(*args, **kwargs)
                finally:
                    line = {"start": start, "end": time.time(), "threads": torch.get_num_threads()}
                    with open(path, "a") as handle:
                        handle.write(json.dumps(line) + "\n")

            timed_train.bench_timed = True  # type: ignore[attr-defined]
            trial_module.train_model = timed_train  # type: ignore[assignment]
        return study._run_in_worker(task, storage, tune)

    return run_in_worker


def side_tune_leanml(params: dict[str, Any]) -> dict[str, Any]:
    """leanml's ``tune_on_ray``: the grid's trials as Ray tasks, ``concurrency`` at once."""
    import leanml.tuning.study as study
    from leanml.cluster.tune import STUDY_FOLDER, tune_on_ray
    from leanml.tuning.variants import prepared_variant

    concurrency = int(params["concurrency"])
    config, cluster, init_s = connected_side(params, concurrency)
    import ray

    prepared_variant(config, cluster.storage / STUDY_FOLDER / "prepared")  # the data: before the clock
    times = OUT / "logs" / "leanml-trial-times.jsonl"
    times.unlink(missing_ok=True)
    study._run_in_worker = timed_trials(str(times))  # type: ignore[assignment]
    start = time.time()
    result = tune_on_ray(config, cluster, bundle=False)
    end = time.time()
    ray.shutdown()
    trials = [json.loads(line) for line in times.read_text().splitlines()]
    return {
        "init_s": init_s,
        "start": start,
        "end": end,
        "trials": trials,
        "completed": sum(t.state == "complete" for t in result.trials),
        "best": result.best.value,
    }


def raytune_trial(
    params: dict[str, Any], base: dict[str, Any], prepared: str, out_root: str, keys: dict[str, str]
) -> None:
    """A Ray Tune trainable: leanml's training of the sampled config, reporting every epoch to Tune."""
    import torch

    from leanml.config import parse_config
    from leanml.training.loop import train_model
    from leanml.tuning.space import search_space, trial_config

    config = parse_config(base)
    from ray import tune  # a block of its own: ruff counts `ray` first-party here (this file's name)

    stored = {key: params[safe] for safe, key in keys.items()}
    values = search_space(config.tune).decode(stored)
    trial = trial_config(config, values)
    out = Path(out_root) / tune.get_context().get_trial_id()

    def report(record: dict[str, Any]) -> None:
        tune.report({"epoch": record["epoch"], TUNE_METRIC: record["val_metrics"].get(TUNE_METRIC)})

    start = time.time()
    result = train_model(trial, prepared, out, plots=False, on_epoch=report)
    end = time.time()
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # as leanml's trials do
    tune.report(
        {
            TUNE_METRIC: result.validation.get(TUNE_METRIC),
            "train_start": start,
            "train_end": end,
            "threads": torch.get_num_threads(),
        }
    )


def side_tune_raytune(params: dict[str, Any]) -> dict[str, Any]:
    """Ray Tune's ``Tuner`` + ``OptunaSearch`` (Optuna's grid sampler) over the same grid."""
    import optuna

    from leanml.config import parse_config
    from leanml.tuning.space import search_space
    from leanml.tuning.variants import prepared_variant

    concurrency, cpus = int(params["concurrency"]), float(params["cpus"])
    init_s = start_ray(concurrency * cpus)
    import ray.tune.search.optuna

    tune = ray.tune
    config = parse_config(params["config"])
    storage = Path(params["storage"])
    prepared = prepared_variant(config, storage / "prepared")  # the data: before the clock
    grid = search_space(config.tune).grid()
    keys = {key.replace(".", "__"): key for key in grid}  # Tune nests keys with dots or slashes
    safe_grid = {safe: grid[key] for safe, key in keys.items()}
    trainable = tune.with_resources(
        tune.with_parameters(
            raytune_trial,
            base=config.model_dump(mode="json"),
            prepared=str(prepared.folder),
            out_root=str(storage / "trials"),
            keys=keys,
        ),
        {"cpu": cpus},
    )
    start = time.time()
    searcher = ray.tune.search.optuna.OptunaSearch(
        space={k: optuna.distributions.CategoricalDistribution(v) for k, v in safe_grid.items()},
        metric=TUNE_METRIC,
        mode="max",
        sampler=optuna.samplers.GridSampler(safe_grid, seed=0),
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=int(params["trials"]),
            max_concurrent_trials=concurrency,
            reuse_actors=bool(params["reuse_actors"]),
        ),
        run_config=tune.RunConfig(name="raytune", storage_path=str(storage / "runs"), verbose=0),
    )
    results = tuner.fit()
    end = time.time()
    ray.shutdown()
    trials, scores, errors = [], [], 0
    for result in results:
        metrics = result.metrics or {}
        if result.error is not None or "train_start" not in metrics:
            errors += 1
            continue
        trials.append(
            {"start": metrics["train_start"], "end": metrics["train_end"], "threads": metrics["threads"]}
        )
        scores.append(metrics[TUNE_METRIC])
    return {
        "init_s": init_s,
        "start": start,
        "end": end,
        "trials": trials,
        "completed": len(trials),
        "errors": errors,
        "best": max(scores) if scores else None,
    }


def part_tune(args: argparse.Namespace, earlier: dict[str, Any] | None, save: Save) -> dict[str, Any]:
    """Part 3: the same grid of trials through leanml's ``tune_on_ray`` and through Ray Tune."""
    data = OUT / f"synthetic-tune-{args.tune_rows}.parquet"
    bench_prepare().write_table(data, args.tune_rows, with_datetime=True)
    raw = tune_config(data, args.tune_trials, args.tune_epochs, args.tune_concurrency, args.cpus_per_worker)
    console.print(
        f"[bold]tune[/bold]: a grid of {args.tune_trials} trials ({args.tune_rows:,} rows, "
        f"{args.tune_epochs} epochs each), {args.tune_concurrency} at once × {args.cpus_per_worker:g} CPU"
    )
    common = {"config": raw, "concurrency": args.tune_concurrency, "cpus": args.cpus_per_worker}
    sides: dict[str, dict[str, Any]] = {}
    entry: dict[str, Any] = {
        "trials": args.tune_trials,
        "concurrency": args.tune_concurrency,
        "rows": args.tune_rows,
        "epochs": args.tune_epochs,
        "cpus_per_worker": args.cpus_per_worker,
        "sides": sides,
    }
    storage = OUT / "storage"
    plan: list[tuple[str, str, dict[str, Any]]] = [
        ("leanml", "tune-leanml", {}),
        ("raytune", "tune-raytune", {"reuse_actors": False}),
        ("raytune-reuse", "tune-raytune", {"reuse_actors": True}),
    ]
    for key, side, extra in plan:
        folder = storage / f"tune-{key}"
        shutil.rmtree(folder, ignore_errors=True)
        config = dict(raw)
        config["ray"] = {**raw["ray"], "storage": str(folder)}
        params = {**common, **extra, "config": config, "storage": str(folder), "trials": args.tune_trials}
        result = run_side(side, params, f"tune {key}", args.side_timeout)
        sides[key] = stamp(result, args)
        save(entry)
        if "error" not in result:
            console.print(f"  {key}: {result['end'] - result['start']:.1f}s for {result['completed']} trials")
        shutil.rmtree(folder, ignore_errors=True)
    return entry


def tune_figures(side: dict[str, Any], concurrency: int) -> dict[str, float]:
    """Wall time, Σ training, and the overhead: before the first trial, per trial, after the last."""
    trials = side["trials"]
    wall = side["end"] - side["start"]
    training = sum(t["end"] - t["start"] for t in trials)
    count = max(1, len(trials))
    first = min((t["start"] for t in trials), default=side["start"])
    last = max((t["end"] for t in trials), default=side["end"])
    return {
        "wall": wall,
        "training": training,
        "setup": first - side["start"],
        "teardown": side["end"] - last,
        "overhead_per_trial": (wall * concurrency - training) / count,
        "threads": statistics.median([t["threads"] for t in trials]) if trials else math.nan,
    }


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def num(value: float | None, digits: int = 1) -> str:
    """A number for a table cell (``–`` when missing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``1.23×``."""
    if not a or not b or not math.isfinite(a) or not math.isfinite(b):
        return "–"
    return f"{a / b:.2f}×"


def size(value: float) -> str:
    """Bytes in a readable unit."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1024)):
        if value >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value:,.0f} B"


def report_prepare(part: dict[str, Any]) -> list[str]:
    """Part 1's tables."""
    sides = part["sides"]
    local = sides.get("local", {})
    rows = part["rows"]
    lines = [
        f"### prepare: {rows:,} rows ({size(part['csv_bytes'])} of CSV), local vs Ray",
        "",
    ]
    if "stage_s" not in local:
        return [*lines, f"local prepare failed: {local.get('error', 'not run')}"]
    first = min(ray_workers(sides), default=1)
    one = sides.get(f"ray-{first}", {})
    body = [
        [
            f"local `prepare()` ({local['threads']} Polars threads){earlier_mark(local, part)}",
            str(local["threads"]),
            "–",
            num(local["stage_s"]),
            num(rows / local["stage_s"], 0),
            "1.00×",
            "–",
            "1.00×",
            "–",
            num(local["peak_rss_mib"], 0),
        ]
    ]
    ray_sides = [(int(k.split("-")[1]), v) for k, v in sides.items() if k.startswith("ray-")]
    for workers, side in sorted(ray_sides):
        label = f"`prepare_on_ray`, {workers} worker(s) × {part['cpus_per_worker']:g} CPU"
        label += earlier_mark(side, part)
        if "error" in side:
            body.append([label, *["–"] * 8, f"failed: {side['error']}"])
            continue
        startup = side["init_s"] + side["warm_s"]
        body.append(
            [
                label,
                num(workers * part["cpus_per_worker"], 0),
                f"{num(side['init_s'])} + {num(side['warm_s'])}",
                num(side["stage_s"]),
                num(rows / side["stage_s"], 0),
                ratio(local["stage_s"], side["stage_s"]),
                ratio(one.get("stage_s"), side["stage_s"]),
                ratio(local["stage_s"], side["stage_s"] + startup),
                same_outputs(side["equal"]),
                num(side["peak_rss_mib"], 0),
            ]
        )
    lines += table(
        [
            "side",
            "CPUs",
            "Ray start-up s (init + warm-up)",
            "stage s",
            "rows/s",
            "vs local",
            f"vs {first} worker(s)",
            "vs local, with start-up",
            "same outputs",
            "driver peak RSS MiB",
        ],
        body,
    )
    lines += [
        "",
        "*same outputs*: `preprocess.json` equal within 1e-9 (relative), the same rows in each split, and "
        "the same sum of a 64-bit hash of every row of each split, or where the hashes differ every value "
        "within one float32 step (2⁻²³ relative) of the local one. Speed-ups are on the stage's own time "
        "unless said; start-up is `ray.init` plus one warm-up task per worker (a new process importing "
        "leanml).",
    ]
    for _, side in sorted(ray_sides):
        if "equal" in side and side["equal"]["state_first_difference"]:
            lines.append(f"First difference in preprocess.json: {side['equal']['state_first_difference']}")

    # Steps, side by side.
    columns = [("local", local)] + [(f"Ray {w}", s) for w, s in sorted(ray_sides) if "error" not in s]
    names: list[str] = []
    for _, side in columns:
        for step in side["steps"]:
            name = step["step"].replace(" on the cluster", "")
            if name not in names:
                names.append(name)
    step_rows = []
    for name in names:
        cells = []
        for _, side in columns:
            found = [s["seconds"] for s in side["steps"] if s["step"].replace(" on the cluster", "") == name]
            cells.append(num(found[0]) if found else "–")
        step_rows.append([name, *cells])
    fingerprints = [
        next((c["seconds"] for c in s["calls"] if c["call"] == "fingerprint"), None) for _, s in columns
    ]
    step_rows.append(["of which: sha256 of the input (driver)", *[num(f) for f in fingerprints]])
    lines += ["", "Steps (seconds):", "", *table(["step", *[c for c, _ in columns]], step_rows)]

    # Waves of Ray tasks.
    measured = [(w, s) for w, s in sorted(ray_sides) if "error" not in s]
    if measured:
        phase_names: list[str] = []
        for _, side in measured:
            for phase in side["phases"]:
                if phase["phase"] not in phase_names:
                    phase_names.append(phase["phase"])
        phase_rows = []
        for name in phase_names:
            cells = []
            for _, side in measured:
                found = [p for p in side["phases"] if p["phase"] == name]
                cells.append(num(found[0]["seconds"]) if found else "–")
            for _, side in (measured[0], measured[-1]):
                found = [p for p in side["phases"] if p["phase"] == name]
                cells.append(size(found[0]["bytes"]) if found and found[0]["bytes"] else "–")
            phase_rows.append([name, *cells])
        driver = []
        for _, side in measured:
            driver.append(num(side["stage_s"] - sum(p["seconds"] for p in side["phases"])))
        phase_rows.append(["driver and serial work (the rest)", *driver, "", ""])
        header = [
            "wave of Ray tasks",
            *[f"{w} worker(s) s" for w, _ in measured],
            f"results to driver, {measured[0][0]} w",
            f"results to driver, {measured[-1][0]} w",
        ]
        lines += [
            "",
            f"Ray waves (each: one task per piece, {2} pieces per worker); the results' bytes are what the "
            "pieces send to the driver (frames by their buffers):",
            "",
            *table(header, phase_rows),
            "",
            "*driver and serial work*: reading the schema, summing the split's histograms and ranking the "
            "cut buckets' hashes, merging the analyze rounds, renaming the pieces' files into each split's "
            "shards, the sha256 of the input, the report. The split and the "
            "transform waves send only small results (histograms, hashes of the cut buckets, counts): "
            "their bytes are not measured.",
        ]
    return lines


def earlier_mark(side: dict[str, Any], part: dict[str, Any]) -> str:
    """A note on a side measured by an earlier command than the part's latest."""
    run = side.get("run")
    return f" (earlier command, {run})" if run and run != part.get("run") else ""


def median_epoch(side: dict[str, Any]) -> float:
    """The median epoch's seconds (the first epoch is kept: there are few)."""
    return statistics.median(side["epoch_s"]) if side.get("epoch_s") else math.nan


def report_train(part: dict[str, Any]) -> list[str]:
    """Part 2's table."""
    sides = part["sides"]
    rows, batch = part["train_rows"], part["batch"]
    lines = [
        f"### train: {rows:,} training rows (the first of {part['full_rows']['train']:,}), "
        f"{part['eval_rows']:,} validation rows, {part['epochs']} epochs, "
        f"{model_words(part.get('model_section', SMALL_MODEL))}, "
        f"batch {batch}",
        "",
    ]
    first = min(ray_workers(sides), default=1)
    one = sides.get(f"ray-{first}")
    local_c = sides.get(f"local-{max(1, int(part['cpus_per_worker']))}", {})
    body = []
    for key, side in sorted(sides.items(), key=lambda item: side_order(item[0])):
        if key.startswith("local-"):
            label = f"local `train_model`, {key.split('-')[1]} torch threads"
            workers = 1
        elif key.startswith("pair-"):
            label = "ceiling: two local 1-thread `train_model` at once, half the rows each, nothing shared"
            workers = 2
        else:
            workers = int(key.split("-")[1])
            label = f"`train_model_on_ray`, {workers} worker(s) × {part['cpus_per_worker']:g} CPU"
        label += earlier_mark(side, part)
        if "error" in side:
            body.append([label, *["–"] * 6, f"failed: {side['error']}"])
            continue
        epoch = median_epoch(side)
        trained = (rows // workers) * workers  # the rows mod workers last rows are left out on Ray
        startup = side["wall_s"] - sum(side["epoch_s"])
        body.append(
            [
                label,
                num(side.get("init_s")) if "init_s" in side else "–",
                num(startup),
                num(epoch, 2),
                num(trained / epoch, 0),
                ratio(median_epoch(one), epoch) if one and "error" not in one else "–",
                ratio(median_epoch(local_c), epoch) if local_c and "error" not in local_c else "–",
                num(side.get("test_roc_auc"), 4),
            ]
        )
    lines += table(
        [
            "side",
            "ray.init s",
            "outside the epochs s",
            "s/epoch",
            "training rows/s",
            f"vs {first} worker(s)",
            f"vs local {max(1, int(part['cpus_per_worker']))} thread(s)",
            "test ROC AUC",
        ],
        body,
    )
    lines += [
        "",
        "*s/epoch* (median) includes each epoch's validation pass and checkpoint; on Ray each worker "
        "scores its share of the validation rows and the workers swap them. *outside the epochs*: "
        "loading the splits, the final evaluation, saving; on Ray also starting the workers and cutting "
        f"each one's shard. Each Ray worker takes batches of {batch} rows (the global batch is workers × "
        f"{batch}) and all-reduces the gradients before every step.",
    ]
    if part["train_rows"] < part["full_rows"]["train"]:
        lines.append(
            f"Trained on a sample (`--train-rows {part['train_rows']}`) of the prepared training split to "
            "keep the run short; throughput per row does not depend on the row count once batches are full."
        )
    return lines


def report_tune(part: dict[str, Any]) -> list[str]:
    """Part 3's table."""
    sides = part["sides"]
    concurrency = part["concurrency"]
    lines = [
        f"### tune: the same grid of {part['trials']} trials ({part['rows']:,} rows, {part['epochs']} epochs "
        f"each), {concurrency} at once × {part['cpus_per_worker']:g} CPU",
        "",
    ]
    labels = {
        "leanml": "leanml `tune_on_ray` (Optuna trials as Ray tasks)",
        "raytune": "Ray Tune `Tuner` + `OptunaSearch` (reuse_actors=False, the default)",
        "raytune-reuse": "Ray Tune `Tuner` + `OptunaSearch` (reuse_actors=True)",
    }
    done = {k: tune_figures(s, concurrency) for k, s in sides.items() if "error" not in s}
    base = done.get("leanml")
    # The same trainings in warm processes: the smallest Σ training of the sides (a trial in a fresh
    # process also pays, inside train_model, what a process does the first time: lazy imports, warm-up).
    warm = min((f["training"] for f in done.values()), default=math.nan)
    body = []
    for key, side in sides.items():
        if key not in done:
            body.append([labels[key], *["–"] * 9, f"failed: {side.get('error')}"])
            continue
        f = done[key]
        body.append(
            [
                labels[key],
                f"{side['completed']}/{part['trials']}",
                num(f["wall"]),
                num(f["training"]),
                num(f["setup"]),
                num(f["teardown"]),
                num(f["overhead_per_trial"], 2),
                num((f["wall"] * concurrency - warm) / part["trials"], 2),
                ratio(f["overhead_per_trial"], base["overhead_per_trial"]) if base else "–",
                ratio(f["wall"], base["wall"]) if base else "–",
                num(side.get("best"), 4),
            ]
        )
    lines += table(
        [
            "side",
            "trials done",
            "wall s",
            "Σ training s",
            "before the first trial s",
            "after the last s",
            "overhead s/trial",
            "overhead over warm training s/trial",
            "overhead vs leanml",
            "wall vs leanml",
            f"best {TUNE_METRIC}",
        ],
        body,
    )
    threads = {k: f["threads"] for k, f in done.items()}
    lines += [
        "",
        "*Σ training*: each trial's `train_model` call, timed inside the trial. *overhead s/trial* = "
        f"(wall × {concurrency} − Σ training) / trials: what the tuner adds per trial and slot (set-up, "
        "scheduling, reporting, starting trial processes; for leanml also its closing report and plots). "
        f"*over warm training*: the same with the smallest Σ training of the sides ({num(warm)} s: the same "
        "trainings in processes that already trained once) in place of the side's own, so that what a "
        "fresh process per trial costs inside `train_model` counts as overhead too. The clock starts after "
        "`ray.init` and after the data is prepared (the same for all). torch threads in the trials: "
        f"{', '.join(f'{k} {v:g}' for k, v in threads.items())}.",
    ]
    return lines


def report_estimate(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Part 4: the paper estimate for 8 and 64 nodes."""
    bandwidth = args.bandwidth_gbps * 1e9 / 8  # bytes/s
    alpha = args.latency_us * 1e-6
    lines = [
        f"### estimate for 8 and 64 nodes (network {args.bandwidth_gbps:g} Gb/s per node, "
        f"{args.latency_us:g} µs per message)",
        "",
    ]
    # The largest tables measured (entries() puts them first).
    prepare = next((e for _, e in entries(results, "prepare") if "split_bytes" in e), None)
    measured = [e for _, e in entries(results, "train") if "sides" in e]
    train = next((e for e in measured if e.get("model", "small") == args.model), None)
    ready = prepare is not None
    lines += estimate_prepare(prepare, args, bandwidth) if ready else ["prepare: not measured."]
    lines.append("")
    lines += (
        estimate_train(train, args, bandwidth, alpha)
        if train and "sides" in train
        else ["train: not measured."]
    )
    return lines


def node_workers(args: argparse.Namespace, measured: list[int]) -> int:
    """Workers per node in the estimate: ``--node-workers``, else the most measured here."""
    return int(args.node_workers or max(measured))


def estimate_prepare(part: dict[str, Any], args: argparse.Namespace, bandwidth: float) -> list[str]:
    """The prepare stage at N nodes, scaled from the widest measured Ray run."""
    measured = [
        (int(k.split("-")[1]), s)
        for k, s in part["sides"].items()
        if k.startswith("ray-") and "error" not in s
    ]
    if not measured:
        return ["prepare: no Ray run to scale from."]
    workers, side = max(measured)
    w = node_workers(args, [m for m, _ in measured])
    rows, csv_bytes = part["rows"], part["csv_bytes"]
    phases = side["phases"]
    pieces = 2 * workers

    def wave_seconds(phase: dict[str, Any], p: int, nodes: int) -> float:
        """A wave's time at P workers: its tasks spread over the workers (one task per piece, 2P pieces;
        counting rows: one task per input file), each node reading its share of the input."""
        tasks = int(phase.get("tasks", pieces))
        per_piece = tasks == pieces
        busy_here, busy_there = min(workers, tasks), min(p, tasks * p // workers if per_piece else tasks)
        reading = csv_bytes / ((nodes if per_piece else 1) * bandwidth) if nodes > 1 else 0.0
        return max(phase["seconds"] * busy_here / busy_there, reading)

    parallel = sum(p["seconds"] for p in phases)
    driver = side["stage_s"] - parallel
    rows_bytes = sum(p["bytes"] for p in phases if p["phase"].startswith(("split keys", "transform")))
    piece_bytes = sum(p["bytes"] for p in phases) - rows_bytes
    passes = len(phases) + (1 if any(p["phase"].startswith("datetime") for p in phases) else 0)
    warm = side["warm_s"]
    spread = [p for p in phases if int(p.get("tasks", pieces)) == pieces]
    per_worker = rows / (sum(p["seconds"] for p in spread) * workers)
    serial = [p["phase"] for p in phases if int(p.get("tasks", pieces)) != pieces]
    lines = [
        f"**prepare** of {rows:,} rows, scaled from the run with {workers} worker(s) here "
        f"(a node = {w} worker(s) × {part['cpus_per_worker']:g} CPU; P = N × {w} workers, 2P pieces):",
        "",
        "T(N) = warm-up + Σ_waves max(t_wave × W / P, input / (N × B)) + driver "
        "+ (V_rows + V_pieces × P / W) / B + input / B",
        "",
        f"* waves: {', '.join(p['phase'] for p in phases)}; Σ t_wave = {parallel:.1f} s at W = {workers}. "
        f"The waves spread over the pieces process {per_worker:,.0f} rows/s per worker (all their passes "
        f"together)"
        + (f"; {', '.join(serial)}: one task per input file, not spread" if serial else "")
        + ".",
        f"* input: {size(csv_bytes)}, read {passes} times (once per wave, twice for the datetime formats), "
        f"{size(csv_bytes / pieces)} per piece per pass here; at N nodes each node reads input / N per pass",
        f"* driver: {driver:.1f} s of serial work here (the stage minus its waves: the schema, planning the "
        "pieces and the split cuts, publishing, the input's sha256), held constant",
        f"* results to the driver: V_rows = {size(rows_bytes)} of O(rows) results (the split's histograms "
        f"and the distinct-key counts run on the pieces), V_pieces = {size(piece_bytes)} from {pieces} "
        "pieces (grows with the pieces)",
        f"* serial I/O that crosses the network off one machine: the driver's sha256 of the input "
        f"({size(csv_bytes)}); the splits stay the pieces' files (shards), nothing is joined",
        f"* warm-up: {warm:.1f} s (a worker process per worker importing leanml); `ray.init` is left out "
        "(a cluster that is already running)",
        "",
    ]
    body = []
    for nodes in (1, *args.nodes):
        p = nodes * w
        waves = sum(wave_seconds(ph, p, nodes) for ph in phases)
        network = (rows_bytes + piece_bytes * p / workers) / bandwidth if nodes > 1 else 0.0
        network += csv_bytes / bandwidth if nodes > 1 else 0.0
        total = warm + waves + driver + network
        body.append(
            [
                f"{nodes} × {w}",
                str(p),
                num(waves),
                num(driver),
                num(network),
                num(total),
                num(rows / total, 0),
                ratio(side["stage_s"] + warm, total),
                num(passes * csv_bytes / bandwidth),
            ]
        )
    lines += table(
        [
            "nodes × workers",
            "P",
            "waves s",
            "driver s",
            "network s",
            "total s",
            "rows/s",
            f"vs {workers} worker(s) here",
            "floor with one file server at B s",
        ],
        body,
    )
    lines += [
        "",
        "The driver's share (and its sha256 of the input) does not shrink with nodes: "
        "past a few nodes it bounds the stage (Amdahl). With the input on one shared file server, every "
        "pass reads the whole input through it: the last column (passes × input / B) is then a floor.",
    ]
    return lines


def estimate_train(
    part: dict[str, Any], args: argparse.Namespace, bandwidth: float, alpha: float
) -> list[str]:
    """Data-parallel training at N nodes: compute per step plus a ring all-reduce per step."""
    sides = part["sides"]
    # A worker's own compute: the local loop with a worker's threads (else any local run) gives the
    # model size and the evaluation time; Ray with one worker (else that local run) the time per step.
    threads = f"local-{max(1, int(part['cpus_per_worker']))}"
    locals_ = [s for k, s in sorted(sides.items(), key=lambda i: i[0] != threads) if "params" in s]
    rays = sorted(
        (int(k.split("-")[1]), s) for k, s in sides.items() if k.startswith("ray-") and "error" not in s
    )
    if not locals_ or not rays:
        return ["train: needs the local run (for the model size and the evaluation time) and a Ray run."]
    local = locals_[0]
    w = node_workers(args, [m for m, _ in rays])
    batch, rows = part["batch"], part["train_rows"]
    eval_rows = part["eval_rows"]
    eval_per_row = local["eval_s"] / eval_rows
    one, source = (rays[0][1], "Ray, 1 worker") if rays[0][0] == 1 else (local, "the local loop")
    steps_one = math.ceil(rows / batch)
    compute = (median_epoch(one) - eval_per_row * eval_rows) / steps_one
    grads = local["params"] * 4
    full_rows, full_eval = part["full_rows"]["train"], part["full_rows"]["validation"]
    lines = [
        f"**train**, an epoch over all {full_rows:,} training rows of the {part['rows']:,}-row table, "
        f"{full_eval:,} validation rows shared among the workers, batch {batch} per worker; "
        f"a node = {w} worker(s) × {part['cpus_per_worker']:g} CPU, P = N × {w} workers in one ring:",
        "",
        "t_step(P) = t_compute + 2(P − 1)/P × S / B + 2(P − 1) × α;  "
        "T_epoch(P) = ⌈rows / (P × batch)⌉ × t_step(P) + validation rows / P × t_eval + "
        "(P − 1)/P × validation rows × 16 B / B (each worker scores its share; all receive every scored row)",
        "",
        f"* t_compute = {compute * 1e3:.2f} ms per step (measured: {source}, "
        f"{num(median_epoch(one), 2)} s/epoch over {steps_one} steps, minus its validation pass)",
        f"* S = {local['params']:,} parameters × 4 bytes = {size(grads)} of gradients per step; "
        f"B = {args.bandwidth_gbps:g} Gb/s; α = {args.latency_us:g} µs",
        f"* t_eval = {eval_per_row * 1e6:.2f} µs per validation row (measured locally, "
        f"{local['threads']} thread(s))",
    ]
    for workers, side in rays:
        if workers == 1:
            continue
        steps = math.ceil((rows // workers) / batch)
        step = (median_epoch(side) - eval_per_row * eval_rows / workers) / steps
        lines.append(
            f"* measured here with {workers} workers: {step * 1e3:.2f} ms per step "
            f"(+{(step - compute) * 1e3:.2f} ms: the all-reduce over gloo on one machine, and contention)"
        )
    lines.append("")
    body = []
    single = None
    for nodes in (1, *args.nodes):
        p = nodes * w
        comm = 2 * (p - 1) / p * grads / bandwidth + 2 * (p - 1) * alpha if p > 1 else 0.0
        steps = math.ceil(full_rows / (p * batch))
        scored = (p - 1) / p * full_eval * SCORED_ROW_BYTES / bandwidth
        epoch = steps * (compute + comm) + full_eval * eval_per_row / p + scored
        if single is None:
            single = math.ceil(full_rows / batch) * compute + full_eval * eval_per_row
        body.append(
            [
                f"{nodes} × {w}",
                str(p),
                f"{compute * 1e3:.2f} + {comm * 1e3:.2f}",
                f"{steps:,}",
                num(epoch),
                num(full_rows / epoch, 0),
                ratio(single, epoch),
                f"{p * batch:,}",
            ]
        )
    lines += table(
        [
            "nodes × workers",
            "P",
            "t_step ms (compute + all-reduce)",
            "steps/epoch",
            "s/epoch",
            "rows/s",
            "vs 1 worker",
            "global batch",
        ],
        body,
    )
    lines += [
        "",
        "Throughput only: the global batch grows with P, so an epoch at 64 nodes takes far fewer, larger "
        "steps, which usually needs a larger learning rate and more epochs to reach the same score.",
    ]
    return lines


def machine() -> str:
    """The machine and versions, in one line (Ray's version without importing it)."""
    import optuna
    import polars
    import torch

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return (
        f"{os.cpu_count()} CPUs, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, Ray {importlib.metadata.version('ray')}, "
        f"polars {polars.__version__}, torch {torch.__version__}, optuna {optuna.__version__}"
    )


def entry_key(part: str, args: argparse.Namespace) -> str:
    """Where a part's results are kept: one entry per part and size, so that runs of other sizes (a
    smaller table for the 1 and 2 worker runs) do not replace them."""
    if part == "tune":
        return f"tune {args.tune_trials}x{args.tune_concurrency} {args.tune_rows} rows"
    if part == "train" and args.model != "small":  # the small model's entries keep their older key
        return f"train {args.rows} rows, {args.model} model"
    return f"{part} {args.rows} rows"


def entries(results: dict[str, Any], part: str) -> list[tuple[str, dict[str, Any]]]:
    """The stored entries of ``part``, the largest table first."""
    found = [(k, e) for k, e in results.get("parts", {}).items() if k.split(" ")[0] == part]
    return sorted(found, key=lambda item: -int(item[1].get("rows", 0)))


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The whole report in Markdown."""
    lines = [f"Machine: {results['machine']}", ""]
    renderers = {"prepare": report_prepare, "train": report_train, "tune": report_tune}
    for part in PARTS:
        for key, entry in entries(results, part):
            when = "" if entry.get("run") == args.run else f" (an earlier command, {entry['measured']})"
            if "error" in entry:
                lines += [f"### {key}{when}: {entry['error']}", ""]
                continue
            body = renderers[part](entry)
            body[0] += when
            lines += [*body, ""]
    lines += report_estimate(results, args)
    return "\n".join(lines).strip() + "\n"


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------
SIDES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "prepare-local": side_prepare_local,
    "prepare-ray": side_prepare_ray,
    "train-local": side_train_local,
    "train-ray": side_train_ray,
    "tune-leanml": side_tune_leanml,
    "tune-raytune": side_tune_raytune,
}


def load_results(machine_line: str) -> dict[str, Any]:
    """Earlier results of this machine (parts run by other commands), or none."""
    path = OUT / "results.json"
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    return earlier if earlier.get("machine") == machine_line else {}


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows of the synthetic CSV (prepare)")
    parser.add_argument("--train-rows", type=int, default=2_000_000, help="training rows used (0: all)")
    parser.add_argument("--eval-rows", type=int, default=50_000, help="validation and test rows in train")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the train part")
    parser.add_argument(
        "--model", choices=TRAIN_MODELS, default="init", help="train: what init writes, or the small MLP"
    )
    parser.add_argument("--workers", default="1,2", help="Ray worker counts, e.g. 1,2,4,8")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument(
        "--only", default=",".join(PARTS), help="parts to run: prepare,train,tune (data: only the CSV)"
    )
    parser.add_argument(
        "--local-threads", type=int, default=None, help="threads of the local sides (default: all cores)"
    )
    parser.add_argument("--tune-trials", type=int, default=8, help="grid points (even)")
    parser.add_argument("--tune-concurrency", type=int, default=2)
    parser.add_argument("--tune-rows", type=int, default=50_000)
    parser.add_argument("--tune-epochs", type=int, default=2)
    parser.add_argument("--bandwidth-gbps", type=float, default=10.0, help="network per node (estimate)")
    parser.add_argument("--latency-us", type=float, default=50.0, help="per message (estimate)")
    parser.add_argument("--nodes", default="8,64", help="node counts of the estimate")
    parser.add_argument("--node-workers", type=int, default=None, help="workers per node (estimate)")
    parser.add_argument("--keep-outputs", action="store_true", help="keep the Ray sides' prepared folders")
    parser.add_argument(
        "--reuse-local",
        action="store_true",
        help="prepare: keep an earlier command's local side (same rows) instead of running it again",
    )
    parser.add_argument("--side-timeout", type=float, default=1800.0, help="seconds allowed per side")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (200,000 rows)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--report", action="store_true", help="only print the report of results.json")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--params", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return args
    if args.quick:
        args.rows = min(args.rows, 200_000)
        args.train_rows = min(args.train_rows or 100_000, 100_000)
        args.eval_rows = min(args.eval_rows, 20_000)
        args.tune_rows = min(args.tune_rows, 10_000)
    args.workers = sorted({int(w) for w in str(args.workers).split(",") if w.strip()})
    args.nodes = [int(n) for n in str(args.nodes).split(",") if n.strip()]
    args.only = [p.strip() for p in str(args.only).split(",") if p.strip()]
    unknown = sorted(set(args.only) - set(STEPS))
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    if args.tune_trials < 2 or args.tune_trials % 2:
        parser.error("--tune-trials must be an even number ≥ 2 (learning rates × 2 hidden layouts)")
    args.train_rows = args.train_rows or None
    return args


def main() -> None:
    """Run the chosen parts (or one side, in a subprocess); print and write the report."""
    drop_script_folder()
    args = parse_args()
    args.run = dt.datetime.now().isoformat(timespec="seconds")
    if args.side:
        result = SIDES[args.side](json.loads(args.params))
        print(RESULT_MARK + json.dumps(result), flush=True)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    machine_line = machine()
    console.print(f"Machine: {machine_line}")
    results = load_results(machine_line)
    results["machine"] = machine_line
    results.setdefault("parts", {})
    runners = {"prepare": part_prepare, "train": part_train, "tune": part_tune}
    if args.report:  # nothing runs: the report of what results.json holds
        (OUT / "ray.md").write_text(render(results, args))
        print("\n" + render(results, args))
        return

    def save(part: str, entry: dict[str, Any]) -> None:
        """Keep what is measured so far (a command stopped by a time limit still leaves its sides)."""
        entry["measured"] = dt.datetime.now().isoformat(timespec="seconds")
        entry["run"] = args.run
        results["parts"][entry_key(part, args)] = entry
        (OUT / "results.json").write_text(json.dumps(results, indent=1))
        (OUT / "ray.md").write_text(render(results, args))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))

    if "data" in args.only:
        write_data(args)
        if args.only == ["data"]:
            return
    for part in [p for p in args.only if p in PARTS]:
        start = time.perf_counter()
        earlier = results["parts"].get(entry_key(part, args))
        entry = runners[part](args, earlier, lambda entry, part=part: save(part, entry))
        entry["seconds"] = time.perf_counter() - start
        save(part, entry)
        console.print(f"[green]✓[/green] {part} part done in {entry['seconds']:.0f}s\n")
    print("\n" + render(results, args))


if __name__ == "__main__":
    main()
