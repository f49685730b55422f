"""The Triton export: a config Triton's own schema reads, and a graph that answers with no Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from leanml.bundle import graph, load_bundle
from leanml.bundle.artifact import REFERENCE, pipeline_scores, reference_inputs
from leanml.cli import app

ROOT = Path(__file__).resolve().parents[2]
NODE_SCRIPT = r"""
const ort = require(process.argv[2]);
const fs = require("fs");
(async () => {
  const request = JSON.parse(fs.readFileSync(process.argv[4], "utf8"));
  const session = await ort.InferenceSession.create(process.argv[3]);
  const feeds = {};
  for (const input of request.inputs) {
    const n = input.values.length;
    if (input.type === "STRING") feeds[input.name] = new ort.Tensor("string", input.values, [n, 1]);
    else if (input.type === "INT64")
      feeds[input.name] = new ort.Tensor("int64", BigInt64Array.from(input.values.map(BigInt)), [n, 1]);
    else feeds[input.name] = new ort.Tensor("float64", Float64Array.from(input.values.map(Number)), [n, 1]);
  }
  const out = await session.run(feeds);
  const result = {};
  for (const name of session.outputNames)
    result[name] = Array.from(out[name].data, (v) => (typeof v === "bigint" ? Number(v) : Number(v)));
  fs.writeFileSync(process.argv[5], JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def repository(trained_flights: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton")
    bundle = trained_flights["outcome"].bundle.path
    result = CliRunner().invoke(
        app, ["export", "triton", str(bundle), "-o", str(out), "--max-batch-size", "64"]
    )
    assert result.exit_code == 0, result.output
    return out / "flights"


def test_config_parses_with_tritons_schema(repository: Path, trained_flights: dict[str, Any]) -> None:
    config = text_format.Parse((repository / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    bundle = load_bundle(trained_flights["outcome"].bundle.path)
    entry = bundle.manifest["pipeline"]
    assert config.name == "flights" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 64 and config.dynamic_batching.max_queue_delay_microseconds > 0
    types = {i.name: model_config_pb2.DataType.Name(i.data_type) for i in config.input}
    assert types == {
        "dep_delay": "TYPE_FP64",
        "distance": "TYPE_FP64",
        "sched_dep_time": "TYPE_FP64",
        "carrier": "TYPE_STRING",
        "dest": "TYPE_STRING",
        "origin": "TYPE_STRING",
        "time_hour": "TYPE_INT64",
    }
    assert all(list(i.dims) == [1] for i in config.input)
    outputs = {o.name: o for o in config.output}
    assert list(outputs["probabilities"].dims) == [2]
    assert list(outputs["label_index"].dims) == [1] and list(outputs["label_index"].reshape.shape) == []
    assert list(outputs["problems"].dims) == [len(entry["problems"])]
    assert (repository / "1" / "model.onnx").read_bytes() == (bundle.path / "pipeline.onnx").read_bytes()


def _onnxruntime_node() -> Path | None:
    candidates = [os.environ.get("LEANML_ONNXRUNTIME_NODE"), ROOT / "node_modules" / "onnxruntime-node"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "package.json").is_file():
            return Path(candidate)
    return None


def test_the_graph_answers_in_node_with_no_python(
    repository: Path, trained_flights: dict[str, Any], tmp_path: Path
) -> None:
    node, module = shutil.which("node"), _onnxruntime_node()
    if node is None or module is None:
        pytest.skip(
            "needs node and onnxruntime-node: `make test` installs it into node_modules/ when node is present"
        )
    bundle = load_bundle(trained_flights["outcome"].bundle.path)
    rows = reference_inputs(pl.read_parquet(bundle.path / REFERENCE))
    feed = graph.graph_inputs(rows, bundle.state)
    kinds = {i["name"]: i["type"] for i in bundle.manifest["pipeline"]["inputs"]}
    request = {
        "inputs": [
            {
                "name": name,
                "type": kinds[name],
                "values": [
                    None
                    if isinstance(v, float) and np.isnan(v)
                    else (str(v) if kinds[name] == "INT64" else v)
                    for v in values.ravel().tolist()
                ],
            }
            for name, values in feed.items()
        ]
    }
    for entry in request["inputs"]:  # JSON has no NaN: node reads null as NaN for doubles
        if entry["type"] == "DOUBLE":
            entry["values"] = ["NaN" if v is None else v for v in entry["values"]]
    (tmp_path / "request.json").write_text(json.dumps(request))
    (tmp_path / "run.js").write_text(NODE_SCRIPT)
    done = subprocess.run(
        [
            node,
            str(tmp_path / "run.js"),
            str(module),
            str(repository / "1" / "model.onnx"),
            str(tmp_path / "request.json"),
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads((tmp_path / "out.json").read_text())
    node_p1 = np.array(answers["probabilities"]).reshape(len(rows), 2)[:, 1]
    python_p1 = pipeline_scores(bundle.pipeline, rows, bundle.state)
    np.testing.assert_allclose(node_p1, python_p1, atol=1e-6)
    assert np.array(answers["label_index"]).tolist() == (python_p1 >= 0.5).astype(int).tolist()
