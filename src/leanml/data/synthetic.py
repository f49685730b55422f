"""A seeded synthetic table for tests and benchmarks, generated chunk by chunk (any size, bounded memory).

Columns: ``num_0 …`` (normal, different locations and scales, two decimals, with a share of extreme
outliers), ``cat_0 …`` (skewed categories, 4 to ~60 levels, some rare), ``event_time`` (a datetime in 2024)
and the target ``label`` (0/1, from a noisy linear rule of the features, so it is learnable). Each feature
column has ``null_share`` nulls. The same spec always gives the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from leanml.data.io import table_format
from leanml.files import atomic_path

START_2024 = np.datetime64("2024-01-01T00:00:00", "us")
SECONDS_2024 = 366 * 24 * 3600


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate."""

    rows: int = 100_000
    numeric: int = 10
    categorical: int = 5
    null_share: float = 0.05
    outlier_share: float = 0.005
    seed: int = 0
    with_datetime: bool = True


def synthetic_chunk(spec: SyntheticSpec, start: int, rows: int) -> pl.DataFrame:
    """Rows ``start`` to ``start + rows`` of the table (deterministic per chunk)."""
    rng = np.random.default_rng([spec.seed, start])
    shape = np.random.default_rng(spec.seed)  # column parameters do not depend on the chunk
    locs = shape.normal(0, 50, spec.numeric)
    scales = shape.uniform(0.5, 20, spec.numeric)
    levels = [int(x) for x in shape.integers(4, 60, spec.categorical)]
    weights = shape.normal(0, 1, spec.numeric)
    cat_effects = [shape.normal(0, 1, n) for n in levels]

    columns: dict[str, np.ndarray] = {}
    score = np.zeros(rows)
    for j in range(spec.numeric):
        z = rng.normal(size=rows)
        score += weights[j] * z
        values = np.round(locs[j] + scales[j] * z, 2)
        extreme = rng.random(rows) < spec.outlier_share
        values[extreme] = np.round(values[extreme] * 50 + np.sign(values[extreme]) * 1000, 2)
        values[rng.random(rows) < spec.null_share] = np.nan
        columns[f"num_{j}"] = values
    for j, n in enumerate(levels):
        probs = 1.0 / np.arange(1, n + 1) ** 1.3
        codes = rng.choice(n, size=rows, p=probs / probs.sum())
        score += cat_effects[j][codes]
        labels = np.array([f"c{j}_{i}" for i in range(n)], dtype=object)[codes]
        labels[rng.random(rows) < spec.null_share] = None
        columns[f"cat_{j}"] = labels
    # Explicit dtypes: a chunk whose first values are null must not change a column's type.
    frame = pl.DataFrame(
        [
            pl.Series(name, values, dtype=pl.Float64, nan_to_null=True)
            if name.startswith("num_")
            else pl.Series(name, values.tolist(), dtype=pl.String)
            for name, values in columns.items()
        ]
    )
    if spec.with_datetime:
        seconds = rng.integers(0, SECONDS_2024, rows)
        score += np.sin(seconds / 86400 * 2 * np.pi)
        times = START_2024 + seconds.astype("timedelta64[s]")
        series = pl.Series("event_time", times)
        mask = pl.Series(rng.random(rows) < spec.null_share)
        frame = frame.with_columns(pl.when(mask).then(None).otherwise(series).alias("event_time"))
    noise = rng.logistic(size=rows)
    label = (score / max(1.0, np.sqrt(spec.numeric + spec.categorical)) + noise > 0).astype(np.int64)
    return frame.with_columns(pl.Series("label", label))


def write_synthetic(spec: SyntheticSpec, path: str | Path, chunk_rows: int = 500_000) -> Path:
    """Write the table to Parquet, CSV or JSON lines, chunk by chunk, atomically."""
    path = Path(path)
    fmt = table_format(str(path))
    with atomic_path(path) as tmp:
        writer: pq.ParquetWriter | None = None
        with open(tmp, "wb") as handle:
            for start in range(0, spec.rows, chunk_rows):
                chunk = synthetic_chunk(spec, start, min(chunk_rows, spec.rows - start))
                if fmt == "parquet":
                    table = chunk.to_arrow()
                    writer = writer or pq.ParquetWriter(handle, table.schema, compression="zstd")
                    writer.write_table(table)
                elif fmt == "csv":
                    chunk.write_csv(handle, include_header=start == 0)
                elif fmt == "jsonl":
                    chunk.write_ndjson(handle)
                else:
                    raise ValueError(f"synthetic data is written as .parquet, .csv or .jsonl, not {fmt}")
            if writer is not None:
                writer.close()
    return path
