"""Hot reload that cannot be knocked out: the loop outlives any error, refusals are remembered by content
(a repaired version loads), refused bundles by replay or by an unloadable graph, stale staging folders,
and the command line's one-line errors."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from leanml.bundle import ModelStore
from leanml.bundle.artifact import MANIFEST, MODEL_ONNX, REFERENCE
from leanml.bundle.store import ALIASES
from leanml.cli import app as cli

WEIGHTS = "model.safetensors"


def _copy_version(store: Path, version: str) -> Path:
    """A new store version of flights: v1's files under another version name."""
    folder = store / "flights" / version
    shutil.copytree(store / "flights" / "v1", folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["version"] = version
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def _point_production(store: Path, version: str) -> None:
    """Move ``production`` by hand, bypassing ``promote``'s verification (as a careless operator could)."""
    aliases = json.loads((store / "flights" / ALIASES).read_text())
    aliases["production"] = version
    (store / "flights" / ALIASES).write_text(json.dumps(aliases))


def _metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.split()[-1])
    return 0.0


def _version(url: str, rows: list[dict[str, Any]]) -> str:
    response = httpx.post(f"{url}/v1/models/flights:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def test_the_reload_loop_survives_errors_logs_once_and_keeps_working(
    store_copy: Path,
    guarded_server: Any,
    good_rows: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    wait_for: Any,
) -> None:
    ModelStore(store_copy).promote("flights", "v1")
    _copy_version(store_copy, "v2")
    resolve = ModelStore.resolve

    def exhausted(self: ModelStore, *args: Any, **kwargs: Any) -> Any:
        raise OSError(24, "Too many open files")

    caplog.set_level(logging.INFO, logger="leanml.serve")
    with guarded_server(str(store_copy), reload_interval_s=0.05) as (url, _):
        monkeypatch.setattr(ModelStore, "resolve", exhausted)
        wait_for(lambda: _metric(url, "leanml_reload_errors_total") >= 5)
        monkeypatch.setattr(ModelStore, "resolve", resolve)
        ModelStore(store_copy).promote("flights", "v2")
        wait_for(lambda: _version(url, good_rows[:1]) == "v2")
        ModelStore(store_copy).rollback("flights")
        wait_for(lambda: _version(url, good_rows[:1]) == "v1")
    failures = [r for r in caplog.records if "hot reload failed" in r.getMessage()]
    assert len(failures) == 1 and "Too many open files" in failures[0].getMessage()
    assert any("hot reload works again" in r.getMessage() for r in caplog.records)


def test_refused_by_replay_or_unloadable_graph_and_a_repaired_version_loads(
    store_copy: Path,
    guarded_server: Any,
    good_rows: list[dict[str, Any]],
    rewrite_bundle_file: Any,
    caplog: pytest.LogCaptureFixture,
    wait_for: Any,
) -> None:
    ModelStore(store_copy).promote("flights", "v1")
    replay = _copy_version(store_copy, "v2")
    original = {name: (replay / name).read_bytes() for name in (REFERENCE, MANIFEST)}
    reference = pl.read_parquet(replay / REFERENCE)
    expected = [c for c in reference.columns if c.startswith("__expected_")]
    assert expected
    shifted = reference.with_columns(pl.col(c) + 0.25 for c in expected)
    rewrite_bundle_file(replay, REFERENCE, _parquet_bytes(shifted, replay.parent / "shifted.parquet"))
    graph = _copy_version(store_copy, "v3")
    for name in (MODEL_ONNX, "pipeline.onnx"):
        if (graph / name).exists():
            rewrite_bundle_file(graph, name, b"\x08\x07 not an onnx graph")
    refused = 'leanml_reloads_total{model="flights",outcome="refused"}'
    caplog.set_level(logging.INFO, logger="leanml.serve")
    with guarded_server(str(store_copy), reload_interval_s=0.05) as (url, _):
        _point_production(store_copy, "v2")
        wait_for(lambda: _metric(url, refused) == 1)
        assert _version(url, good_rows[:2]) == "v1"
        _point_production(store_copy, "v3")
        wait_for(lambda: _metric(url, refused) == 2)
        assert _version(url, good_rows[:2]) == "v1"
        # The operator repairs v2 and promotes it again: a refusal is remembered by content, not name.
        for name, content in original.items():
            (replay / name).write_bytes(content)
        ModelStore(store_copy).promote("flights", "v2")
        wait_for(lambda: _version(url, good_rows[:1]) == "v2")
        assert _metric(url, refused) == 2  # each broken version was tried once, not on every tick
    messages = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(messages) == 2
    assert "does not reproduce its reference outputs" in messages[0]


def _parquet_bytes(frame: pl.DataFrame, scratch: Path) -> bytes:
    frame.write_parquet(scratch)
    content = scratch.read_bytes()
    scratch.unlink()
    return content


def test_stale_staging_folders_of_dead_writers_are_removed_on_the_next_write(
    store_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = store_copy / "flights"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = folder / f".v7.tmp-{dead.pid}"
    live = folder / f".v8.tmp-{os.getppid()}"  # a writer that is still running
    for path in (stale, live):
        path.mkdir()
        (path / "part").write_bytes(b"half a bundle")

    def write_bundle(directory: Path, inputs: Any, version: str) -> Path:
        shutil.copytree(folder / "v1", directory)
        return directory

    monkeypatch.setattr("leanml.bundle.store.write_bundle", write_bundle)
    ref = ModelStore(store_copy).add(types.SimpleNamespace(name="flights"))  # type: ignore[arg-type]
    assert ref.version == "v2" and (folder / "v2" / MANIFEST).exists()
    assert not stale.exists()
    assert live.exists()


def test_cli_errors_are_one_line_without_a_traceback(
    store_copy: Path, monkeypatch: pytest.MonkeyPatch, rewrite_bundle_file: Any
) -> None:
    runner = CliRunner()
    monkeypatch.delenv("LEANML_NO_SUCH_KEY", raising=False)
    result = runner.invoke(
        cli, ["serve", str(store_copy), "--api-key-env", "LEANML_NO_SUCH_KEY", "--port", "0"]
    )
    assert result.exit_code == 2, result.output
    assert "LEANML_NO_SUCH_KEY is not set" in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

    pickled = _copy_version(store_copy, "v2")
    scratch = store_copy / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, scratch)  # a pickle where safetensors belong
    rewrite_bundle_file(pickled, WEIGHTS, scratch.read_bytes())
    result = runner.invoke(cli, ["models", "promote", "flights", "v2", "--store", str(store_copy)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:") and "Traceback" not in result.output
    assert "v2" in result.output and WEIGHTS in " ".join(result.output.split())
    assert ModelStore(store_copy).aliases("flights").get("production") != "v2"
