"""Helpers shared by the tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leanml.config import Config, parse_config

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


def make_config(
    train: Path | str, target: str = "delayed", columns: dict[str, Any] | None = None, **extra: Any
) -> Config:
    """A validated config for tests; ``extra`` sets top-level keys (``data`` is merged)."""
    raw: dict[str, Any] = {
        "name": "test",
        "data": {"train": str(train), **extra.pop("data", {})},
        "target": target,
        "columns": columns if columns is not None else FLIGHTS_COLUMNS,
        **extra,
    }
    return parse_config(raw)
