"""`leanml init`: inferred types, task and a config that validates and runs."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from leanml.config import load_config, parse_config
from leanml.data.infer import (
    PLE_MIN_DISTINCT,
    STARTER_MODEL,
    batch_size,
    infer_config,
    starter_split,
    starter_train,
    write_config,
)
from leanml.data.prepare import prepare
from leanml.errors import DataError


def test_flights_config_is_inferred_and_runs(flights_parquet: Path, tmp_path: Path) -> None:
    text = infer_config(str(flights_parquet), "delayed", config_dir=tmp_path)
    raw = yaml.safe_load(text)
    columns = raw["columns"]
    assert raw["task"] == "binary"
    assert columns["dep_delay"]["type"] == "numeric"
    assert "outliers" not in columns["dep_delay"]  # a long tail (8 % beyond the fences), not outliers
    assert columns["distance"]["outliers"]["method"] == "iqr"  # a few far values
    assert columns["carrier"]["type"] == "categorical"
    assert columns["dest"]["min_frequency"] >= 10  # > 50 destinations: rare ones grouped
    assert columns["time_hour"]["type"] == "datetime"
    assert columns["year"]["type"] == "ignore"  # constant
    assert "# constant in the sample" in text
    assert columns["dep_delay"]["encode"] == "ple"  # hundreds of distinct values: bins beside the value
    assert "encode" not in columns["month"]  # 12 values
    path = write_config(text, tmp_path / "leanml.yaml")
    config = load_config(path)
    assert Path(config.data.train) == flights_parquet.resolve()
    result = prepare(config, out_dir=tmp_path / "out")
    assert result.report["rows"]["kept"] > 0


def test_text_columns_are_sniffed(tmp_path: Path) -> None:
    n = 300
    frame = pl.DataFrame(
        {
            "id": [f"u{i:05d}" for i in range(n)],
            "amount": [f"{i * 1.25:.2f}" if i % 50 else "oops" for i in range(n)],
            "day": [f"2024-01-{1 + i % 28:02d}" for i in range(n)],
            "color": ["red", "green", "blue"][0:3] * (n // 3),
            "note": [f"a long free text comment number {i} about the order and delivery" for i in range(n)],
            "empty": [None] * n,
            "y": [str(i % 3) for i in range(n)],
        },
        schema_overrides={"empty": pl.String},
    )
    frame.write_csv(tmp_path / "d.csv")
    raw = yaml.safe_load(infer_config(str(tmp_path / "d.csv"), "y", config_dir=tmp_path))
    kinds = {name: spec["type"] for name, spec in raw["columns"].items()}
    assert kinds == {
        "id": "ignore",
        "amount": "numeric",
        "day": "datetime",
        "color": "categorical",
        "note": "ignore",
        "empty": "ignore",
    }
    assert raw["columns"]["day"]["parts"] == ["dayofweek", "month"]  # dates without a time of day
    assert raw["task"] == "multiclass"


def test_regression_target_and_errors(tmp_path: Path) -> None:
    frame = pl.DataFrame({"x": [i % 17 for i in range(100)], "price": [i * 3.7 for i in range(100)]})
    frame.write_parquet(tmp_path / "p.parquet")
    assert yaml.safe_load(infer_config(str(tmp_path / "p.parquet"), "price"))["task"] == "regression"
    with pytest.raises(DataError, match="target 'nope' is not a column"):
        infer_config(str(tmp_path / "p.parquet"), "nope")
    (tmp_path / "h.csv").write_text("x,y\n")
    with pytest.raises(DataError, match="no rows"):
        infer_config(str(tmp_path / "h.csv"), "y")
    (tmp_path / "exists.yaml").write_text("keep me")
    with pytest.raises(DataError, match="exists"):
        write_config("name: x\n", tmp_path / "exists.yaml")
    assert (tmp_path / "exists.yaml").read_text() == "keep me"


def test_the_starter_batch_size_grows_with_the_table() -> None:
    # small tables get small batches (enough optimizer steps per epoch), big ones keep epochs short
    sizes = [batch_size(rows) for rows in (1_000, 10_000, 10_001, 50_000, 300_000, 2_000_000)]
    assert sizes == [64, 64, 256, 256, 512, 1024]


def test_the_written_model_and_train_sections_are_the_starter_ones(tmp_path: Path) -> None:
    # bench/ray.py trains "what init writes" from STARTER_MODEL and starter_train: they must agree
    frame = pl.DataFrame({"x": [i % 17 for i in range(20_000)], "y": [i % 2 for i in range(20_000)]})
    frame.write_parquet(tmp_path / "t.parquet")
    raw = yaml.safe_load(infer_config(str(tmp_path / "t.parquet"), "y", config_dir=tmp_path))
    assert raw["model"] == STARTER_MODEL
    assert raw["train"] == starter_train(20_000)
    assert raw["train"]["batch_size"] == 256 and raw["train"]["lr"] == 1e-3  # YAML read the float
    # the whole cosine schedule, then the best epoch's weights: no early stop halfway down the schedule
    config = parse_config(raw, base_dir=tmp_path)
    assert config.train.early_stopping is None and config.train.restore_best
    assert config.train.schedule == "cosine"


def test_piecewise_linear_bins_start_at_many_distinct_values(tmp_path: Path) -> None:
    n = 1000
    frame = pl.DataFrame(
        {
            "few": [i % (PLE_MIN_DISTINCT - 1) for i in range(n)],
            "many": [float(i % PLE_MIN_DISTINCT) for i in range(n)],
            "y": [i % 2 for i in range(n)],
        }
    )
    frame.write_parquet(tmp_path / "t.parquet")
    text = infer_config(str(tmp_path / "t.parquet"), "y", config_dir=tmp_path)
    columns = yaml.safe_load(text)["columns"]
    assert "encode" not in columns["few"]
    assert columns["many"]["encode"] == "ple"
    assert "piecewise-linear bins" in text
    config = load_config(write_config(text, tmp_path / "leanml.yaml"))
    state = prepare(config, out_dir=tmp_path / "out").state
    assert "many__ple0" in state.feature_names and not any(f.startswith("few__") for f in state.feature_names)


def test_a_small_table_keeps_enough_validation_rows_to_verify_shrink(tmp_path: Path) -> None:
    # 10 % of a big table; 4,000 rows of a small one (shrink's budget needs them), at most 30 %
    shares = [starter_split(rows)["validation"] for rows in (100_000, 40_000, 25_000, 13_400, 8_000, 500)]
    assert shares == [0.1, 0.1, 0.16, 0.3, 0.3, 0.3]
    frame = pl.DataFrame({"x": [i % 17 for i in range(8_000)], "y": [i % 2 for i in range(8_000)]})
    frame.write_parquet(tmp_path / "t.parquet")
    raw = yaml.safe_load(infer_config(str(tmp_path / "t.parquet"), "y", config_dir=tmp_path))
    assert raw["data"]["split"] == {"validation": 0.3, "test": 0.1, "seed": 0, "stratify": True}
    assert parse_config(raw, base_dir=tmp_path).data.split.validation == 0.3
