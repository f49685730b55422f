"""TabM and numeric embeddings: members combine into the usual output, specs round-trip, ONNX = torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from leanml.bundle.runtime import scores
from leanml.config import ModelConfig
from leanml.errors import StateError
from leanml.models import ONNX_INPUT, build_model, export_onnx, load_model, model_spec, save_model
from leanml.models.embeddings import PeriodicEmbedding
from leanml.models.predict import to_predictions
from leanml.models.registry import combine_members
from leanml.shrinking.prune import remove_units, units_to_keep

N_INPUTS = 6
NUMERIC = [0, 2, 3]
CASES = [  # (model config, task, classes)
    (ModelConfig(arch="tabm", members=4, hidden=[16, 8], embedding="periodic", embedding_dim=4), "binary", 2),
    (ModelConfig(arch="tabm", members=3, hidden=[8], dropout=0.0), "multiclass", 3),
    (ModelConfig(arch="tabm", members=5, hidden=[8], embedding="periodic", embedding_dim=3), "regression", 0),
    (ModelConfig(arch="mlp", hidden=[16, 8], embedding="periodic", embedding_frequencies=5), "multiclass", 4),
    (ModelConfig(arch="resmlp", hidden=[16], embedding="periodic", embedding_dim=2), "binary", 2),
]
IDS = [f"{c.arch}-{c.embedding}-{task}" for c, task, _ in CASES]


def _model(config: ModelConfig, task: str, classes: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    spec = model_spec(config, N_INPUTS, task, classes, numeric_features=NUMERIC)
    model = build_model(spec)
    if task == "regression":
        model.set_target_scaling(mean=50.0, std=7.0)
    return model.eval(), spec


def _features(rows: int = 40) -> torch.Tensor:
    return torch.randn(rows, N_INPUTS, generator=torch.Generator().manual_seed(1)) * 3


def test_tabm_averages_its_members_probabilities() -> None:
    members = torch.randn(5, 4, 1) * 4
    binary = torch.sigmoid(combine_members("binary", members))[:, 0]
    torch.testing.assert_close(binary, torch.sigmoid(members[..., 0]).mean(1))
    members = torch.randn(5, 4, 3) * 4
    multiclass = torch.softmax(combine_members("multiclass", members), dim=1)
    torch.testing.assert_close(multiclass, torch.softmax(members, dim=2).mean(1))
    torch.testing.assert_close(combine_members("regression", members), members.mean(1))


def test_combining_keeps_extreme_probabilities() -> None:
    logit = combine_members("binary", torch.full((1, 2, 1), 30.0))
    assert torch.isfinite(logit).all() and logit.item() == pytest.approx(30.0, abs=1e-3)


@pytest.mark.parametrize("config,task,classes", CASES, ids=IDS)
def test_output_has_the_shape_of_a_single_network(config: ModelConfig, task: str, classes: int) -> None:
    model, spec = _model(config, task, classes)
    output = model(_features())
    assert output.shape == (40, spec["n_outputs"])
    members = model.member_outputs(_features())
    assert members.shape == (40, config.members if config.arch == "tabm" else 1, spec["n_outputs"])


@pytest.mark.parametrize("config,task,classes", CASES, ids=IDS)
def test_onnx_export_matches_torch(config: ModelConfig, task: str, classes: int, tmp_path: Path) -> None:
    model, spec = _model(config, task, classes)
    x = _features(33)
    path = export_onnx(model, spec, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {ONNX_INPUT: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)
    # The serving rule (sigmoid / softmax in numpy) gives the averaged probabilities, as in PyTorch.
    served = scores(got, spec)
    np.testing.assert_allclose(served, to_predictions(task, expected).numpy(), rtol=1e-5, atol=1e-5)
    one = session.run(None, {ONNX_INPUT: x[:1].numpy()})[0]  # batch 1 works (dynamic batch)
    np.testing.assert_allclose(one, got[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config,task,classes", CASES[:1] + CASES[3:4], ids=IDS[:1] + IDS[3:4])
def test_save_and_load_round_trip(config: ModelConfig, task: str, classes: int, tmp_path: Path) -> None:
    model, spec = _model(config, task, classes)
    save_model(model, spec, tmp_path)
    loaded, loaded_spec = load_model(tmp_path)
    assert loaded_spec == spec
    assert loaded_spec["embedding"]["features"] == NUMERIC
    torch.testing.assert_close(loaded(_features()), model(_features()))


def test_embedding_only_touches_the_numeric_features() -> None:
    embed = PeriodicEmbedding(N_INPUTS, NUMERIC, frequencies=4, dim=3, scale=0.1)
    x = _features(8)
    out = embed(x)
    assert out.shape == (8, len(NUMERIC) * 3 + N_INPUTS - len(NUMERIC))
    torch.testing.assert_close(out[:, len(NUMERIC) * 3 :], x[:, [1, 4, 5]])  # one-hots pass through


def test_no_embedding_unless_asked_and_none_without_numeric_features() -> None:
    assert "embedding" not in model_spec(ModelConfig(), N_INPUTS, "binary", 2, numeric_features=NUMERIC)
    spec = model_spec(ModelConfig(embedding="periodic"), N_INPUTS, "binary", 2, numeric_features=[])
    assert "embedding" not in spec
    everything = model_spec(ModelConfig(embedding="periodic"), N_INPUTS, "binary", 2)
    assert everything["embedding"]["features"] == list(range(N_INPUTS))


def test_a_bad_embedding_in_a_spec_is_a_state_error() -> None:
    spec = model_spec(ModelConfig(embedding="periodic"), N_INPUTS, "binary", 2, numeric_features=NUMERIC)
    with pytest.raises(StateError, match="embedding"):
        build_model({**spec, "embedding": {**spec["embedding"], "features": [0, 99]}})
    with pytest.raises(StateError, match="embedding"):
        build_model({**spec, "embedding": {**spec["embedding"], "kind": "fourier"}})


def test_an_mlp_with_embeddings_can_still_be_pruned() -> None:
    model, spec = _model(CASES[3][0], "multiclass", 4)
    keep = units_to_keep(model, spec, step=0.5, min_units=2)
    smaller, smaller_spec = remove_units(model, spec, keep)
    assert smaller_spec["hyperparameters"]["hidden"] == [8, 4]
    assert smaller(_features()).shape == (40, 4)
