"""`leanml tune` and `leanml.tune`: end to end through the command line and the Python API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

import leanml
from leanml.cli import app
from leanml.config import load_config

runner = CliRunner()


def test_tune_command_end_to_end(tune_raw: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    raw = tune_raw({"train.lr": {"log_uniform": [1e-3, 1e-1]}, "model.hidden": [[4], [8]]})
    path = tmp_path / "leanml.yaml"
    path.write_text(yaml.safe_dump(raw))

    result = runner.invoke(
        app, ["tune", str(path), "--sampler", "random", "--trials", "3", "--set", "train.epochs=2"]
    )
    assert result.exit_code == 0, result.output
    assert "Trials (roc_auc on validation)" in result.output and "★" in result.output
    assert "bundle bc v1" in result.output
    folder = tmp_path / "runs" / "bc" / "tune"
    best = load_config(folder / "best.yaml")
    assert best.train.epochs == 2 and best.tune.sampler == "random"
    assert (tmp_path / "models" / "bc" / "v1" / "manifest.json").exists()
    assert (folder / "trials.csv").read_text().count("\n") == 4

    again = runner.invoke(app, ["tune", str(path)])
    assert again.exit_code == 2 and "pass --resume to continue it" in again.output
    again = runner.invoke(
        app,
        ["tune", str(path), "--resume", "--sampler", "random", "--trials", "3", "--set", "train.epochs=2"],
    )
    assert again.exit_code == 0, again.output  # nothing left to run: the reports, and no second bundle
    assert "already bundled as bc v1" in again.output
    assert not (tmp_path / "models" / "bc" / "v2").exists()

    config = load_config(path, ["train.epochs=2"])
    more = leanml.tune(config, resume=True, trials=5, sampler="random", bundle=False)  # the Python API
    assert [r.number for r in more.trials] == [0, 1, 2, 3, 4] and more.ran == 2

    changed = runner.invoke(app, ["tune", str(path), "--resume", "--sampler", "tpe"])
    assert changed.exit_code == 2
    assert "cannot resume" in changed.output and "tune.sampler" in changed.output


def test_tune_command_errors(tune_raw: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "leanml.yaml"
    path.write_text(yaml.safe_dump(tune_raw({"train.lr": [0.01]})))
    result = runner.invoke(app, ["tune", str(path), "--sampler", "bayes"])
    assert result.exit_code == 2
    assert "tune.sampler: 'bayes' is not one of grid, random, tpe" in result.output
    path.write_text(yaml.safe_dump(tune_raw({"train.learning_rate": [0.01]})))
    result = runner.invoke(app, ["tune", str(path)])
    assert result.exit_code == 2 and "tune.space.train.learning_rate" in result.output
    assert "Traceback" not in result.output
