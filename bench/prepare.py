"""Prepare: leanml's analyze/transform vs scikit-learn's ColumnTransformer, and prepare under a memory cap.

Case 1 (SPEC §4: ≥ 3× faster than scikit-learn, less peak memory). The same synthetic rows (10 numeric and
5 categorical columns, 5 % nulls, no datetime) are read from one Parquet file and preprocessed with the
same configuration by

* **leanml**: ``fit_preprocessor`` + ``transform`` on an in-memory polars DataFrame;
* **leanml → numpy**: the same, then ``feature_matrix`` (one contiguous float64 array, as scikit-learn
  returns);
* **scikit-learn**: ``ColumnTransformer`` (``SimpleImputer(median)`` → ``StandardScaler`` for numbers,
  ``SimpleImputer(most_frequent)`` → ``OneHotEncoder(handle_unknown='ignore', min_frequency=…)`` for
  categories) ``fit_transform`` on a pandas DataFrame (read through pyarrow);
* **leanml prepare()**: the whole stage from the Parquet file (split 80/10/10, fit on the training split,
  transform and write three float32 Parquet splits and the quality report), as an extra row.

Each side runs in a fresh subprocess of this script (``--side``), so the two never share a heap; the
input is loaded inside the measured process. Time is measured inside the process from the start of the
load to the end of the transform; peak memory is the process's peak RSS (``ru_maxrss`` from ``wait4``)
and its peak anonymous RSS (``RssAnon`` sampled every 20 ms: heap only, without memory-mapped file pages).
Sides are interleaved ``--repeats`` times and the median is reported. Before timing, one unmeasured
process checks that leanml's features equal scikit-learn's, column for column.

Case 2 (SPEC §4: a file 2× larger than a memory cap finishes under the cap). A synthetic CSV (with the
datetime column) about twice the cap on disk is written, then, each under the cap (a child memory cgroup,
created next to this process's own), a plain ``pl.read_csv`` of the file (the control, expected to be
killed) and ``leanml prepare CONFIG -q`` (expected to finish) are run.

Run: ``.venv/bin/python bench/prepare.py`` (about 3 minutes on 2 cores, 2 once the data files exist);
``--quick`` for a small smoke run; ``--rows``, ``--repeats``, ``--cap-mib``, ``--cap-rows``, ``--only`` to
change the sizes. Data and outputs go to ``bench/out/prepare/`` (git-ignored); the tables are printed as
Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "prepare"
PYTHON = sys.executable
LEANML_CLI = str(Path(PYTHON).with_name("leanml"))
NUMERIC, CATEGORICAL = 10, 5
NULL_SHARE = 0.05
MIN_FREQUENCY = 0.01  # a fraction of the rows on both sides: the rarest levels of cat_0 become infrequent
CHUNK_ROWS = 500_000
MIB = 1 << 20
SIDES = ("leanml", "leanml-numpy", "sklearn", "prepare")


# --------------------------------------------------------------------------------------------------
# Data and configuration (shared by both sides)
# --------------------------------------------------------------------------------------------------
def column_config(with_datetime: bool = False) -> dict[str, Any]:
    """The ``columns`` section both sides implement."""
    columns: dict[str, Any] = {
        f"num_{i}": {"type": "numeric", "impute": "median", "scale": "standard"} for i in range(NUMERIC)
    }
    for i in range(CATEGORICAL):
        columns[f"cat_{i}"] = {
            "type": "categorical",
            "impute": "most_frequent",
            "min_frequency": MIN_FREQUENCY,
            "handle_unknown": "ignore",
        }
    if with_datetime:
        columns["event_time"] = {"type": "datetime", "parts": ["hour", "dayofweek", "month"], "epoch": True}
    return columns


def raw_config(train: Path, with_datetime: bool = False) -> dict[str, Any]:
    """A whole leanml config for the synthetic table at ``train``."""
    return {
        "name": "bench",
        "data": {"train": str(train)},
        "target": "label",
        "columns": column_config(with_datetime),
    }


def synthetic_chunks(rows: int, with_datetime: bool) -> Iterator[Any]:
    """The synthetic table in chunks, with every text column typed as text.

    ``write_synthetic`` is not used because ``synthetic_chunk`` builds text columns from numpy object
    arrays: when a chunk's first value is null, polars 2.1 types the column ``Object``, which CSV and
    Parquet writers refuse (first seen at the chunk starting at row 6,000,000). The chunks are re-typed here.
    """
    import polars as pl

    from leanml.data.synthetic import SyntheticSpec, synthetic_chunk

    spec = SyntheticSpec(
        rows=rows,
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        null_share=NULL_SHARE,
        with_datetime=with_datetime,
    )
    for start in range(0, rows, CHUNK_ROWS):
        chunk = synthetic_chunk(spec, start, min(CHUNK_ROWS, rows - start))
        objects = [name for name, dtype in chunk.schema.items() if dtype == pl.Object]
        yield chunk.with_columns([pl.Series(n, chunk[n].to_list(), dtype=pl.String) for n in objects])


def write_table(path: Path, rows: int, with_datetime: bool) -> Path:
    """Write the synthetic table to ``path`` (Parquet or CSV) once; later runs reuse the file."""
    import pyarrow.parquet as pq

    from leanml.files import atomic_path

    if path.exists():
        return path
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        writer: pq.ParquetWriter | None = None
        for index, chunk in enumerate(synthetic_chunks(rows, with_datetime)):
            if path.suffix == ".csv":
                chunk.write_csv(handle, include_header=index == 0)
            else:
                table = chunk.to_arrow()
                writer = writer or pq.ParquetWriter(handle, table.schema, compression="zstd")
                writer.write_table(table)
        if writer is not None:
            writer.close()
    return path


# --------------------------------------------------------------------------------------------------
# The measured sides (each runs alone in a fresh process: ``--side NAME --input PATH``)
# --------------------------------------------------------------------------------------------------
def rss_now_mib() -> float:
    """This process's resident memory now."""
    return proc_status_mib("self", ("VmRSS",))["VmRSS"]


