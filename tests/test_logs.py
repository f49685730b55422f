"""Logs and output: --log-level and --log-format on every command, JSON lines, the server's access log
settings, the progress bar of predict and evaluate, and numbers rounded for people on the console."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import uvicorn
import yaml
from rich.console import Console
from typer.testing import CliRunner

from leanml import cli, logs
from leanml.cli import app
from leanml.logs import (
    JsonFormatter,
    LogSettings,
    StderrHandler,
    active_settings,
    configure_logging,
    uvicorn_log_config,
)
from leanml.progress import RowProgress

runner = CliRunner()


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger back as it was: the CLI configures it for the whole process."""
    root = logging.getLogger()
    handlers, level, settings = list(root.handlers), root.level, active_settings()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "leanml"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    logs._active = settings


def _record(name: str = "leanml.test", message: str = "hello %s", args: tuple = ("world",), **extra: object):
    record = logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_time_level_logger_message_and_fields() -> None:
    line = JsonFormatter().format(_record(model="flights", rows=12))
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "info" and entry["logger"] == "leanml.test" and entry["message"] == "hello world"
    assert entry["model"] == "flights" and entry["rows"] == 12
    assert entry["time"].endswith("Z") and "T" in entry["time"]
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


def test_configure_logging_filters_by_level_and_installs_one_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    configure_logging("warning", "json")  # a second call replaces the handler: no line printed twice
    log = logging.getLogger("leanml.test")
    log.info("hidden")
    log.warning("shown", extra={"column": "age"})
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "shown" and json.loads(lines[0])["column"] == "age"
    assert sum(isinstance(h, StderrHandler) for h in logging.getLogger().handlers) == 1
    assert active_settings() == LogSettings("warning", "json")
    configure_logging("debug", "text")
    log.debug("now %s", "shown")
    assert "DEBUG leanml.test: now shown" in capsys.readouterr().err
    with pytest.raises(ValueError, match="log level"):
        configure_logging("verbose")


def test_access_log_is_off_by_default_and_json_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    config = uvicorn_log_config(LogSettings("warning", "json"))
    assert config["loggers"]["uvicorn.access"]["level"] == "WARNING"
    # what ``serve`` passes to uvicorn (whose Config applies it, as each worker process does)
    uvicorn.Config(
        app=None,
        log_config=uvicorn_log_config(LogSettings("warning", "json"), access_log=True),
        access_log=True,
        log_level=None,
    )
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/v1/models/m:predict", "1.1", 200)
    logging.getLogger("leanml.serve").info("not at warning")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["logger"] == "uvicorn.access" and entry["method"] == "POST" and entry["status"] == 200
    assert entry["path"] == "/v1/models/m:predict"


# ---- on the command line ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 500-row table and its config."""
    root = tmp_path_factory.mktemp("logs")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 500)
    frame = pl.DataFrame({"x": x, "z": rng.normal(5, 2, 500), "y": np.where(x > 0, "a", "b")})
    frame.write_parquet(root / "data.parquet")
    frame.write_csv(root / "data.csv")
    raw = {
        "name": "logs",
        "data": {"train": str(root / "data.parquet")},
        "target": "y",
        "columns": {"x": {"type": "numeric"}, "z": {"type": "numeric"}},
        "model": {"arch": "mlp", "hidden": [4]},
        "train": {"epochs": 1, "batch_size": 128},
        "workdir": str(root / "runs"),
        "store": str(root / "models"),
    }
    (root / "leanml.yaml").write_text(yaml.safe_dump(raw))
    return root


def test_every_command_takes_log_level_and_format(project: Path) -> None:
    result = runner.invoke(
        app, ["--log-level", "info", "--log-format", "json", "train", str(project / "leanml.yaml")]
    )
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    reports = [e for e in entries if e["message"].startswith("wrote the report")]
    assert {Path(e["path"]).parent.name for e in reports} == {"prepare", "train"}
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert "bundle logs v1" in result.stdout

    quiet = runner.invoke(app, ["models", "list", "--store", str(project / "models")])
    assert quiet.exit_code == 0 and not quiet.stderr  # warning by default: nothing to say
    wrong = runner.invoke(app, ["--log-format", "xml", "models", "list"])
    assert wrong.exit_code == 2 and "xml" in wrong.output


@pytest.mark.parametrize("source", ["data.parquet", "data.csv"])
def test_predict_and_evaluate_show_rows_done(
    project: Path, source: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not (project / "models" / "logs").exists():
        assert runner.invoke(app, ["train", str(project / "leanml.yaml")]).exit_code == 0
    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, force_terminal=True, width=120))
    out = tmp_path / "predictions.parquet"
    model = f"{project / 'models'}/logs"
    result = runner.invoke(app, ["predict", model, str(project / source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # without the colours
    assert "predicting" in shown and "rows" in shown
    assert ("500/500" in shown) == (source == "data.parquet")  # the total is known for Parquet only
    assert "500 predictions" in shown
    result = runner.invoke(app, ["evaluate", model, str(project / source)])
    assert result.exit_code == 0, result.output
    assert "evaluating" in screen.getvalue()


def test_row_progress_counts_without_a_console() -> None:
    with RowProgress(None, "predicting", total=10) as progress:
        progress.advance(4)
        progress.advance(6)
    assert progress.done == 10


def test_metrics_table_turns_around_rather_than_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = {"accuracy": 0.123456, "roc_auc": 0.9, "log_loss": 0.5, "f1": 0.25}
    rows = {"trial 12 (validation)": metrics, "bundle v3 (validation)": metrics}
    for width in (40, 120):
        console = Console(width=width, record=True, color_system=None)
        monkeypatch.setattr(cli, "console", console)
        cli._print_metrics(rows)
        text = console.export_text()
        assert "…" not in text and "0.1235" in text and "0.123456" not in text
        assert all(name in text for name in metrics)
