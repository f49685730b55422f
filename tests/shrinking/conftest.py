"""Fixtures for the shrink tests: a residual-MLP teacher trained on flights, in a store of its own."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from helpers import FLIGHTS_COLUMNS
from leanml.config import Config, parse_config
from leanml.training.stage import train_and_bundle

QUICK_SHRINK: dict[str, Any] = {
    "distill": {"epochs": 4, "batch_size": 128, "max_students": 2, "synthetic": "none"},
    "prune": {"max_steps": 2, "finetune_epochs": 1},
    "latency_runs": 100,
}
"""Shrink settings small enough for tests (a few seconds per run)."""


@pytest.fixture(scope="session")
def teacher_store(flights: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A resmlp teacher trained on 10,000 flights, bundled as flights v1 (trained once per run)."""
    root = tmp_path_factory.mktemp("shrink-teacher")
    data = root / "flights.parquet"
    flights.head(10_000).write_parquet(data)
    config = parse_config(
        {
            "name": "flights",
            "data": {"train": str(data)},
            "target": "delayed",
            "columns": FLIGHTS_COLUMNS,
            "model": {"arch": "resmlp", "hidden": [64, 128], "blocks": 2, "dropout": 0.0},
            "train": {"epochs": 3, "batch_size": 256, "lr": 0.002},
            "shrink": QUICK_SHRINK,
            "workdir": str(root / "runs"),
            "store": str(root / "models"),
        }
    )
    outcome = train_and_bundle(config)
    return {"root": root, "config": config, "bundle": outcome.bundle.path}


@pytest.fixture
def store_copy(teacher_store: dict[str, Any], tmp_path: Path) -> tuple[Path, Config]:
    """A private copy of the teacher's store (so a test may add versions) and a config pointing at it."""
    store = tmp_path / "models"
    shutil.copytree(teacher_store["root"] / "models", store)
    raw = teacher_store["config"].model_dump(mode="json")
    config = parse_config({**raw, "store": str(store), "workdir": str(tmp_path / "runs")})
    return store, config