def leanml_features(path: Path, to_numpy: bool) -> dict[str, float]:
    """Load the Parquet file with polars, fit and transform; optionally build the numpy matrix."""
    import polars as pl

    from leanml.config import parse_config
    from leanml.data.preprocessor import feature_matrix, fit_preprocessor, transform
    from leanml.data.state import TargetState

    config = parse_config(raw_config(path))
    target = TargetState(name="label", task="binary", classes=["0", "1"], labels=[0, 1])
    imported = rss_now_mib()
    t0 = time.perf_counter()
    frame = pl.read_parquet(path)
    t1 = time.perf_counter()
    state = fit_preprocessor(frame, config.columns, target, config.data.null_values)
    t2 = time.perf_counter()
    out = transform(frame, state, mode="serve")
    t3 = time.perf_counter()
    result = {"load": t1 - t0, "fit": t2 - t1, "transform": t3 - t2, "imported_mib": imported}
    if to_numpy:
        matrix = feature_matrix(out, state)  # type: ignore[arg-type]
        result["numpy"] = time.perf_counter() - t3
        result["features"] = matrix.shape[1]
    else:
        result["features"] = len(state.feature_names)
    result["total"] = time.perf_counter() - t0
    return result


def sklearn_transformer() -> Any:
    """scikit-learn's equivalent of :func:`column_config`."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        OneHotEncoder(handle_unknown="ignore", min_frequency=MIN_FREQUENCY, sparse_output=False),
    )
    return ColumnTransformer(
        [
            ("num", numeric, [f"num_{i}" for i in range(NUMERIC)]),
            ("cat", categorical, [f"cat_{i}" for i in range(CATEGORICAL)]),
        ],
        verbose_feature_names_out=False,
    )


def sklearn_features(path: Path) -> dict[str, float]:
    """Load the Parquet file with pandas (pyarrow) and ``fit_transform`` the ColumnTransformer."""
    import pandas as pd

    transformer = sklearn_transformer()
    imported = rss_now_mib()
    t0 = time.perf_counter()
    frame = pd.read_parquet(path, engine="pyarrow")
    t1 = time.perf_counter()
    matrix = transformer.fit_transform(frame)
    t2 = time.perf_counter()
    return {
        "load": t1 - t0,
        "fit+transform": t2 - t1,
        "total": t2 - t0,
        "imported_mib": imported,
        "features": matrix.shape[1],
    }


def prepare_stage(path: Path, out_dir: Path) -> dict[str, float]:
    """The whole prepare stage from the file, as a user runs it."""
    from leanml.config import parse_config
    from leanml.data.prepare import prepare

    config = parse_config(raw_config(path))
    imported = rss_now_mib()
    t0 = time.perf_counter()
    result = prepare(config, out_dir=out_dir)
    return {
        "total": time.perf_counter() - t0,
        "imported_mib": imported,
        "features": len(result.state.feature_names),
    }


def check_equal(path: Path) -> dict[str, Any]:
    """leanml's features against scikit-learn's, matched by name: the largest absolute difference."""
    import numpy as np
    import pandas as pd
    import polars as pl

    from leanml.config import parse_config
    from leanml.data.preprocessor import fit_preprocessor, transform
    from leanml.data.state import INFREQUENT, TargetState

    config = parse_config(raw_config(path))
    target = TargetState(name="label", task="binary", classes=["0", "1"], labels=[0, 1])
    frame = pl.read_parquet(path)
    state = fit_preprocessor(frame, config.columns, target, config.data.null_values)
    ours = transform(frame, state, mode="serve")
    transformer = sklearn_transformer()
    theirs = transformer.fit_transform(pd.read_parquet(path, engine="pyarrow"))
    index = {name: i for i, name in enumerate(transformer.get_feature_names_out())}

    def sklearn_name(feature: str) -> str:
        column, _, category = feature.partition("=")
        if not category:
            return feature
        return f"{column}_infrequent_sklearn" if category == INFREQUENT else f"{column}_{category}"

    names = [sklearn_name(f) for f in state.feature_names]
    missing = sorted(set(names) - set(index))
    extra = sorted(set(index) - set(names))
    diff = math.inf
    if not missing and not extra:
        diffs = [
            float(np.max(np.abs(ours[f].to_numpy() - theirs[:, index[n]])))
            for f, n in zip(state.feature_names, names, strict=True)
        ]
        diff = max(diffs)
    same_order = [index.get(n) for n in names] == list(range(len(names)))
    return {
        "leanml_features": len(names),
        "sklearn_features": len(index),
        "max_abs_diff": diff,
        "same_order": same_order,
        "missing_in_sklearn": missing[:5],
        "extra_in_sklearn": extra[:5],
    }


def load_control(path: Path) -> dict[str, float]:
    """The control of case 2: a plain full load of the CSV with polars (types inferred)."""
    import polars as pl

    t0 = time.perf_counter()
    frame = pl.read_csv(path)
    return {"total": time.perf_counter() - t0, "in_memory_mib": frame.estimated_size() / MIB}


def run_side(args: argparse.Namespace) -> None:
    """Entry point of a measured subprocess: print one JSON line with the figures."""
    path = Path(args.input)
    if args.side == "leanml":
        result: dict[str, Any] = leanml_features(path, to_numpy=False)
    elif args.side == "leanml-numpy":
        result = leanml_features(path, to_numpy=True)
    elif args.side == "sklearn":
        result = sklearn_features(path)
    elif args.side == "prepare":
        result = prepare_stage(path, OUT / "prepared-case1")
    elif args.side == "check":
        result = check_equal(path)
    elif args.side == "load-control":
        result = load_control(path)
    else:
        raise SystemExit(f"unknown side {args.side!r}")
    result["peak_rss_mib"] = proc_status_mib("self", ("VmHWM",))["VmHWM"]
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------
# Running a subprocess and measuring its peak memory
# --------------------------------------------------------------------------------------------------
@dataclass
class Measured:
    """One finished subprocess: exit code, wall time, peak memory, its JSON result and output."""

    returncode: int
    wall: float
    peak_rss_mib: float
    peak_anon_mib: float
    result: dict[str, Any]
    stdout: str
    stderr: str
    cgroup: dict[str, float] = field(default_factory=dict)

    @property
    def killed(self) -> bool:
        """Ended by SIGKILL (the OOM killer, or the timeout)."""
        return self.returncode == -9


def proc_status_mib(pid: int | str, keys: tuple[str, ...]) -> dict[str, float]:
    """Fields of ``/proc/PID/status`` in MiB (``VmHWM`` is the peak RSS of the current program)."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in keys:
            values[key] = int(line.split()[1]) / 1024
    return values


