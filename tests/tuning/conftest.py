"""Fixtures for the tune tests: small scikit-learn tables as files, and configs that tune over them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sklearn import datasets

from leanml.config import Config, parse_config

Space = dict[str, Any]


def _write_bundled(path: Path, loader: Any) -> Path:
    frame = pl.from_pandas(loader(as_frame=True).frame)
    frame = frame.rename({c: c.replace(" ", "_") for c in frame.columns})
    frame.write_parquet(path)
    return path


@pytest.fixture(scope="session")
def breast_cancer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Binary: 569 rows, 30 numeric features, column 'target'."""
    return _write_bundled(
        tmp_path_factory.mktemp("tune-data") / "breast_cancer.parquet", datasets.load_breast_cancer
    )


@pytest.fixture
def tune_raw(breast_cancer_file: Path, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """A raw config over breast_cancer that tunes ``space`` (a tiny MLP, a few epochs); ``tune`` and
    ``train`` settings are merged into the defaults."""

    def make(
        space: Space, tune: dict[str, Any] | None = None, train: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        columns = pl.read_parquet_schema(breast_cancer_file)
        return {
            "name": "bc",
            "data": {
                "train": str(breast_cancer_file),
                "split": {"validation": 0.25, "test": 0.25, "seed": 0},
            },
            "target": "target",
            "columns": {c: {"type": "numeric"} for c in columns if c != "target"},
            "model": {"arch": "mlp", "hidden": [8], "dropout": 0.0},
            "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 64, "epochs": 3, **(train or {})},
            "tune": {"pruner": "none", **(tune or {}), "space": space},
            "workdir": str(tmp_path / "runs"),
            "store": str(tmp_path / "models"),
        }

    return make


@pytest.fixture
def tune_config(tune_raw: Callable[..., dict[str, Any]]) -> Callable[..., Config]:
    """Like ``tune_raw``, validated."""

    def make(space: Space, tune: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> Config:
        return parse_config(tune_raw(space, tune, train))

    return make
