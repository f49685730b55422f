"""Every command from the command line: train, run, evaluate, predict, models, and serve as a real process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from leanml.cli import app

runner = CliRunner()


def _config(tmp_path: Path, flights_parquet: Path, **changes: object) -> Path:
    """A small flights config written to ``tmp_path/leanml.yaml``."""
    raw = {
        "name": "flights",
        "data": {"train": str(flights_parquet), "split": {"validation": 0.15, "test": 0.15, "seed": 0}},
        "target": "delayed",
        "columns": {
            "dep_delay": {"type": "numeric", "impute": "median", "scale": "standard"},
            "distance": {"type": "numeric", "scale": "minmax"},
            "carrier": {"type": "categorical", "min_frequency": 20},
        },
        "model": {"arch": "mlp", "hidden": [8]},
        "train": {"epochs": 1, "batch_size": 512},
        "workdir": str(tmp_path / "runs"),
        "store": str(tmp_path / "models"),
        **changes,
    }
    path = tmp_path / "leanml.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def store(flights_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding flights v1 (from ``train``) and v2 (from ``run``)."""
    root = tmp_path_factory.mktemp("cli")
    config = _config(root, flights_parquet)
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["run", str(config), "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    return root / "models"


def test_train_and_run_add_versions(store: Path) -> None:
    versions = sorted(p.name for p in (store / "flights").iterdir() if p.name.startswith("v"))
    assert versions == ["v1", "v2"]
    manifest = json.loads((store / "flights" / "v2" / "manifest.json").read_text())
    assert json.loads((store / "flights" / "v2" / "config.json").read_text())["train"]["epochs"] == 2
    assert manifest["task"] == "binary"


def test_evaluate_and_predict(store: Path, flights_parquet: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", f"{store}/flights", str(flights_parquet)])
    assert result.exit_code == 0, result.output
    assert "roc_auc" in result.output
    out = tmp_path / "pred.parquet"
    result = runner.invoke(
        app, ["predict", f"{store}/flights@v1", str(flights_parquet), "-o", str(out), "--keep", "carrier"]
    )
    assert result.exit_code == 0, result.output
    predictions = pl.read_parquet(out)
    assert predictions.height == pl.read_parquet(flights_parquet).height
    assert {"__row_id", "carrier", "prediction"} <= set(predictions.columns)


def test_models_list_show_promote_rollback(store: Path) -> None:
    result = runner.invoke(app, ["models", "list", "--store", str(store)])
    assert result.exit_code == 0 and "flights" in result.output and "v2" in result.output
    result = runner.invoke(app, ["models", "show", f"{store}/flights@v1"])
    assert result.exit_code == 0 and "binary" in result.output
    for version in ("v1", "v2"):
        result = runner.invoke(app, ["models", "promote", "flights", version, "--store", str(store)])
        assert result.exit_code == 0, result.output
    aliases = json.loads((store / "flights" / "aliases.json").read_text())
    assert aliases["production"] == "v2"
    result = runner.invoke(app, ["models", "rollback", "flights", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert json.loads((store / "flights" / "aliases.json").read_text())["production"] == "v1"
    result = runner.invoke(app, ["models", "promote", "flights", "v9", "--store", str(store)])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_unknown_model_is_one_clean_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nowhere"), "x.parquet"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_runs_as_a_process(store: Path) -> None:
    port = _free_port()
    env = {**os.environ, "LEANML_TEST_KEY": "s3cret"}
    command = [sys.executable, "-m", "leanml", "serve", str(store), "--port", str(port), "--api-key-env"]
    server = subprocess.Popen(
        [*command, "LEANML_TEST_KEY"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            assert time.monotonic() < deadline, "the server did not become ready in 60 s"
            time.sleep(0.2)
        body = {"instances": [{"dep_delay": 30.0, "distance": 500.0, "carrier": "UA"}]}
        refused = httpx.post(f"{url}/v1/models/flights:predict", json=body, timeout=5)
        assert refused.status_code == 401
        bearer = {"Authorization": "Bearer s3cret"}
        answer = httpx.post(f"{url}/v1/models/flights:predict", json=body, headers=bearer, timeout=5)
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Model-Version"] == answer.json()["model_version"]
        assert answer.json()["predictions"][0] in (True, False, 0, 1)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_train_prepares_again_when_a_data_section_changes(flights_parquet: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, flights_parquet)
    assert runner.invoke(app, ["train", str(config)]).exit_code == 0
    state = json.loads((tmp_path / "runs" / "flights" / "prepare" / "preprocess.json").read_text())
    assert sorted(c["name"] for c in state["columns"]) == ["carrier", "dep_delay", "distance"]

    columns = {"dep_delay": {"type": "numeric"}, "month": {"type": "categorical"}}
    changed = _config(tmp_path, flights_parquet, columns=columns)
    result = runner.invoke(app, ["train", str(changed)])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "runs" / "flights" / "prepare" / "preprocess.json").read_text())
    assert sorted(c["name"] for c in state["columns"]) == ["dep_delay", "month"]
    manifest = json.loads((tmp_path / "models" / "flights" / "v2" / "manifest.json").read_text())
    assert sorted(c["name"] for c in manifest["input_schema"]) == ["dep_delay", "month"]
