"""Preprocessing for networks: the scalings ``robust`` (RealMLP's median/IQR with smooth clipping) and
``quantile`` (to a standard normal), checked against scikit-learn, and ``encode: ple`` (piecewise-linear
encoding over quantile bins), checked against the paper's definition; in prepare's streaming path, for
datetime outputs, and through a bundle."""

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
from leanml.data.preprocessor import feature_matrix, transform
from leanml.data.state import NumericState, PreprocessState, TargetState
from leanml.data.stats import ValueCounts
from leanml.data.transform import soft_clip, unscale
from leanml.training.stage import train_and_bundle

TARGET = TargetState(name="y", task="regression")


def _fit_frame(frame: pl.DataFrame, columns: dict[str, Any]) -> PreprocessState:
    config = parse_config({"name": "t", "data": {"train": "x"}, "target": "y", "columns": columns})
    return fit_preprocessor(frame.with_columns(y=pl.lit(0.0)), config.columns, TARGET, ["NA"])


def _fit(values: np.ndarray, scale: str = "standard", **options: Any) -> PreprocessState:
    return _fit_frame(pl.DataFrame({"x": values}), {"x": {"type": "numeric", "scale": scale, **options}})


def _features(state: PreprocessState, values: np.ndarray | pl.Series, name: str = "x") -> np.ndarray:
    """Every feature of ``values`` (column ``name``), by prepare's streaming (lazy) path."""
    frame = pl.LazyFrame({name: values})
    return feature_matrix(transform(frame, state, mode="serve").collect(engine="streaming"), state)


def _scaled(state: PreprocessState, values: np.ndarray) -> np.ndarray:
    """The scaled feature ``x`` of ``values``."""
    return _features(state, values)[:, state.feature_names.index("x")]


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


def test_bundle_with_robust_quantile_and_ple_columns_serves_what_training_saw(tmp_path: Path) -> None:
    """prepare → train → bundle → load (which replays the reference rows through pipeline.onnx): the
    model's input width, the manifest and the drift reference follow the PLE features."""
    from sklearn.datasets import load_diabetes

    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    frame.write_parquet(tmp_path / "diabetes.parquet")
    scales = ["quantile", "robust", "standard"]
    columns: dict[str, Any] = {
        c: {"type": "numeric", "scale": scales[i % 3]} for i, c in enumerate(frame.columns) if c != "target"
    }
    columns["bmi"] |= {"encode": "ple", "bins": 8}  # standard + PLE
    columns["bp"] |= {"encode": "ple", "missing_indicator": True}  # quantile + PLE (16 bins), a flag after
    columns["sex"] |= {"encode": "ple"}  # robust + PLE; two values: one bin
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
    state = bundle.state
    methods = {c.name: c.scale.method for c in state.columns}
    assert methods["age"] == "quantile" and methods["sex"] == "robust" and methods["bp"] == "quantile"
    names = state.feature_names
    assert names[names.index("bmi") : names.index("bmi") + 9] == ["bmi", *(f"bmi__ple{t}" for t in range(8))]
    bins = {c.name: len(c.ple_edges) - 1 for c in state.columns if isinstance(c, NumericState)}
    assert bins["bmi"] == 8 and bins["bp"] >= 12 and bins["sex"] == 1 and bins["age"] == -1
    assert names[names.index("bp") + bins["bp"] + 1] == "bp__missing"
    assert len(names) == 10 + 8 + bins["bp"] + 1 + 1
    assert bundle.manifest["features"] == len(names) == bundle.spec["n_inputs"]
    drift = bundle.drift_reference
    assert drift is not None and drift["columns"]["bmi"]["feature"] == "bmi"
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


