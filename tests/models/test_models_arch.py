"""Every architecture builds, trains, round-trips through JSON + safetensors, and exports to ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from leanml.config import ModelConfig
from leanml.errors import StateError
from leanml.models import (
    ARCHITECTURES,
    MODEL_JSON,
    MODEL_WEIGHTS,
    ONNX_INPUT,
    ONNX_OUTPUT,
    build_model,
    export_onnx,
    load_model,
    model_from_state,
    model_spec,
    save_model,
)
from leanml.models.predict import predict

N_INPUTS = 7
CASES = [  # (model config, task, classes): every arch, every task, every norm among them
    (ModelConfig(arch="linear"), "regression", 0),
    (ModelConfig(arch="mlp", hidden=[16, 8], activation="gelu", dropout=0.2, norm="batch"), "binary", 2),
    (ModelConfig(arch="resmlp", hidden=[16, 32], blocks=2, activation="silu", norm="layer"), "multiclass", 3),
]


def _trained(config: ModelConfig, task: str, classes: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    spec = model_spec(config, N_INPUTS, task, classes)
    model = build_model(spec)
    if task == "regression":
        model.set_target_scaling(mean=150.0, std=40.0)
    x = torch.randn(64, N_INPUTS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):  # a few steps, so batch-norm statistics and weights move off their initial values
        out = model(x)
        loss = out.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), spec


def test_the_builtin_architectures_are_registered() -> None:
    assert {"linear", "mlp", "resmlp"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("config,task,classes", CASES, ids=[c[0].arch for c in CASES])
def test_outputs_have_the_shape_of_the_task(config: ModelConfig, task: str, classes: int) -> None:
    model, spec = _trained(config, task, classes)
    out = model(torch.randn(5, N_INPUTS))
    assert out.shape == (5, spec["n_outputs"])
    assert spec["n_outputs"] == (classes if task == "multiclass" else 1)
    assert spec["output"] == {"binary": "logit", "multiclass": "logits", "regression": "value"}[task]
    assert json.loads(json.dumps(spec)) == spec
    probabilities = predict(model, np.random.default_rng(0).normal(size=(10, N_INPUTS)).astype(np.float32))
    if task == "multiclass":
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    elif task == "binary":
        assert probabilities.shape == (10,) and ((probabilities >= 0) & (probabilities <= 1)).all()


@pytest.mark.parametrize("config,task,classes", CASES, ids=[c[0].arch for c in CASES])
def test_round_trip_through_json_and_safetensors(
    tmp_path: Path, config: ModelConfig, task: str, classes: int
) -> None:
    model, spec = _trained(config, task, classes)
    save_model(model, spec, tmp_path)
    loaded, loaded_spec = load_model(tmp_path)
    assert loaded_spec == spec
    x = torch.randn(33, N_INPUTS)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    rebuilt = model_from_state(
        json.loads((tmp_path / MODEL_JSON).read_text()), load_file(tmp_path / MODEL_WEIGHTS)
    )
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_regression_outputs_are_in_the_targets_units() -> None:
    model, _ = _trained(ModelConfig(arch="linear"), "regression", 0)
    state = model.state_dict()
    assert float(state["target_scale"][0]) == 40.0 and float(state["target_shift"][0]) == 150.0
    with torch.no_grad():
        assert torch.allclose(model(torch.zeros(1, N_INPUTS)), model.net(torch.zeros(1, N_INPUTS)) * 40 + 150)


@pytest.mark.parametrize("config,task,classes", CASES, ids=[c[0].arch for c in CASES])
def test_onnx_export_matches_pytorch(tmp_path: Path, config: ModelConfig, task: str, classes: int) -> None:
    model, spec = _trained(config, task, classes)
    path = export_onnx(model.train(), spec, tmp_path / "model.onnx")
    assert model.training  # the exporter works on an eval-mode copy
    model.eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == ONNX_INPUT and inp.type == "tensor(float)" and inp.shape[1] == N_INPUTS
    assert not isinstance(inp.shape[0], int)  # the batch dimension is dynamic
    for rows in (1, 37):
        x = np.random.default_rng(rows).normal(size=(rows, N_INPUTS)).astype(np.float32)
        (onnx_out,) = session.run(None, {ONNX_INPUT: x})
        with torch.no_grad():
            torch_out = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(onnx_out, torch_out, atol=1e-5, rtol=1e-5)


def test_bad_specs_and_weights_are_refused() -> None:
    spec = model_spec(ModelConfig(arch="mlp", hidden=[4]), N_INPUTS, "binary", 2)
    with pytest.raises(StateError, match="unknown model architecture 'transformer'"):
        build_model({**spec, "arch": "transformer"})
    with pytest.raises(StateError, match="missing n_inputs"):
        build_model({k: v for k, v in spec.items() if k != "n_inputs"})
    with pytest.raises(StateError, match="format version"):
        build_model({**spec, "format_version": 99})
    weights = build_model(spec).state_dict()
    with pytest.raises(StateError, match="missing"):
        model_from_state(spec, {k: v for k, v in weights.items() if not k.endswith("bias")})
    wrong = dict(weights)
    wrong["net.layers.0.weight"] = torch.zeros(4, N_INPUTS + 1)
    with pytest.raises(StateError, match="shape"):
        model_from_state(spec, wrong)


@pytest.mark.parametrize("arch", ["linear", "mlp"])
def test_a_regression_graph_folds_its_target_scaling_into_the_last_layer(tmp_path: Path, arch: str) -> None:
    import onnx

    from leanml.models.export import fold_output_scaling

    config = ModelConfig(arch=arch, hidden=[16, 8]) if arch == "mlp" else ModelConfig(arch=arch)
    model, spec = _trained(config, "regression", 0)
    graph = onnx.load(str(export_onnx(model, spec, tmp_path / "model.onnx")))
    last = next(node for node in graph.graph.node if ONNX_OUTPUT in node.output)
    assert last.op_type == "Gemm" and {n.op_type for n in graph.graph.node} <= {"Gemm", "Relu"}
    assert not {"target_scale", "target_shift"} & {t.name for t in graph.graph.initializer}
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).normal(size=(50, N_INPUTS)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {ONNX_INPUT: x})[0], expected, rtol=1e-5, atol=1e-4)
    assert not fold_output_scaling(graph)  # nothing left to fold

    classifier, spec = _trained(ModelConfig(arch="mlp", hidden=[8]), "binary", 2)
    exported = onnx.load(str(export_onnx(classifier, spec, tmp_path / "classifier.onnx")))
    before = exported.SerializeToString()
    assert not fold_output_scaling(exported) and exported.SerializeToString() == before
