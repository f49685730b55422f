"""Fixtures for the train tests: scikit-learn's bundled datasets, prepared once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sklearn import datasets

from leanml.config import Config, parse_config
from leanml.data.prepare import prepare


@dataclass(frozen=True)
class Prepared:
    """A prepared dataset and the config sections it was prepared with."""

    dir: Path
    raw: dict[str, Any]

    def config(self, model: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> Config:
        """A config for this dataset with the given ``model`` and ``train`` sections."""
        return parse_config({**self.raw, "model": model or {}, "train": train or {}})


def _prepare_bundled(root: Path, loader: Any, split: dict[str, Any]) -> Prepared:
    frame = pl.from_pandas(loader(as_frame=True).frame)
    frame = frame.rename({c: c.replace(" ", "_").replace("(", "").replace(")", "") for c in frame.columns})
    frame.write_parquet(root / "data.parquet")
    columns = {c: {"type": "numeric"} for c in frame.columns if c != "target"}
    raw = {
        "name": "t",
        "data": {"train": str(root / "data.parquet"), "split": split},
        "target": "target",
        "columns": columns,
    }
    prepare(parse_config(raw), out_dir=root / "prepared")
    return Prepared(dir=root / "prepared", raw=raw)


@pytest.fixture(scope="session")
def breast_cancer(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """Binary: 569 rows, 30 features; 50 % train, 20 % validation, 30 % test."""
    root = tmp_path_factory.mktemp("breast_cancer")
    return _prepare_bundled(root, datasets.load_breast_cancer, {"validation": 0.2, "test": 0.3, "seed": 0})


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """Multiclass: 150 rows, 3 classes."""
    root = tmp_path_factory.mktemp("iris")
    return _prepare_bundled(root, datasets.load_iris, {"validation": 0.2, "test": 0.2, "seed": 0})


@pytest.fixture(scope="session")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """Regression: 442 rows, target in its own units (25 to 346)."""
    root = tmp_path_factory.mktemp("diabetes")
    return _prepare_bundled(root, datasets.load_diabetes, {"validation": 0.2, "test": 0.2, "seed": 0})
