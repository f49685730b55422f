"""Shared fixtures: real data from installed packages, small synthetic tables, config helpers."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from leanml.datasets import flights_frame


@pytest.fixture(scope="session")
def flights() -> pl.DataFrame:
    """A 40,000-row slice of NYC flights 2013 (every month), typed, with the 'delayed' target."""
    frame = flights_frame().collect()
    return frame.gather_every(frame.height // 40_000).head(40_000)


@pytest.fixture(scope="session")
def flights_parquet(flights: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The flights slice written to a Parquet file."""
    path = tmp_path_factory.mktemp("flights") / "flights.parquet"
    flights.write_parquet(path)
    return path
