"""The access log (``serve.access_log``, ``leanml serve --access-log``): one record per request in the
``--log-format`` when on, none when off; and ``GET /v1/models``, the list of served models."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import serving
from leanml import logs
from leanml.cli import app
from leanml.logs import configure_logging
from leanml.serve import server
from leanml.serve.server import logging_options, uvicorn_options

LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "leanml")


@pytest.fixture(autouse=True)
def restored_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI and uvicorn configure this process's loggers: put them back as they were afterwards."""
    monkeypatch.setattr(logs, "_active", logs.active_settings())
    saved = {
        name: (log.handlers[:], log.level, log.propagate, log.disabled)
        for name in LOGGERS
        for log in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        log = logging.getLogger(name)
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate, log.disabled = propagate, disabled


@pytest.fixture
def logged_server(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``running_server`` with the logging settings ``leanml serve`` gives uvicorn."""

    def options(config: Any, limits: Any = None) -> dict[str, Any]:
        return {**uvicorn_options(config, limits), **logging_options(config)}

    monkeypatch.setattr(serving, "uvicorn_options", options)
    return serving.running_server


def access_records(capsys: pytest.CaptureFixture[str], wait_s: float) -> list[dict[str, Any]]:
    """The JSON access records on stderr, waiting up to ``wait_s`` for the first."""
    deadline = time.monotonic() + wait_s
    records: list[dict[str, Any]] = []
    while True:
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
        records += [r for r in lines if r["logger"] == "uvicorn.access"]
        if records or time.monotonic() > deadline:
            return records
        time.sleep(0.02)


def test_with_the_access_log_each_request_is_one_json_record(
    module_store: Path, logged_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("warning", "json")
    with logged_server(str(module_store), access_log=True) as (url, _):
        response = httpx.get(f"{url}/v1/models")
        assert response.status_code == 200 and response.json() == {"models": ["flights"]}
        (record,) = access_records(capsys, wait_s=5)
    assert record["method"] == "GET" and record["path"] == "/v1/models" and record["status"] == 200
    assert record["level"] == "info" and record["time"].endswith("Z")


def test_without_it_requests_leave_no_record(
    module_store: Path, logged_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")
    with logged_server(str(module_store)) as (url, _):
        for path in ("/v1/models", "/v1/models/flights", "/v1/models/nope"):
            httpx.get(f"{url}{path}")
        assert access_records(capsys, wait_s=0.3) == []


@pytest.mark.parametrize(("flag", "expected"), [(["--access-log"], True), ([], False)])
def test_the_serve_command_passes_the_access_log_and_the_format_to_uvicorn(
    module_store: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], expected: bool
) -> None:
    given: dict[str, Any] = {}
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **options: given.update(options))
    args = ["--log-format", "json", "serve", str(module_store), "--workers", "1", "--port", "0", *flag]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert given["access_log"] is expected and given["log_level"] is None  # the log config sets the levels
    config = given["log_config"]
    assert config["loggers"]["uvicorn.access"]["level"] == ("INFO" if expected else "WARNING")
    assert config["formatters"]["leanml"]["()"].endswith("JsonFormatter")
