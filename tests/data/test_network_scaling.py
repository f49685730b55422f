"""Scalings for networks: ``robust`` (RealMLP's median/IQR with smooth clipping) and ``quantile`` (to a
standard normal), checked against scikit-learn, in prepare's streaming path, and through a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.preprocessing import QuantileTransformer, RobustScaler

from leanml.bundle import load_bundle
from leanml.bundle.artifact import pipeline_scores
from leanml.config import load_config, parse_config
from leanml.data.fit import QUANTILE_KNOTS, fit_preprocessor
from leanml.data.preprocessor import transform
from leanml.data.state import PreprocessState, TargetState
from leanml.data.transform import soft_clip, unscale
from leanml.training.stage import train_and_bundle

TARGET = TargetState(name="y", task="regression")


def _fit(values: np.ndarray, scale: str) -> PreprocessState:
    config = parse_config(
        {
            "name": "t",
            "data": {"train": "x"},
            "target": "y",
            "columns": {"x": {"type": "numeric", "scale": scale}},
        }
    )
    frame = pl.DataFrame({"x": values, "y": np.zeros(len(values))})
    return fit_preprocessor(frame, config.columns, TARGET, ["NA"])


def _scaled(state: PreprocessState, values: np.ndarray) -> np.ndarray:
    """The feature of ``values``, by prepare's streaming (lazy) path."""
    frame = pl.LazyFrame({"x": values, "y": np.zeros(len(values))})
    return transform(frame, state, mode="serve").collect(engine="streaming")["x"].to_numpy()


def _sklearn_quantile(train: np.ndarray, values: np.ndarray) -> np.ndarray:
    reference = QuantileTransformer(
        n_quantiles=QUANTILE_KNOTS, output_distribution="normal", subsample=10**9, random_state=0
    )
    return reference.fit(train.reshape(-1, 1)).transform(values.reshape(-1, 1)).ravel()


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_quantile_equals_scikit_learn_at_the_knots(kind: str) -> None:
    rng = np.random.default_rng(0)
    train = rng.lognormal(0.0, 1.0, 5_000)
    if kind == "discrete":  # tied quantiles: a value shared by several probabilities gets their mean
        train = np.round(train * 2)
    state = _fit(train, "quantile")
    knots = np.array(state.columns[0].scale.knots)
    np.testing.assert_allclose(_scaled(state, knots), _sklearn_quantile(train, knots), rtol=0, atol=1e-9)
    # Between the knots the map is linear in the score, not in the probability: close, and monotone.
    grid = np.linspace(knots[0], knots[-1], 2_001)
    ours = _scaled(state, grid)
    assert np.all(np.diff(ours) >= 0)
    inner = (grid > np.quantile(train, 0.01)) & (grid < np.quantile(train, 0.99))
    assert np.max(np.abs(ours - _sklearn_quantile(train, grid))[inner]) < 0.25
    # Beyond the training range: the end scores, as scikit-learn's clipping gives.
    ends = _scaled(state, np.array([-1e30, 1e30]))
    np.testing.assert_allclose(ends, _sklearn_quantile(train, np.array([-1e30, 1e30])), atol=1e-9)


def test_robust_is_scikit_learns_robust_scaler_then_a_smooth_clip() -> None:
    rng = np.random.default_rng(1)
    train = np.concatenate([rng.normal(5.0, 2.0, 2_000), [1e4, -3e3]])  # two wild values
    state = _fit(train, "robust")
    values = np.array([-1e6, -20.0, 0.0, 5.0, 7.5, 1e4])
    reference = RobustScaler().fit(train.reshape(-1, 1)).transform(values.reshape(-1, 1)).ravel()
    np.testing.assert_allclose(
        _scaled(state, values), reference / np.sqrt(1 + (reference / 3) ** 2), atol=1e-12
    )
    assert np.all(np.abs(_scaled(state, values)) < 3.0)
    np.testing.assert_allclose(soft_clip(pl.Series([0.0, 3.0])).to_numpy(), [0.0, 3 / np.sqrt(2)])


@pytest.mark.parametrize("scale", ["robust", "quantile"])
def test_constant_and_mostly_constant_columns_stay_finite(scale: str) -> None:
    constant = _fit(np.full(100, 7.0), scale)
    out = _scaled(constant, np.array([-5.0, 7.0, 1e9]))
    assert np.all(np.isfinite(out)) and out[1] == 0.0
    spiky = _fit(np.concatenate([np.zeros(90), np.arange(1.0, 11.0)]), scale)  # IQR 0
    out = _scaled(spiky, np.array([0.0, 5.0, 10.0, 100.0]))
    assert np.all(np.isfinite(out)) and out[0] < out[1] < out[2] <= out[3]


def test_bundle_with_robust_and_quantile_columns_serves_what_training_saw(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    frame.write_parquet(tmp_path / "diabetes.parquet")
    scales = ["quantile", "robust", "standard"]
    columns: dict[str, Any] = {
        c: {"type": "numeric", "scale": scales[i % 3]} for i, c in enumerate(frame.columns) if c != "target"
    }
    raw = {
        "name": "diabetes",
        "data": {"train": "diabetes.parquet", "split": {"validation": 0.2, "test": 0.1, "seed": 0}},
        "target": "target",
        "columns": columns,
        "model": {"arch": "mlp", "hidden": [16], "embedding": "periodic"},
        "train": {"epochs": 2, "batch_size": 64},
    }
    (tmp_path / "leanml.yaml").write_text(yaml.safe_dump(raw))
    outcome = train_and_bundle(load_config(tmp_path / "leanml.yaml"))
    bundle = load_bundle(outcome.bundle.path)  # replays the reference rows through pipeline.onnx
    methods = {c.name: c.scale.method for c in bundle.state.columns}
    assert methods["age"] == "quantile" and methods["sex"] == "robust"
    rows = frame.drop("target").head(50)
    np.testing.assert_allclose(
        bundle.predict(rows)["prediction"].to_numpy(),
        pipeline_scores(bundle.pipeline, rows, bundle.state),
        rtol=1e-5,
    )


@pytest.mark.parametrize("scale", ["standard", "robust", "quantile"])
def test_unscale_gives_values_back_in_the_columns_units(scale: str) -> None:
    rng = np.random.default_rng(2)
    train = rng.normal(50.0, 10.0, 3_000)
    state = _fit(train, scale)
    values = np.quantile(train, [0.05, 0.3, 0.5, 0.7, 0.95])
    back = unscale(state.columns[0].scale, _scaled(state, values))
    np.testing.assert_allclose(back, values, rtol=1e-3)
