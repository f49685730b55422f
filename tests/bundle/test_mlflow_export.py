"""``leanml export mlflow``: a pyfunc model that answers as ``leanml predict`` does, loads the bundle
through leanml's verified loader, and holds no pickle."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from leanml.bundle.mlflow_model import CODE_FILE
from leanml.cli import app

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from the tests
pyfunc = pytest.importorskip("mlflow.pyfunc")


@pytest.fixture(scope="module")
def exported(trained_flights: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mlflow") / "flights-model"
    store = trained_flights["root"] / "models"
    result = CliRunner().invoke(app, ["export", "mlflow", f"{store}/flights", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_pyfunc_model_answers_as_leanml_predict(
    exported: Path, trained_flights: dict[str, Any], tmp_path: Path
) -> None:
    rows = pl.read_parquet(trained_flights["data"]).slice(100, 300)
    # rows the serving rules reject: an unknown carrier (handle_unknown: error), a distance over 3000
    rows = rows.with_columns(
        carrier=pl.when(pl.int_range(pl.len()) % 50 == 0).then(pl.lit("ZZ")).otherwise("carrier"),
        distance=pl.when(pl.int_range(pl.len()) % 70 == 1).then(4983.0).otherwise("distance"),
    )
    rows.write_parquet(tmp_path / "rows.parquet")
    out = tmp_path / "predicted.parquet"
    model = f"{trained_flights['root'] / 'models'}/flights"
    result = CliRunner().invoke(app, ["predict", model, str(tmp_path / "rows.parquet"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    expected = pl.read_parquet(out).drop("__row_id")

    got = pl.from_pandas(pyfunc.load_model(str(exported)).predict(rows.to_pandas()))
    assert got.columns == expected.columns
    assert got.equals(expected)
    assert got["__reason"].null_count() < len(got) - 5  # some rows were rejected, most answered


def test_no_pickle_the_code_is_a_file_and_the_bundle_is_verified_at_load(
    exported: Path, tmp_path: Path
) -> None:
    assert not [p for p in exported.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    flavor = yaml.safe_load((exported / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert Path(flavor["model_code_path"]).name == CODE_FILE and (exported / CODE_FILE).is_file()
    assert "python_model" not in flavor  # the cloudpickled PythonModel of the non-code way
    # a bundle file changed inside the model: leanml's loader refuses it
    tampered = tmp_path / "tampered"
    shutil.copytree(exported, tampered)
    onnx = next((tampered / "artifacts").glob("*/model.onnx"))
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
    with pytest.raises(Exception, match="does not match its checksum"):
        pyfunc.load_model(str(tampered))