def _sample_peaks(pid: int, stop: threading.Event, peaks: dict[str, float]) -> None:
    while not stop.is_set():
        try:
            now = proc_status_mib(pid, ("VmHWM", "RssAnon"))
        except OSError:
            return
        for key, value in now.items():
            peaks[key] = max(peaks.get(key, 0.0), value)
        stop.wait(0.02)


def measure(command: list[str], timeout: float | None = None) -> Measured:
    """Run ``command`` to its end, sampling its memory every 20 ms.

    Peak RSS is the ``VmHWM`` the process reports for itself at its end when it does, else the last one
    sampled. (``ru_maxrss`` from ``wait4`` is not used: Linux carries the parent's peak over ``fork`` and
    ``exec`` into it, so it is never below this script's own RSS.)
    """
    OUT.mkdir(parents=True, exist_ok=True)
    out_path, err_path = OUT / "last-stdout.txt", OUT / "last-stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        stop, peaks = threading.Event(), {"VmHWM": 0.0, "RssAnon": 0.0}
        sampler = threading.Thread(target=_sample_peaks, args=(proc.pid, stop, peaks), daemon=True)
        sampler.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    result: dict[str, Any] = {}
    for line in reversed(stdout.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            result = json.loads(line) if line.startswith("{") else {}
        if result:
            break
    peak = float(result.get("peak_rss_mib", peaks["VmHWM"]))
    return Measured(proc.returncode, wall, peak, peaks["RssAnon"], result, stdout, stderr)


def side_command(side: str, path: Path) -> list[str]:
    """The command that runs one side of this benchmark in a fresh interpreter."""
    return [PYTHON, str(Path(__file__).resolve()), "--side", side, "--input", str(path)]


# --------------------------------------------------------------------------------------------------
# A memory cap: a child memory cgroup of this process's own cgroup (v1 or v2)
# --------------------------------------------------------------------------------------------------
class MemoryCap:
    """Runs commands inside a fresh memory cgroup limited to ``limit`` bytes (page cache included).

    cgroup v1 (``memory`` controller) and cgroup v2 (``memory.max``) are supported; creating the child
    needs write access to this process's cgroup (root in a container). ``find`` returns None when neither
    works here; ``prlimit --as`` is not used because address-space limits break jemalloc and thread
    stacks long before resident memory runs out.
    """

    def __init__(self, parent: Path, version: int, limit: int) -> None:
        self.parent, self.version, self.limit = parent, version, limit
        self.runs = 0

    @property
    def mechanism(self) -> str:
        """How the cap is applied, in words."""
        key = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        return f"cgroup v{self.version} child of {self.parent} ({key})"

    @classmethod
    def find(cls, limit: int) -> MemoryCap | None:
        """The first cgroup mechanism that accepts a limit here, or None."""
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                candidate = cls(Path("/sys/fs/cgroup/memory") / path.lstrip("/"), 1, limit)
            elif controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
                candidate = cls(Path("/sys/fs/cgroup") / path.lstrip("/"), 2, limit)
            else:
                continue
            if candidate.works():
                return candidate
        return None

    def works(self) -> bool:
        """Whether a child cgroup with the limit can be made (and removed) here."""
        try:
            child = self._make_child()
        except OSError:
            return False
        child.rmdir()
        return True

    def _make_child(self) -> Path:
        self.runs += 1
        child = self.parent / f"leanml-bench-{os.getpid()}-{self.runs}"
        child.mkdir()
        try:
            if self.version == 1:
                (child / "memory.limit_in_bytes").write_text(str(self.limit))
                # Also forbid swap where the kernel accounts it (no effect on a machine without swap).
                with contextlib.suppress(OSError):
                    (child / "memory.memsw.limit_in_bytes").write_text(str(self.limit))
            else:
                (child / "memory.max").write_text(str(self.limit))
                (child / "memory.swap.max").write_text("0")
        except OSError:
            child.rmdir()
            raise
        return child

    def run(self, command: list[str], timeout: float) -> Measured:
        """Run ``command`` inside a fresh capped cgroup; report the cgroup's peak and OOM kills too."""
        child = self._make_child()
        try:
            wrapped = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(child), *command]
            measured = measure(wrapped, timeout=timeout)
            measured.cgroup = self._counters(child)
        finally:
            for _ in range(50):  # the killed process may take a moment to leave the cgroup
                try:
                    child.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        return measured

    def _counters(self, child: Path) -> dict[str, float]:
        def read(name: str) -> str:
            try:
                return (child / name).read_text()
            except OSError:
                return ""

        if self.version == 1:
            events = dict(line.split() for line in read("memory.oom_control").splitlines() if line.strip())
            peak = read("memory.max_usage_in_bytes").strip()
        else:
            events = dict(line.split() for line in read("memory.events").splitlines() if line.strip())
            peak = read("memory.peak").strip()
        return {
            "peak_mib": int(peak) / MIB if peak else math.nan,
            "oom_kills": int(events.get("oom_kill", 0)),
        }


