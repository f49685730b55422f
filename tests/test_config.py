"""Config validation: every problem reported at once, by key path, with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from leanml.config import load_config, parse_config
from leanml.errors import ConfigError

BASE = {"name": "m", "data": {"train": "d.csv"}, "target": "y", "columns": {"age": {"type": "numeric"}}}


def errors_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return str(info.value)


def test_literal_errors_name_the_key_and_the_allowed_values() -> None:
    message = errors_of({**BASE, "columns": {"age": {"type": "numeric", "scale": "zscore"}}})
    assert "columns.age.scale: 'zscore' is not one of standard, minmax, robust, quantile, none" in message


def test_all_problems_are_reported_together() -> None:
    raw = {
        **BASE,
        "task": "ranking",
        "columns": {
            "age": {"type": "numeric", "impute": "constant"},
            "city": {"type": "cat"},
            "when": {"type": "datetime", "parts": ["fortnight"]},
            "x": {"type": "numeric", "bogus": 1},
        },
        "extra": True,
    }
    message = errors_of(raw)
    for expected in [
        "task: 'ranking' is not one of binary, multiclass, regression, auto",
        "columns.age: impute 'constant' needs 'fill_value'",
        "columns.city.type: 'cat' is not one of numeric, categorical, datetime, ignore",
        "columns.when.parts.0: 'fortnight' is not one of year",
        "columns.x.bogus: unknown key; allowed keys: type, impute",
        "extra: unknown key; allowed keys: name, data, target",
    ]:
        assert expected in message, message


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            {"data": {"train": "d.csv", "split": {"validation": 0.6, "test": 0.5}}},
            "validation + test must be below 1",
        ),
        ({"columns": {"y": {"type": "numeric"}}}, "the target 'y' must not also be listed"),
        ({"columns": {"a": {"type": "ignore"}}}, "no feature columns"),
        ({"data": {"train": "d.csv", "split": {"by": "age"}}}, "must be a column of type datetime"),
        ({"name": "has space"}, "name: String should match pattern"),
        (
            {"columns": {"a": {"type": "numeric", "outliers": {"method": "range"}}}},
            "needs 'min', 'max' or both",
        ),
        ({"columns": {"a": {"type": "categorical", "min_frequency": 0}}}, "columns.a.min_frequency"),
        ({"columns": {"a": {"type": "datetime", "parts": [], "epoch": False}}}, "needs 'epoch: true'"),
    ],
)
def test_semantic_errors(patch: dict, expected: str) -> None:
    assert expected in errors_of({**BASE, **patch})


def test_missing_sections_are_required() -> None:
    message = errors_of({"name": "m"})
    assert "data: required" in message and "target: required" in message and "columns: required" in message


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "leanml.yaml").write_text(
        "name: m\ndata: {train: data/x.csv, rejects: out/rej.parquet}\n"
        "target: y\ncolumns: {a: {type: numeric}}\n"
    )
    config = load_config(folder / "leanml.yaml")
    assert config.data.train == str(folder / "data" / "x.csv")
    assert config.data.rejects == str(folder / "out" / "rej.parquet")
    assert config.stage_dir("prepare") == folder / "runs" / "m" / "prepare"


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
