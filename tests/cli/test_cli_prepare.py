"""The command line: init → prepare on real data, and clean errors (exit 2, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from leanml.cli import app

runner = CliRunner()


def test_init_then_prepare(flights_parquet: Path, tmp_path: Path) -> None:
    config = tmp_path / "leanml.yaml"
    result = runner.invoke(app, ["init", str(flights_parquet), "--target", "delayed", "-o", str(config)])
    assert result.exit_code == 0, result.output
    assert config.exists()
    rejects = tmp_path / "rejects.parquet"
    result = runner.invoke(
        app, ["prepare", str(config), "-o", str(tmp_path / "out"), "--rejects", str(rejects)]
    )
    assert result.exit_code == 0, result.output
    assert "Data quality" in result.output and "missing_target" in result.output
    report = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert pl.read_parquet(rejects).height == report["rows"]["dropped"]


def test_bad_config_is_one_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "name: m\ndata: {train: x.csv}\ntarget: y\ncolumns: {age: {type: numeric, scale: zscore}}\n"
    )
    result = runner.invoke(app, ["prepare", str(config)])
    assert result.exit_code == 2
    expected = "columns.age.scale: 'zscore' is not one of standard, minmax, robust, quantile, none"
    assert expected in result.output
    assert "Traceback" not in result.output


def test_data_errors_and_malformed_csv_exit_cleanly(tmp_path: Path) -> None:
    (tmp_path / "ragged.csv").write_text('a,y\n1,0\n2,1,5,6\n"unterminated,1\n')
    config = tmp_path / "c.yaml"
    config.write_text("name: m\ndata: {train: ragged.csv}\ntarget: y\ncolumns: {a: {type: numeric}}\n")
    result = runner.invoke(app, ["prepare", str(config)])
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["init", str(tmp_path / "missing.csv"), "-t", "y", "-o", str(tmp_path / "x.yaml")]
    )
    assert result.exit_code == 2 and "no such file" in result.output


def test_datasets_commands(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    result = runner.invoke(
        app,
        ["datasets", "synthetic", "-o", str(out), "--rows", "1000", "--numeric", "3", "--categorical", "2"],
    )
    assert result.exit_code == 0, result.output
    frame = pl.read_parquet(out)
    assert frame.height == 1000
    assert {"num_0", "num_2", "cat_1", "event_time", "label"} <= set(frame.columns)
    assert runner.invoke(app, ["--version"]).exit_code == 0