# --------------------------------------------------------------------------------------------------
# Case 1
# --------------------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    """Median of the values that are not NaN."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def case_compare(rows: int, repeats: int) -> list[str]:
    """Run case 1; return its Markdown report."""
    path = write_table(OUT / f"synthetic-{rows}.parquet", rows, with_datetime=False)
    print(f"case 1: {rows:,} rows in {path} ({path.stat().st_size / MIB:.1f} MiB)", flush=True)
    check = measure(side_command("check", path))
    if check.returncode != 0:
        raise SystemExit(f"the equality check failed:\n{check.stderr[-3000:]}")
    print(f"  check: {check.result}", flush=True)

    runs: dict[str, list[Measured]] = {side: [] for side in SIDES}
    for repeat in range(repeats):
        for side in SIDES:
            run = measure(side_command(side, path))
            if run.returncode != 0:
                raise SystemExit(f"side {side} failed:\n{run.stderr[-3000:]}")
            runs[side].append(run)
            print(
                f"  repeat {repeat + 1} {side:13s} {run.result['total']:6.2f} s  "
                f"peak {run.peak_rss_mib:6.0f} MiB",
                flush=True,
            )

    def figures(side: str) -> dict[str, float]:
        done = runs[side]
        keys = {k for run in done for k, v in run.result.items() if isinstance(v, float)}
        out = {k: median([run.result.get(k, math.nan) for run in done]) for k in keys}
        out["wall"] = median([run.wall for run in done])
        out["peak"] = median([run.peak_rss_mib for run in done])
        out["anon"] = median([run.peak_anon_mib for run in done])
        return out

    fig = {side: figures(side) for side in SIDES}
    sk, ours, numpy_side = fig["sklearn"], fig["leanml"], fig["leanml-numpy"]
    labels = {
        "leanml": "leanml fit_preprocessor + transform (polars DataFrame)",
        "leanml-numpy": "leanml, then feature_matrix (numpy float64)",
        "sklearn": "scikit-learn ColumnTransformer.fit_transform",
        "prepare": "leanml prepare() from the file (extra: split, 3 float32 Parquet sinks, report)",
    }

    def cell(value: float, digits: int = 2) -> str:
        return "–" if math.isnan(value) else f"{value:.{digits}f}"

    lines = [
        f"Case 1: {rows:,} rows, {check.result['leanml_features']} features; median of {repeats} fresh "
        f"processes per side, interleaved.",
        "",
        f"Equality: max |leanml − scikit-learn| = {check.result['max_abs_diff']:.2e} over "
        f"{check.result['leanml_features']} columns matched by name (same column order: "
        f"{check.result['same_order']}).",
        "",
        "| side | load s | fit s | transform s | total s | process s | peak RSS MiB | peak anon MiB "
        "| after imports MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for side in SIDES:
        f = fig[side]
        fit = f.get("fit", math.nan)
        transform = f.get("transform", math.nan) + f.get("numpy", 0.0)
        if side == "sklearn":
            fit, transform = math.nan, f["fit+transform"]
        lines.append(
            f"| {labels[side]} | {cell(f.get('load', math.nan))} | {cell(fit)} | {cell(transform)} | "
            f"{cell(f['total'])} | {cell(f['wall'])} | {f['peak']:.0f} | {f['anon']:.0f} | "
            f"{f['imported_mib']:.0f} |"
        )
    lines += [
        "",
        "| ratio (scikit-learn / leanml) | time | peak RSS | peak anon |",
        "|---|---:|---:|---:|",
        f"| leanml DataFrame | {sk['total'] / ours['total']:.2f}× | {sk['peak'] / ours['peak']:.2f}× | "
        f"{sk['anon'] / ours['anon']:.2f}× |",
        f"| leanml → numpy | {sk['total'] / numpy_side['total']:.2f}× | "
        f"{sk['peak'] / numpy_side['peak']:.2f}× | {sk['anon'] / numpy_side['anon']:.2f}× |",
        "",
        "For scikit-learn the fit and transform are one `fit_transform` call (calling `fit` then `transform`",
        "would transform twice). *process s* includes interpreter start and imports; *after imports* is the",
        "RSS before the input is read.",
    ]
    return lines


# --------------------------------------------------------------------------------------------------
# Case 2
# --------------------------------------------------------------------------------------------------
def csv_bytes_per_row() -> float:
    """Average size of a row of the synthetic CSV (from a sample chunk)."""
    import io

    sample = next(synthetic_chunks(20_000, with_datetime=True))
    buffer = io.BytesIO()
    sample.write_csv(buffer)
    return buffer.tell() / sample.height


def in_memory_estimate(path: Path, rows: int) -> float:
    """Size in MiB of the whole CSV as ``pl.read_csv`` would load it, scaled up from its first rows."""
    import polars as pl

    sample = pl.read_csv(path, n_rows=200_000)
    return sample.estimated_size() / MIB * rows / sample.height


def steps_done(stdout: str) -> list[str]:
    """The prepare steps the CLI reported as finished (``✓ Step (1.2s)``)."""
    return [line.strip().lstrip("✓").strip() for line in stdout.splitlines() if line.strip().startswith("✓")]


def case_cap(cap_mib: int, cap_rows: int | None, timeout: float) -> list[str]:
    """Run case 2; return its Markdown report."""
    import yaml

    cap = MemoryCap.find(cap_mib * MIB)
    if cap is None:
        return [f"Case 2 skipped: no memory cgroup could be created here (cap {cap_mib} MiB)."]
    rows = cap_rows or int(math.ceil(2.05 * cap_mib * MIB / csv_bytes_per_row() / 100_000) * 100_000)
    path = OUT / f"synthetic-{rows}.csv"
    print(f"case 2: writing {rows:,} rows to {path} …", flush=True)
    write_table(path, rows, with_datetime=True)
    disk_mib = path.stat().st_size / MIB
    memory_mib = in_memory_estimate(path, rows)
    print(
        f"  {disk_mib:,.0f} MiB on disk, ≈ {memory_mib:,.0f} MiB loaded; "
        f"cap {cap_mib} MiB via {cap.mechanism}",
        flush=True,
    )

    control = cap.run(side_command("load-control", path), timeout=timeout)
    print(
        f"  control: exit {control.returncode}, {control.wall:.1f} s, peak {control.peak_rss_mib:.0f} MiB",
        flush=True,
    )

    config_path = OUT / "capped" / "leanml.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config = raw_config(path, with_datetime=True)
    # event_time has ~one distinct value per row: an exact median would keep a count per distinct value
    # (README, Limits), so this column is imputed with its mean, which is constant memory.
    config["columns"]["event_time"]["impute"] = "mean"
    config["workdir"] = str(OUT / "capped" / "runs")
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [LEANML_CLI, "prepare", str(config_path), "-q", "-o", str(OUT / "capped" / "prepared")]
    ours = cap.run(command, timeout=timeout)
    steps = steps_done(ours.stdout)
    print(
        f"  leanml prepare: exit {ours.returncode}, {ours.wall:.1f} s, peak {ours.peak_rss_mib:.0f} MiB; "
        f"steps done: {steps}",
        flush=True,
    )

    def outcome(run: Measured) -> str:
        if run.returncode == 0:
            return "finished"
        if run.killed and run.cgroup.get("oom_kills", 0) > 0:
            return "killed by the OOM killer"
        if run.killed:
            return f"killed at the {timeout:.0f} s timeout"
        return f"failed (exit {run.returncode})"

    lines = [
        f"Case 2: cap {cap_mib} MiB ({cap.mechanism}); input {path.name}: {rows:,} rows, "
        f"{disk_mib:,.0f} MiB on disk ({disk_mib / cap_mib:.1f}× the cap), ≈ {memory_mib:,.0f} MiB as loaded "
        f"by `pl.read_csv` ({memory_mib / cap_mib:.1f}× the cap, estimated from the first 200,000 rows).",
        "",
        "| run under the cap | outcome | wall s | peak RSS MiB | peak anon MiB "
        "| cgroup peak MiB (incl. page cache) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, run in (("control: `pl.read_csv(file)`", control), ("`leanml prepare CONFIG -q`", ours)):
        lines.append(
            f"| {name} | {outcome(run)} | {run.wall:.1f} | {run.peak_rss_mib:.0f} | "
            f"{run.peak_anon_mib:.0f} | {run.cgroup.get('peak_mib', math.nan):.0f} |"
        )
    lines += ["", f"Steps leanml finished before it ended: {', '.join(steps) if steps else 'none'}."]
    if ours.returncode != 0 and not ours.killed:
        lines.append(
            f"leanml's error output: `{ours.stderr.strip().splitlines()[-1] if ours.stderr.strip() else ''}`"
        )
    return lines


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------
def machine() -> str:
    """The machine and versions, in one line."""
    import numpy
    import pandas
    import polars
    import sklearn

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return (
        f"{os.cpu_count()} CPUs, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, polars {polars.__version__}, pandas {pandas.__version__}, "
        f"scikit-learn {sklearn.__version__}, numpy {numpy.__version__}"
    )


def main() -> None:
    """Parse the arguments; run the cases (or one side, in a subprocess) and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of case 1")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per side in case 1")
    parser.add_argument("--cap-mib", type=int, default=1024, help="memory cap of case 2")
    parser.add_argument("--cap-rows", type=int, default=None, help="rows of case 2 (default: 2× the cap)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per capped run")
    parser.add_argument("--quick", action="store_true", help="small sizes: 100,000 rows, a 384 MiB cap")
    parser.add_argument("--only", choices=["compare", "cap"], default=None, help="run one case only")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--input", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side(args)
        return
    if args.quick:
        args.rows, args.cap_mib = min(args.rows, 100_000), min(args.cap_mib, 384)

    print(f"Machine: {machine()}\n", flush=True)
    report: list[str] = []
    if args.only in (None, "compare"):
        report += case_compare(args.rows, args.repeats)
    if args.only in (None, "cap"):
        report += ["", *case_cap(args.cap_mib, args.cap_rows, args.timeout)]
    print("\n" + "\n".join(report).strip())


if __name__ == "__main__":
    main()