def _papers_ple(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Equation 1 of Gorishniy et al. (2022), as written: ``e_t = 0`` if ``x < b_{t-1}`` and ``t > 1``,
    ``1`` if ``x >= b_t`` and ``t < T``, else ``(x - b_{t-1}) / (b_t - b_{t-1})``."""
    bins = len(b) - 1
    out = np.empty((len(x), bins))
    for t in range(1, bins + 1):
        e = (x - b[t - 1]) / (b[t] - b[t - 1])
        if t > 1:
            e = np.where(x < b[t - 1], 0.0, e)
        if t < bins:
            e = np.where(x >= b[t], 1.0, e)
        out[:, t - 1] = e
    return out


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_ple_is_the_papers_encoding_over_quantile_bins(kind: str) -> None:
    import torch

    rng = np.random.default_rng(3)
    train = rng.lognormal(0.0, 1.0, 3_000)
    if kind == "discrete":  # tied quantiles collapse: fewer bins
        train = np.round(train * 2)
    state = _fit(train, "standard", encode="ple", bins=16)
    edges = np.array(state.columns[0].ple_edges)
    # The bins of the paper's code: torch.quantile at linspace(0, 1, bins + 1), then unique.
    reference = torch.quantile(torch.tensor(train), torch.linspace(0, 1, 17, dtype=torch.float64)).unique()
    np.testing.assert_allclose(edges, reference.numpy(), rtol=1e-12)
    assert (len(edges) == 17) == (kind == "continuous")
    values = np.concatenate([edges, rng.lognormal(0.0, 1.5, 500), [-50.0, 0.0, 1e6]])
    features = _features(state, values)
    names = state.feature_names
    assert names == ["x", *(f"x__ple{t}" for t in range(len(edges) - 1))]
    ple = features[:, 1:]
    np.testing.assert_allclose(ple, _papers_ple(values, edges), rtol=1e-12, atol=1e-12)
    assert np.all(ple[:, 1:-1] >= 0) and np.all(ple[:, 1:-1] <= 1)  # the ends are unbounded outwards
    # The encoding keeps x: the first edge plus the bins' shares of their widths.
    np.testing.assert_allclose(edges[0] + ple @ np.diff(edges), values, rtol=1e-9)
    np.testing.assert_allclose(features[:, 0], (values - train.mean()) / train.std(), rtol=1e-9)


def test_ple_of_constant_missing_and_two_valued_columns_stays_finite() -> None:
    constant = _fit(np.full(50, 1e30), encode="ple")  # one bin, wide enough to divide by at any scale
    assert constant.feature_names == ["x", "x__ple0"]
    out = _features(constant, np.array([1e30, 0.0, -3e38, 3e38]))
    assert np.all(np.isfinite(out)) and out[0, 1] == 0.0
    nulls = pl.Series("x", [1.0, 2.0, None, 4.0, 4.0, None], dtype=pl.Float64)
    state = _fit_frame(pl.DataFrame([nulls]), {"x": {"type": "numeric", "encode": "ple", "bins": 4}})
    # Imputed values (the median, 3) are counted in the bins: quantiles of [1, 2, 3, 3, 4, 4].
    assert state.columns[0].ple_edges == [1.0, 2.25, 3.0, 3.75, 4.0]
    out = _features(state, pl.Series("x", [None, 0.0, 3.5, 10.0], dtype=pl.Float64))
    expected = [[1, 1, 0, 0], [-0.8, 0, 0, 0], [1, 1, 2 / 3, 0], [1, 1, 1, 25]]
    np.testing.assert_allclose(out[:, 1:], expected, rtol=1e-12)
    binary = _fit(np.r_[np.zeros(90), np.ones(10)], encode="ple", bins=4)
    assert binary.columns[0].ple_edges == [0.0, 1.0] and len(binary.feature_names) == 2


def test_datetime_outputs_take_robust_and_quantile_scaling() -> None:
    rng = np.random.default_rng(4)
    micros = rng.integers(0, 40 * 365 * 86_400 * 10**6, 2_000)
    moments = pl.Series("t", micros, dtype=pl.Int64).cast(pl.Datetime("us"))
    for scale in ("robust", "quantile"):
        spec = {"t": {"type": "datetime", "parts": ["hour", "month"], "scale": scale}}
        state = _fit_frame(pl.DataFrame([moments]), spec)
        assert {out.scale.method for out in state.columns[0].outputs} == {scale}
        features = _features(state, moments, "t")
        hours = moments.dt.hour().to_numpy().astype(np.float64)
        got = features[:, state.feature_names.index("t__hour")]
        if scale == "quantile":
            expected = _sklearn_quantile(hours, hours)  # 24 values: every one is a fitted quantile
        else:
            z = RobustScaler().fit(hours.reshape(-1, 1)).transform(hours.reshape(-1, 1)).ravel()
            expected = z / np.sqrt(1 + (z / 3) ** 2)
        np.testing.assert_allclose(got, expected, atol=1e-9)


def test_value_counts_quantiles_are_numpys() -> None:
    rng = np.random.default_rng(5)
    values = rng.integers(-20, 20, 1_001).astype(np.float64)
    distinct, counts = np.unique(values, return_counts=True)
    table = ValueCounts(distinct.tolist(), counts.tolist())
    qs = np.linspace(0.0, 1.0, 129)
    np.testing.assert_array_equal(table.quantiles(qs), np.quantile(values, qs))
    assert table.quantile(0.3) == np.quantile(values, 0.3) and table.median() == np.median(values)
