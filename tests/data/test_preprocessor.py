"""Analyze/transform against scikit-learn on real data, and the rules sklearn does not have."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from helpers import FLIGHTS_COLUMNS
from leanml.config import parse_config
from leanml.data.preprocessor import (
    FLAGS,
    REASON,
    feature_matrix,
    fit_preprocessor,
    transform,
    transform_records,
)
from leanml.data.state import PreprocessState, TargetState
from leanml.errors import DataError, StateError

TARGET = TargetState(name="delayed", task="binary", classes=["false", "true"], labels=[False, True])
NULLS = ["", "NA"]


def columns(spec: dict[str, Any]) -> dict[str, Any]:
    """Validated column specs from plain dicts."""
    return parse_config(
        {"name": "t", "data": {"train": "x"}, "target": "the_target", "columns": spec}
    ).columns


def fit(frame: pl.DataFrame, spec: dict[str, Any]) -> PreprocessState:
    return fit_preprocessor(frame, columns(spec), TARGET, NULLS)


def numeric_pandas(frame: pl.DataFrame, name: str) -> pd.DataFrame:
    return frame.select(pl.col(name).cast(pl.Float64)).to_pandas()


def categorical_pandas(frame: pl.DataFrame, name: str) -> pd.DataFrame:
    values = frame[name].to_list()
    return pd.DataFrame({name: pd.Series(values, dtype=object)})


@pytest.mark.parametrize("impute", ["mean", "median", "most_frequent", "constant"])
@pytest.mark.parametrize("scale", ["standard", "minmax"])
def test_numeric_matches_sklearn_imputer_and_scaler(flights: pl.DataFrame, impute: str, scale: str) -> None:
    spec = {"dep_delay": {"type": "numeric", "impute": impute, "scale": scale, "fill_value": -5.0}}
    state = fit(flights, spec)
    ours = feature_matrix(transform(flights, state), state)

    imputer = SimpleImputer(strategy=impute, fill_value=-5.0)
    scaler = StandardScaler() if scale == "standard" else MinMaxScaler()
    reference = make_pipeline(imputer, scaler).fit_transform(numeric_pandas(flights, "dep_delay"))
    assert flights["dep_delay"].null_count() > 0, "the test needs real missing values"
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-9)


def test_missing_indicator_matches_sklearn(flights: pl.DataFrame) -> None:
    spec = {"dep_delay": {"type": "numeric", "impute": "median", "scale": "none", "missing_indicator": True}}
    state = fit(flights, spec)
    assert state.feature_names == ["dep_delay", "dep_delay__missing"]
    ours = feature_matrix(transform(flights, state), state)
    reference = SimpleImputer(strategy="median", add_indicator=True).fit_transform(
        numeric_pandas(flights, "dep_delay")
    )
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-9)


@pytest.mark.parametrize("min_frequency", [None, 150, 0.01])
@pytest.mark.parametrize("impute", ["most_frequent", "constant"])
def test_onehot_matches_sklearn(flights: pl.DataFrame, min_frequency: Any, impute: str) -> None:
    train, held_out = flights.head(30_000), flights.tail(10_000)
    # Blank out some values and add a category training never saw.
    train = train.with_columns(
        pl.when(pl.int_range(pl.len()) % 37 == 0).then(None).otherwise(pl.col("dest")).alias("dest")
    )
    held_out = held_out.with_columns(
        pl.when(pl.int_range(pl.len()) % 11 == 0)
        .then(pl.lit("NEVER_SEEN"))
        .otherwise(pl.col("dest"))
        .alias("dest")
    )
    spec = {
        "dest": {
            "type": "categorical",
            "impute": impute,
            "fill_value": "missing_value",
            "min_frequency": min_frequency,
        }
    }
    state = fit(train, spec)
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, min_frequency=min_frequency)
    imputer = SimpleImputer(strategy=impute, fill_value="missing_value", missing_values=None)
    pipeline = make_pipeline(imputer, encoder).fit(categorical_pandas(train, "dest"))

    for part in (train, held_out):
        ours = feature_matrix(transform(part, state), state)
        reference = pipeline.transform(categorical_pandas(part, "dest"))
        assert ours.shape == reference.shape
        np.testing.assert_array_equal(ours, reference)
    names = [n.removeprefix("dest=") for n in state.feature_names]
    sk_names = [n.removeprefix("dest_") for n in encoder.get_feature_names_out(["dest"])]
    assert names == [n.replace("infrequent_sklearn", "__infrequent__") for n in sk_names]


def test_full_flights_config_matches_sklearn_column_by_column(flights: pl.DataFrame) -> None:
    spec = {k: v for k, v in FLIGHTS_COLUMNS.items() if v["type"] in ("numeric", "categorical")}
    spec["dep_delay"] = {"type": "numeric", "impute": "median", "scale": "standard"}
    state = fit(flights, spec)
    ours = transform(flights, state)
    for name, column in spec.items():
        got = ours.select(
            [f for f in state.feature_names if f == name or f.startswith(f"{name}=")]
        ).to_numpy()
        if column["type"] == "numeric":
            imputer = SimpleImputer(strategy=column["impute"])
            scaler = StandardScaler() if column["scale"] == "standard" else MinMaxScaler()
            want = make_pipeline(imputer, scaler).fit_transform(numeric_pandas(flights, name))
        else:
            strategy = column.get("impute", "constant")
            imputer = SimpleImputer(strategy=strategy, fill_value="__missing__", missing_values=None)
            encoder = OneHotEncoder(
                handle_unknown="ignore", sparse_output=False, min_frequency=column.get("min_frequency")
            )
            want = make_pipeline(imputer, encoder).fit_transform(categorical_pandas(flights, name))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=name)


def test_datetime_parts_and_epoch_match_pandas(flights: pl.DataFrame) -> None:
    spec = {
        "time_hour": {
            "type": "datetime",
            "parts": ["year", "month", "day", "hour", "dayofweek", "dayofyear", "quarter"],
            "scale": "none",
        }
    }
    state = fit(flights, spec)
    ours = transform(flights, state)
    stamps = pd.to_datetime(flights["time_hour"].dt.replace_time_zone(None).to_pandas())
    expected = {
        "epoch": (stamps - pd.Timestamp("1970-01-01")).dt.total_seconds(),
        "year": stamps.dt.year,
        "month": stamps.dt.month,
        "day": stamps.dt.day,
        "hour": stamps.dt.hour,
        "dayofweek": stamps.dt.day_of_week,
        "dayofyear": stamps.dt.day_of_year,
        "quarter": stamps.dt.quarter,
    }
    for part, values in expected.items():
        np.testing.assert_allclose(
            ours[f"time_hour__{part}"].to_numpy(), values.to_numpy(dtype=float), err_msg=part
        )


def test_datetime_imputation_and_scaling_use_imputed_statistics() -> None:
    frame = pl.DataFrame({"t": ["2024-01-01 00:00:00", None, "2024-01-03 12:00:00", "garbage"]})
    state = fit(
        frame,
        {
            "t": {
                "type": "datetime",
                "parts": ["hour"],
                "impute": "median",
                "scale": "standard",
                "missing_indicator": True,
            }
        },
    )
    out = transform(frame, state)
    # median of the two valid epochs is 2024-01-02 06:00 → hour 6 for the two imputed rows.
    hours = np.array([0, 6, 12, 6], dtype=float)
    np.testing.assert_allclose(out["t__hour"].to_numpy(), (hours - hours.mean()) / hours.std())
    assert out["t__missing"].to_list() == [0.0, 1.0, 0.0, 1.0]


def test_text_numbers_are_converted_and_garbage_is_imputed() -> None:
    frame = pl.DataFrame({"x": [" 1.5", "2", "abc", "NA", None, "inf", "4"]})
    state = fit(
        frame, {"x": {"type": "numeric", "impute": "mean", "scale": "none", "missing_indicator": True}}
    )
    out = transform(frame, state)
    mean = (1.5 + 2 + 4) / 3
    assert out["x"].to_list() == pytest.approx([1.5, 2, mean, mean, mean, mean, 4])
    assert out["x__missing"].to_list() == [0, 0, 1, 1, 1, 1, 0]


def test_constant_column_is_centred_not_divided_by_zero() -> None:
    frame = pl.DataFrame({"c": [3.0] * 5, "m": [1.0, 2, 3, 4, 5]})
    state = fit(frame, {"c": {"type": "numeric"}, "m": {"type": "numeric", "scale": "minmax"}})
    out = transform(frame, state)
    assert out["c"].to_list() == [0.0] * 5
    assert state.columns[0].scale.divisor == 1.0


def test_all_null_column_is_a_clear_error() -> None:
    frame = pl.DataFrame(
        {"x": [None, None, None], "y": ["a", "b", "c"]}, schema={"x": pl.Float64, "y": pl.String}
    )
    with pytest.raises(DataError, match=r"column 'x': no usable value.*type: ignore"):
        fit(frame, {"x": {"type": "numeric"}, "y": {"type": "categorical"}})


def test_missing_configured_column_is_named() -> None:
    frame = pl.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(DataError, match=r"'b'.*not in the data.*the data has: a"):
        fit(frame, {"a": {"type": "numeric"}, "b": {"type": "numeric"}})


class TestOutliers:
    frame = pl.DataFrame({"x": [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 1000], "k": ["a"] * 10})

    def test_iqr_bounds_are_numpy_percentiles(self) -> None:
        state = fit(self.frame, {"x": {"type": "numeric", "outliers": {"method": "iqr", "k": 1.5}}})
        q1, q3 = np.percentile(self.frame["x"].to_numpy(), [25, 75])
        rule = state.columns[0].outliers
        assert (rule.lower, rule.upper) == pytest.approx((q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)))

    def test_zscore_bounds(self) -> None:
        state = fit(self.frame, {"x": {"type": "numeric", "outliers": {"method": "zscore", "k": 2}}})
        values = self.frame["x"].to_numpy()
        rule = state.columns[0].outliers
        assert rule.upper == pytest.approx(values.mean() + 2 * values.std())

    def test_clip_then_statistics_use_clipped_values(self) -> None:
        state = fit(
            self.frame,
            {
                "x": {
                    "type": "numeric",
                    "scale": "none",
                    "impute": "mean",
                    "outliers": {"method": "range", "min": 0, "max": 10, "action": "clip"},
                }
            },
        )
        out = transform(self.frame, state)
        assert out["x"].max() == 10.0
        assert state.columns[0].observed_max == 10.0

    def test_null_action_imputes_the_outlier(self) -> None:
        state = fit(
            self.frame,
            {
                "x": {
                    "type": "numeric",
                    "scale": "none",
                    "impute": "median",
                    "outliers": {"method": "range", "max": 100, "action": "null"},
                }
            },
        )
        out = transform(self.frame, state)
        assert out["x"][-1] == 5.0  # median of 1..9

    def test_drop_excludes_rows_from_statistics_and_serving_policies_apply(self) -> None:
        base = {"type": "numeric", "scale": "none", "impute": "mean"}
        for serving, expected, reason, flags in [
            ("clip", 100.0, None, None),
            ("flag", 1000.0, None, "x"),
            ("reject", 1000.0, "outlier:x", None),
        ]:
            spec = {
                "x": {
                    **base,
                    "outliers": {"method": "range", "max": 100, "action": "drop", "serving": serving},
                }
            }
            state = fit(self.frame, spec)
            assert state.columns[0].fill == pytest.approx(5.0)  # the dropped row is not in the mean
            served = transform(self.frame, state, mode="serve")
            assert served["x"][-1] == expected
            assert served[REASON][-1] == reason
            assert served[FLAGS][-1] == flags
            trained = transform(self.frame, state, mode="train")
            assert trained[REASON][-1] == "outlier:x"
            assert trained[REASON][:-1].is_null().all()


def test_unknown_category_policy_error_rejects_in_serving() -> None:
    train = pl.DataFrame({"c": ["a", "b", "a"]})
    state = fit(train, {"c": {"type": "categorical", "handle_unknown": "error"}})
    out = transform(pl.DataFrame({"c": ["a", "zzz", None]}), state)
    assert out[REASON].to_list() == [None, "unseen_category:c", None]
    assert out.select(state.feature_names).row(1) == (0.0, 0.0)


def test_records_frames_and_lazy_frames_transform_identically(flights: pl.DataFrame) -> None:
    state = fit(flights.head(5000), FLIGHTS_COLUMNS)
    sample = flights.slice(100, 50)
    eager = transform(sample, state)
    lazy = transform(sample.lazy(), state).collect()
    records = transform_records(sample.to_dicts(), state)
    np.testing.assert_array_equal(feature_matrix(eager, state), feature_matrix(lazy, state))
    np.testing.assert_allclose(feature_matrix(records, state), feature_matrix(eager, state), atol=1e-12)
    # One record at a time, as JSON would send it (datetimes as text, ints for floats).
    one = {**sample.row(3, named=True), "time_hour": str(sample["time_hour"][3]), "distance": 1}
    alone = feature_matrix(transform_records([one], state), state)
    assert alone.shape == (1, len(state.feature_names))


def test_state_round_trips_through_json(tmp_path, flights: pl.DataFrame) -> None:
    state = fit(flights.head(5000), FLIGHTS_COLUMNS)
    path = tmp_path / "preprocess.json"
    state.save(path)
    loaded = PreprocessState.load(path)
    assert loaded == state
    np.testing.assert_array_equal(
        feature_matrix(transform(flights.head(200), loaded), loaded),
        feature_matrix(transform(flights.head(200), state), state),
    )


def test_state_from_a_newer_format_is_refused(tmp_path, flights: pl.DataFrame) -> None:
    state = fit(flights.head(1000), {"distance": {"type": "numeric"}})
    payload = state.model_dump(mode="json")
    payload["format_version"] = 99
    with pytest.raises(StateError, match="format version 99 is newer"):
        PreprocessState.from_dict(payload)
    with pytest.raises(StateError, match="missing 'format_version'"):
        PreprocessState.from_dict({})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(StateError, match="cannot read"):
        PreprocessState.load(tmp_path / "bad.json")


def test_datetime_format_is_inferred_once_and_kept_in_the_state() -> None:
    from leanml.data.convert import infer_datetime_format

    assert infer_datetime_format(pl.Series(["2013-01-01T10:00:00Z", "2013-01-02T11:30:00Z"])) == (
        "%Y-%m-%dT%H:%M:%S%.fZ"
    )
    assert infer_datetime_format(pl.Series(["2024-01-05", "2024-02-06"])) == "%Y-%m-%d"
    assert infer_datetime_format(pl.Series(["soon", "later"])) is None
    frame = pl.DataFrame({"t": ["2024-01-01 08:00:00", "2024-01-02 09:30:00"] * 30 + ["NA", "not a time"]})
    state = fit(frame, {"t": {"type": "datetime", "parts": ["hour"], "scale": "none"}})
    assert state.columns[0].format == "%Y-%m-%d %H:%M:%S%.f"
    served = transform(pl.DataFrame({"t": ["2024-03-03 17:00:00", "2024-03-03T17:00:00Z"]}), state)
    assert served["t__hour"][0] == 17.0
    assert served["t__hour"][1] == 20.0  # another format is invalid: imputed with the median time, 20:45


def test_a_given_collect_runs_every_query_round() -> None:
    """The ``collect`` hook (the cluster's analyze) sees each round of queries and its answers are used."""
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 100.0], "c": ["a", "b", "a", None, "a"]})
    spec = {
        "x": {
            "type": "numeric",
            "outliers": {"method": "iqr", "k": 1.5, "action": "clip"},
            "impute": "median",
        },
        "c": {"type": "categorical"},
    }
    rounds: list[int] = []

    def collect(queries: list[pl.LazyFrame]) -> list[pl.DataFrame]:
        rounds.append(len(queries))
        return [q.collect() for q in queries]

    hooked = fit_preprocessor(frame.lazy(), columns(spec), TARGET, NULLS, collect=collect)
    assert rounds == [1, 3]  # outlier bounds (x's counts), then moments + x's and c's counts
    assert hooked == fit(frame, spec)
