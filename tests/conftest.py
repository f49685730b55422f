"""Shared fixtures: real data from installed packages, small synthetic tables, config helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch

from leanml.datasets import flights_frame


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Small models train fastest on one thread, and a shared CI runner has few cores to spare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture(scope="session")
def trained_flights(flights: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small MLP trained on 12,000 flights and bundled as flights v1 in a store (trained once per run).

    Its config rejects unknown carriers (``handle_unknown: error``) and distances outside [50, 3000]
    (``action: drop``, ``serving: reject``), so serving has every kind of row problem to report.
    """
    from helpers import FLIGHTS_COLUMNS
    from leanml.config import parse_config
    from leanml.training.stage import train_and_bundle

    root = tmp_path_factory.mktemp("trained")
    data = root / "flights.parquet"
    flights.head(12_000).write_parquet(data)
    config = parse_config(
        {
            "name": "flights",
            "data": {"train": str(data)},
            "target": "delayed",
            "columns": {
                **FLIGHTS_COLUMNS,
                "carrier": {"type": "categorical", "handle_unknown": "error"},
                "distance": {
                    "type": "numeric",
                    "outliers": {
                        "method": "range",
                        "min": 50,
                        "max": 3000,
                        "action": "drop",
                        "serving": "reject",
                    },
                },
            },
            "model": {"arch": "mlp", "hidden": [16], "dropout": 0.0},
            "train": {"epochs": 2, "batch_size": 256, "optimizer": "adam", "lr": 0.003},
            "workdir": str(root / "runs"),
            "store": str(root / "models"),
        }
    )
    outcome = train_and_bundle(config)
    return {"root": root, "data": data, "config": config, "outcome": outcome}
