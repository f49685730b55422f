"""The serving graph (SPEC §3.7) against the Polars path: same features, same problems, same answers.

The property test fits a real :class:`PreprocessState` on a random frame for random column specs, then
feeds rows full of edge cases (nulls, null tokens, unseen and rare categories, ±inf, 1e300, values just
outside the outlier bounds under every policy, dates before 1970 and after 2100, unparseable text) to
both ``transform`` (serve mode) and the compiled graph.

Tolerance: the graph does the Polars path's float64 operations in the same order, so its features are
bit-identical in float64; it outputs float32 (the model's input type). We therefore assert equality with
the Polars matrix cast to float32 (what ``Bundle.features`` feeds the model) and, against the float64
matrix, a relative error of at most 1e-6: float32 rounding is at most 2**-24 ≈ 6e-8 relative, and an
absolute 1e-6 floor covers values near zero.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnxruntime.quantization import QuantType, quantize_dynamic

from leanml.bundle import graph
from leanml.bundle.artifact import load_bundle
from leanml.bundle.graph import (
    FLAGS,
    INVALID_INT64,
    MISSING_INT64,
    MISSING_STRING,
    PROBLEMS,
    build_pipeline,
    compile_preprocessing,
    flag_names,
    graph_inputs,
    manifest_entry,
    problem_names,
)
from leanml.bundle.runtime import OnnxRuntime, PipelineRuntime, scores
from leanml.config import ModelConfig, parse_config
from leanml.data.preprocessor import (
    FLAGS as POLARS_FLAGS,
)
from leanml.data.preprocessor import (
    REASON,
    annotate,
    feature_matrix,
    fit_preprocessor,
    rejection_rules,
    transform,
)
from leanml.data.state import DatetimeState, NumericState, PreprocessState, TargetState
from leanml.errors import DataError
from leanml.metrics import predicted_classes
from leanml.models import ONNX_INPUT, ONNX_OUTPUT, build_model, export_onnx, model_spec

NULLS = ["", "NA", "?"]
TARGET = TargetState(name="y", task="binary", classes=["0", "1"], labels=[0, 1])
VOCAB = ["a", "b", "c", "d", "e", "f"]
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
PARTS = ["year", "quarter", "month", "day", "dayofweek", "dayofyear", "hour", "minute", "second"]
EPOCH_2000 = 946_684_800_000_000
YEAR_US = 365 * 86_400 * 1_000_000
TRAIN_ROWS, TEST_ROWS = 40, 40
OUTLIER_POLICIES = [
    ("drop", "clip"),
    ("drop", "flag"),
    ("drop", "reject"),
    ("clip", "clip"),
    ("null", "clip"),
]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def fit(frame: pl.DataFrame, spec: dict[str, Any], nulls: list[str] = NULLS) -> PreprocessState:
    config = parse_config({"name": "t", "data": {"train": "x"}, "target": "y", "columns": spec})
    return fit_preprocessor(frame, config.columns, TARGET, nulls)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


VARIANTS = [(18, False), (20, False), (18, True), (20, True)]
"""(opset, packed): a lookup per categorical column before opset 20, one for all from 20 on; one input
per column (``pipeline.onnx``) or one per kind (the graph the server runs)."""


def run_preprocessing(
    state: PreprocessState, frame: pl.DataFrame, opset: int = 18, packed: bool = False
) -> dict[str, np.ndarray]:
    compiled = compile_preprocessing(state, opset=opset, packed=packed)
    onnx.checker.check_model(compiled, full_check=True)
    if packed:  # the runtime packs the columns and gives back the check outputs the graph leaves out
        packing = graph.packed_inputs(state)
        return PipelineRuntime(compiled.SerializeToString(), packing=packing).run(graph_inputs(frame, state))
    sess = session(compiled)
    outputs = sess.run(None, graph_inputs(frame, state))
    return dict(zip([o.name for o in sess.get_outputs()], outputs, strict=True))


def polars_checks(frame: pl.DataFrame, state: PreprocessState) -> tuple[np.ndarray, list[Any], list[Any]]:
    """The Polars path's verdicts: one column per problem name, ``__reason`` and ``__flags`` per row."""
    annotated = annotate(frame, state, "serve").collect()
    columns = [condition.fill_null(False) for _, _, condition in rejection_rules(state.columns, "serve")]
    if columns:
        matrix = annotated.select(c.alias(f"c{i}") for i, c in enumerate(columns)).to_numpy().astype(bool)
    else:
        matrix = np.zeros((frame.height, 0), dtype=bool)
    return matrix, annotated[REASON].to_list(), annotated[POLARS_FLAGS].to_list()


def assert_same_as_polars(frame: pl.DataFrame, state: PreprocessState) -> None:
    for opset, packed in VARIANTS:
        assert_variant_same_as_polars(frame, state, opset, packed)


def assert_variant_same_as_polars(
    frame: pl.DataFrame, state: PreprocessState, opset: int, packed: bool
) -> None:
    got = run_preprocessing(state, frame, opset, packed)
    transformed = transform(frame, state, mode="serve")
    expected64 = feature_matrix(transformed, state, np.float64)
    expected32 = feature_matrix(transformed, state, np.float32)
    features = got[graph.FEATURES]
    assert features.dtype == np.float32 and features.shape == expected64.shape
    np.testing.assert_array_equal(features, expected32)
    # A scaled 3.4e38 (a valid input) may exceed float32's range: inf in both paths, checked just above.
    finite = np.isfinite(expected32)
    np.testing.assert_allclose(features[finite], expected64[finite], rtol=1e-6, atol=1e-6)

    checks, reasons, flags = polars_checks(frame, state)
    names = problem_names(state)
    assert got[PROBLEMS].dtype == np.bool_ and got[PROBLEMS].shape == (frame.height, len(names))
    np.testing.assert_array_equal(got[PROBLEMS], checks)
    rejections = len(rejection_rules(state.columns, "serve"))
    for row, reason in enumerate(reasons):  # the first rejection rule that holds is the row's reason
        hits = [names[i] for i in range(rejections) if got[PROBLEMS][row, i]]
        assert (hits[0] if hits else None) == reason
    flagged = flag_names(state)
    for row, flag in enumerate(flags):
        assert [flagged[i] for i in np.flatnonzero(got[FLAGS][row])] == (flag.split(",") if flag else [])


# --------------------------------------------------------------------------------------------------
# Random column specs, training frames and nasty inputs
# --------------------------------------------------------------------------------------------------
@st.composite
def numeric_spec(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "numeric",
        "impute": draw(st.sampled_from(["mean", "median", "most_frequent", "constant"])),
        "fill_value": draw(st.sampled_from([-3.5, 0.0, 7.25])),
        "missing_indicator": draw(st.booleans()),
        "scale": draw(st.sampled_from(["standard", "minmax", "robust", "quantile", "none"])),
        "invalid": draw(st.sampled_from(["null", "reject"])),
    }
    if draw(st.booleans()):
        spec["encode"], spec["bins"] = "ple", draw(st.sampled_from([2, 3, 8, 64]))
    if draw(st.booleans()):
        method = draw(st.sampled_from(["range", "iqr", "zscore"]))
        rule: dict[str, Any] = {
            "method": method,
            "k": draw(st.sampled_from([0.5, 1.5, 3.0])),
        }
        # (action, serving): serving only matters under drop; drawn as pairs so each policy comes up.
        rule["action"], rule["serving"] = draw(st.sampled_from(OUTLIER_POLICIES))
        if method == "range":
            rule["min"], rule["max"] = draw(st.sampled_from([(-1.0, 1.5), (None, 0.5), (-0.5, None)]))
        spec["outliers"] = rule
    return spec


@st.composite
def categorical_spec(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "categorical",
        "impute": draw(st.sampled_from(["most_frequent", "constant"])),
        "fill_value": draw(st.sampled_from(["__missing__", "a", "f"])),  # new, frequent or rare
        "missing_indicator": draw(st.booleans()),
        "min_frequency": draw(st.sampled_from([None, 3, 0.1])),
        "handle_unknown": draw(st.sampled_from(["ignore", "error"])),
        "strip": draw(st.booleans()),
    }


@st.composite
def datetime_spec(draw: st.DrawFn) -> dict[str, Any]:
    parts = draw(st.lists(st.sampled_from(PARTS), unique=True, max_size=len(PARTS)))
    return {
        "type": "datetime",
        "parts": parts,
        "epoch": True if not parts else draw(st.booleans()),
        "impute": draw(st.sampled_from(["mean", "median", "most_frequent"])),
        "missing_indicator": draw(st.booleans()),
        "scale": draw(st.sampled_from(["standard", "minmax", "robust", "quantile", "none"])),
        "invalid": draw(st.sampled_from(["null", "reject"])),
    }


def _with_nulls(draw: st.DrawFn, values: list[Any], null: Any = None) -> list[Any]:
    keep = draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    return [v if k or i < 3 else null for i, (v, k) in enumerate(zip(values, keep, strict=True))]


@st.composite
def training_frame(draw: st.DrawFn, spec: dict[str, Any], text_dates: set[str]) -> pl.DataFrame:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data: dict[str, pl.Series] = {}
    for name, column in spec.items():
        if column["type"] == "numeric":
            values = rng.standard_normal(TRAIN_ROWS) * draw(st.sampled_from([0.5, 1.0, 1e3]))
            if draw(st.booleans()):  # few distinct values: tied quantiles, a zero IQR, even a constant
                values = np.round(values / draw(st.sampled_from([1.0, 4.0, 1e9])))
            if draw(st.booleans()):  # extremes: ±inf and 1e300 (invalid, so imputed), huge valid ones
                values[:4] = draw(
                    st.sampled_from([[np.inf, -np.inf, 1e300, 0.5], [3.4e38, -3.4e38, 1e30, 1e-300]])
                )
            values = values.tolist()
            data[name] = pl.Series(name, _with_nulls(draw, values), dtype=pl.Float64)
        elif column["type"] == "categorical":
            values = rng.choice(VOCAB, TRAIN_ROWS, p=[0.35, 0.25, 0.2, 0.1, 0.06, 0.04]).tolist()
            data[name] = pl.Series(name, _with_nulls(draw, values, draw(st.sampled_from([None, "NA", ""]))))
        else:
            micros = EPOCH_2000 + rng.integers(-60 * YEAR_US, 60 * YEAR_US, TRAIN_ROWS)
            moments = pl.Series(name, micros.tolist(), dtype=pl.Int64).cast(pl.Datetime("us"))
            if name in text_dates:
                moments = moments.dt.truncate("1s").dt.strftime(DATE_FORMAT)
            data[name] = pl.Series(name, _with_nulls(draw, moments.to_list()), dtype=moments.dtype)
    return pl.DataFrame(data)


NUMERIC_EDGES = [None, float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 3.4e38, -3.4e38, 0.0, -0.0]


def _numeric_values(draw: st.DrawFn, column: NumericState) -> list[Any]:
    near: list[float] = []
    if column.outliers is not None:
        for bound in (column.outliers.lower, column.outliers.upper):
            if bound is not None:
                near += [bound, np.nextafter(bound, np.inf), np.nextafter(bound, -np.inf), bound * 3 + 1]
    element = st.one_of(
        st.sampled_from(NUMERIC_EDGES + near if near else NUMERIC_EDGES),
        st.floats(-3.0, 3.0),
        st.floats(allow_nan=True, allow_infinity=True),
    )
    return draw(st.lists(element, min_size=TEST_ROWS, max_size=TEST_ROWS))


def _datetime_values(draw: st.DrawFn, text: bool) -> pl.Series:
    micros = st.one_of(
        st.integers(EPOCH_2000 - 80 * YEAR_US, EPOCH_2000 + 80 * YEAR_US),  # 1920 .. 2080
        st.integers(-250 * YEAR_US, 0),  # 1720 .. 1970
        st.integers(100 * YEAR_US, 500 * YEAR_US),  # 2070 .. 2470
        st.integers(-1900 * YEAR_US, 7000 * YEAR_US),  # years 70 .. 8900
        st.sampled_from([0, -1, 1, -86_400_000_000, 951_782_400_000_000, -2_208_988_800_000_000]),
        st.none(),
    )
    values = pl.Series(draw(st.lists(micros, min_size=TEST_ROWS, max_size=TEST_ROWS)), dtype=pl.Int64)
    moments = values.cast(pl.Datetime("us"))
    if not text:
        return moments
    texts = moments.dt.strftime(DATE_FORMAT).to_list()
    junk = st.sampled_from(["", "NA", "?", "not a date", "2020-13-45 00:00:00", " 2001-02-03 04:05:06 "])
    return pl.Series([draw(st.one_of(st.just(t), junk)) for t in texts], dtype=pl.String)


@st.composite
def serving_case(draw: st.DrawFn) -> tuple[PreprocessState, pl.DataFrame]:
    kinds = draw(st.lists(st.sampled_from(["numeric", "categorical", "datetime"]), min_size=1, max_size=5))
    makers = {"numeric": numeric_spec, "categorical": categorical_spec, "datetime": datetime_spec}
    spec = {f"{kind[:3]}{i}": draw(makers[kind]()) for i, kind in enumerate(kinds)}
    text_dates = {n for n, s in spec.items() if s["type"] == "datetime" and draw(st.booleans())}
    train = draw(training_frame(spec, text_dates))
    try:
        state = fit(train, spec)
    except DataError:  # e.g. every training row dropped as an outlier: not a state to serve
        state = fit(train, {n: {**s, "outliers": None} if "outliers" in s else s for n, s in spec.items()})
    test: dict[str, pl.Series] = {}
    for column in state.columns:
        if isinstance(column, NumericState):
            test[column.name] = pl.Series(_numeric_values(draw, column), dtype=pl.Float64)
        elif isinstance(column, DatetimeState):
            test[column.name] = _datetime_values(draw, column.name in text_dates)
        else:
            choices = [*VOCAB, "zzz", "A", " a", None, "NA", "?", "", "__missing__"]
            test[column.name] = pl.Series(
                draw(st.lists(st.sampled_from(choices), min_size=TEST_ROWS, max_size=TEST_ROWS)),
                dtype=pl.String,
            )
    return state, pl.DataFrame(test)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(serving_case())
def test_graph_matches_the_polars_path(case: tuple[PreprocessState, pl.DataFrame]) -> None:
    state, frame = case
    assert_same_as_polars(frame, state)


# --------------------------------------------------------------------------------------------------
# Focused cases
# --------------------------------------------------------------------------------------------------
def test_calendar_parts_match_polars_from_year_1_to_9999() -> None:
    """Every calendar part, over many dates either side of 1970 (floor division), without scaling."""
    rng = np.random.default_rng(1)
    train = pl.DataFrame({"t": pl.Series([0, 10**15], dtype=pl.Int64).cast(pl.Datetime("us"))})
    state = fit(train, {"t": {"type": "datetime", "parts": PARTS, "scale": "none", "impute": "mean"}})
    lo = int(pl.Series([dt.datetime(1, 1, 1)]).dt.epoch("us")[0])
    hi = int(pl.Series([dt.datetime(9999, 12, 31, 23, 59, 59, 999_999)]).dt.epoch("us")[0])
    micros = np.concatenate(
        [
            rng.integers(lo, hi, 4000),
            rng.integers(-(10**13), 10**13, 2000),  # near 1970, second-level detail
            [day * 86_400_000_000 + step for day in range(-3, 4) for step in (-1, 0, 1)],  # around midnight
            [lo, hi, 0, -1],
        ]
    )
    frame = pl.DataFrame({"t": pl.Series(micros.tolist(), dtype=pl.Int64).cast(pl.Datetime("us"))})
    assert_same_as_polars(frame, state)


def test_network_scalings_and_ple_on_degenerate_columns() -> None:
    """Constant, two-valued, mostly-constant and huge-valued columns under robust / quantile / PLE (zero
    IQR, one knot, one bin): every feature finite, and the graph equal to Polars on every edge value."""
    rng = np.random.default_rng(2)
    train = pl.DataFrame(
        {
            "constant": np.full(60, 5.0),
            "binary": np.r_[np.zeros(50), np.ones(10)],
            "spiky": np.r_[np.zeros(45), rng.normal(0.0, 1.0, 15)],
            "huge": np.r_[rng.normal(0.0, 1e37, 58), 3.4e38, -3.4e38],
            "t": pl.Series((EPOCH_2000 + rng.integers(0, YEAR_US, 60)).tolist()).cast(pl.Datetime("us")),
        }
    )
    spec: dict[str, Any] = {
        name: {"type": "numeric", "scale": scale, "encode": "ple", "bins": 8, "missing_indicator": True}
        for name, scale in [
            ("constant", "robust"),
            ("binary", "quantile"),
            ("spiky", "robust"),
            ("huge", "quantile"),
        ]
    }
    spec["t"] = {"type": "datetime", "parts": ["hour", "year"], "scale": "quantile"}
    state = fit(train, spec)
    edges = {c.name: c.ple_edges for c in state.columns if isinstance(c, NumericState)}
    assert len(edges["constant"]) == 2 and len(edges["binary"]) == 2 and len(edges["huge"]) == 9
    values = [*NUMERIC_EDGES, 5.0, 1.0, -1.0, 1e37] * 3
    days = pl.Series([EPOCH_2000 + i * 86_400_000_000 for i in range(len(values))]).cast(pl.Datetime("us"))
    frame = pl.DataFrame({name: pl.Series(values, dtype=pl.Float64) for name in edges} | {"t": days})
    assert_same_as_polars(frame, state)
    features = feature_matrix(transform(frame, state, mode="serve"), state)
    assert np.all(np.isfinite(features))  # unusable values are imputed; no bin or scale divides by zero


def test_linear_scalings_and_bins_share_one_chain_and_match_polars() -> None:
    """With no robust or quantile column, scaled values and bins are one Gather → Sub → Div → Max → Min,
    equal to Polars on edge values (a scaled 3.4e38 is inf in both, unchanged by the infinite clip)."""
    rng = np.random.default_rng(4)
    train = pl.DataFrame(
        {
            "a": rng.normal(0.0, 1.0, 80),
            "b": np.r_[rng.normal(0.0, 1e37, 78), 3.4e38, -3.4e38],
            "c": rng.integers(0, 5, 80).astype(np.float64),
        }
    )
    spec: dict[str, Any] = {
        "a": {"type": "numeric", "scale": "standard", "encode": "ple", "bins": 8},
        "b": {"type": "numeric", "scale": "minmax", "encode": "ple", "bins": 3},
        "c": {"type": "numeric", "scale": "none", "missing_indicator": True},
    }
    state = fit(train, spec)
    for opset, packed in VARIANTS:
        ops = [node.op_type for node in compile_preprocessing(state, opset=opset, packed=packed).graph.node]
        assert ops.count("Sub") == ops.count("Div") == 1 and ops.count("Max") == ops.count("Min") == 1
    values = [*NUMERIC_EDGES, 5.0, 1.0, -1.0, 1e37, 3.4e38, -3.4e38] * 2
    frame = pl.DataFrame({name: pl.Series(values, dtype=pl.Float64) for name in "abc"})
    assert_same_as_polars(frame, state)


def test_text_numbers_json_columns_and_absent_columns() -> None:
    train = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, None], "c": ["a", "b", "a", None, "b"]})
    spec = {
        "x": {
            "type": "numeric",
            "missing_indicator": True,
            "outliers": {"method": "range", "max": 3.5},
            "invalid": "reject",
        },
        "c": {"type": "categorical", "missing_indicator": True},
    }
    state = fit(train, spec)
    text = pl.DataFrame({"x": ["1.5", " 2 ", "abc", "inf", "NA", "nan", "1e300", None], "c": ["a"] * 8})
    assert_same_as_polars(text, state)
    feed = graph_inputs(text, state)
    assert np.isinf(feed["x"][2, 0]) and np.isnan(feed["x"][4, 0])  # unparseable → invalid, NA → missing
    problems = run_preprocessing(state, text)[PROBLEMS]
    assert problems[:, problem_names(state).index("invalid:x")].tolist() == [
        False, False, True, True, False, False, True, False,
    ]  # fmt: skip
    records = {"x": [1, None, 2.5, "7"], "c": ["a", 3, None, True]}  # JSON-like values per column
    from_records = graph_inputs(records, state)
    assert from_records["c"].ravel().tolist() == ["a", "3", MISSING_STRING, "True"]  # as columns_frame
    absent = graph_inputs(pl.DataFrame({"x": [1.0]}), state)
    assert absent["c"].tolist() == [[MISSING_STRING]]


def test_datetime_feed_encodes_missing_and_invalid() -> None:
    train = pl.DataFrame({"t": ["2020-01-01 10:00:00", "2021-06-01 12:30:00", None, "2019-03-04 00:00:01"]})
    state = fit(train, {"t": {"type": "datetime", "parts": ["hour"], "missing_indicator": True}})
    assert state.columns[0].format is not None  # inferred at fit time, used again by graph_inputs
    frame = pl.DataFrame({"t": ["1969-07-20 20:17:40", None, "NA", "garbage", "2200-01-01 00:00:00"]})
    feed = graph_inputs(frame, state)["t"].ravel().tolist()
    assert feed[0] < 0 and feed[1] == MISSING_INT64 and feed[2] == MISSING_INT64 and feed[3] == INVALID_INT64
    assert_same_as_polars(frame, state)


def test_shapes_with_no_checks_and_an_empty_batch() -> None:
    train = pl.DataFrame({"c": ["a", "b", "a", "c"]})
    state = fit(train, {"c": {"type": "categorical"}})
    assert problem_names(state) == [] and flag_names(state) == []
    for opset, packed in VARIANTS:
        got = run_preprocessing(state, pl.DataFrame({"c": ["a", "zzz"]}), opset, packed)
        assert got[PROBLEMS].shape == (2, 0) and got[FLAGS].shape == (2, 0)
        assert got[PROBLEMS].dtype == got[FLAGS].dtype == np.bool_
        empty = run_preprocessing(state, pl.DataFrame({"c": pl.Series([], dtype=pl.String)}), opset, packed)
        assert empty[graph.FEATURES].shape == (0, len(state.feature_names))
        assert empty[PROBLEMS].shape == empty[FLAGS].shape == (0, 0)
    packed_graph = compile_preprocessing(state, opset=20, packed=True)
    assert [o.name for o in packed_graph.graph.output] == [graph.FEATURES]  # nothing to compute for checks
    runtime = PipelineRuntime(packed_graph.SerializeToString(), packing=graph.packed_inputs(state))
    feed = graph_inputs(pl.DataFrame({"c": ["a", "zzz", "b"]}), state)
    for names in ([FLAGS, graph.FEATURES], [graph.FEATURES, PROBLEMS], [FLAGS, graph.FEATURES]):
        got = runtime.run(feed, names)
        assert list(got) == names and got[graph.FEATURES].shape == (3, len(state.feature_names))
        assert all(got[name].shape == (3, 0) for name in names if name != graph.FEATURES)


def test_problem_names_follow_the_rejection_rules_and_manifest_lists_them() -> None:
    train = pl.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, 4.0],
            "c": ["a", "b", "a", "b"],
            "t": [dt.datetime(2020, 1, d) for d in (1, 2, 3, 4)],
        }
    )
    spec = {
        "x": {
            "type": "numeric",
            "outliers": {"method": "range", "max": 3.5, "action": "drop", "serving": "reject"},
            "invalid": "null",
        },
        "c": {"type": "categorical", "handle_unknown": "error"},
        "t": {"type": "datetime", "invalid": "reject"},
    }
    state = fit(train, spec)
    rules = [reason for _, reason, _ in rejection_rules(state.columns, "serve")]
    assert problem_names(state) == rules == ["invalid:t", "outlier:x", "unseen_category:c"]
    entry = manifest_entry(state)
    assert [(i["name"], i["type"]) for i in entry["inputs"]] == [
        ("x", "DOUBLE"),
        ("c", "STRING"),
        ("t", "INT64"),
    ]
    assert entry["missing"] == {"DOUBLE": "NaN", "STRING": "", "INT64": MISSING_INT64}
    assert entry["problems"] == problem_names(state) and entry["flags"] == []
    assert [o["name"] for o in entry["outputs"]] == ["probabilities", "label_index", PROBLEMS, FLAGS]


def test_a_column_named_like_an_output_is_refused() -> None:
    state = fit(pl.DataFrame({"features": [1.0, 2.0]}), {"features": {"type": "numeric"}})
    with pytest.raises(DataError, match="clash"):
        compile_preprocessing(state)


def test_model_names_match_the_exporter() -> None:
    assert (graph.ONNX_INPUT, graph.ONNX_OUTPUT) == (ONNX_INPUT, ONNX_OUTPUT)


# --------------------------------------------------------------------------------------------------
# End to end: preprocessing + model + head
# --------------------------------------------------------------------------------------------------
def run_pipeline(pipeline: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = session(pipeline)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed), strict=True))


def test_pipeline_equals_bundle_predict(trained_flights: dict[str, Any], tmp_path: Path) -> None:
    """The trained flights bundle (fp32 and int8): probabilities, labels and rejections as Bundle.predict."""
    bundle = load_bundle(trained_flights["outcome"].bundle.path)
    frame = pl.read_parquet(trained_flights["data"]).head(400)
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) % 17 == 0)
        .then(pl.lit("ZZ"))
        .otherwise(pl.col("carrier"))
        .alias("carrier"),
        pl.when(pl.int_range(pl.len()) % 13 == 0)
        .then(5000.0)
        .otherwise(pl.col("distance"))
        .alias("distance"),
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("dep_delay")).alias("dep_delay"),
    )
    predicted = bundle.predict(frame)
    accepted = predicted[REASON].is_null().to_numpy()
    assert 0 < accepted.sum() < len(frame)

    feed = graph_inputs(frame, bundle.state)
    got = run_pipeline(build_pipeline(bundle.state, bundle.path / "model.onnx", bundle.spec), feed)
    labels = bundle.labels
    expected = predicted.select(f"proba_{label}" for label in labels).to_numpy()
    np.testing.assert_allclose(got["probabilities"][accepted], expected[accepted], rtol=0, atol=1e-5)
    assert [labels[i] for i in got["label_index"][accepted]] == predicted["prediction"].to_numpy()[
        accepted
    ].tolist()
    rejections = len(rejection_rules(bundle.state.columns, "serve"))
    np.testing.assert_array_equal(got[PROBLEMS][:, :rejections].any(axis=1), ~accepted)

    quantized = tmp_path / "model.int8.onnx"
    quantize_dynamic(bundle.path / "model.onnx", quantized, weight_type=QuantType.QInt8)
    matrix, _ = bundle.features(frame)
    int8_scores = scores(OnnxRuntime(quantized).outputs(matrix), bundle.spec)
    got8 = run_pipeline(build_pipeline(bundle.state, quantized, bundle.spec), feed)
    np.testing.assert_allclose(got8["probabilities"][:, 1], int8_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("task,classes", [("binary", 2), ("multiclass", 4), ("regression", 0)])
@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_pipeline_heads_match_scores(task: str, classes: int, int8: bool, tmp_path: Path) -> None:
    """Every head, fp32 and int8: the pipeline's answer equals ``runtime.scores`` on the Polars features."""
    rng = np.random.default_rng(2)
    train = pl.DataFrame(
        {
            "x": rng.normal(50, 10, 200),
            "c": rng.choice(["p", "q", "r"], 200).tolist(),
            "t": pl.Series(rng.integers(0, 2 * 10**15, 200), dtype=pl.Int64).cast(pl.Datetime("us")),
        }
    )
    spec_columns = {
        "x": {"type": "numeric", "missing_indicator": True},
        "c": {"type": "categorical"},
        "t": {"type": "datetime", "parts": ["month", "dayofweek"]},
    }
    state = fit(train, spec_columns)
    torch.manual_seed(0)
    spec = model_spec(ModelConfig(arch="mlp", hidden=[8]), len(state.feature_names), task, classes)
    model = build_model(spec).eval()
    if task == "regression":
        model.set_target_scaling(mean=150.0, std=40.0)
    path = export_onnx(model, spec, tmp_path / "model.onnx")
    if int8:
        quantize_dynamic(path, tmp_path / "q.onnx", weight_type=QuantType.QInt8)
        path = tmp_path / "q.onnx"
    frame = train.head(50).with_columns(
        pl.when(pl.col("x") > 55).then(None).otherwise(pl.col("x")).alias("x")
    )
    expected = scores(
        OnnxRuntime(path).outputs(feature_matrix(transform(frame, state), state, np.float32)), spec
    )
    got = run_pipeline(build_pipeline(state, path, spec), graph_inputs(frame, state))
    if task == "regression":
        assert got["prediction"].shape == (50,)
        np.testing.assert_allclose(got["prediction"], expected, rtol=1e-6, atol=1e-4)
        return
    probabilities = got["probabilities"]
    assert probabilities.shape == (50, classes) and got["label_index"].shape == (50,)
    np.testing.assert_array_equal(got["label_index"], predicted_classes(task, expected))
    if task == "binary":
        expected = np.stack([1.0 - expected, expected], axis=1)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)


def test_graph_inputs_missing_string_is_a_null_token_by_default() -> None:
    # The STRING missing code must be missing for the Polars path too, with the default null tokens.
    from leanml.config import DEFAULT_NULL_VALUES

    assert MISSING_STRING in DEFAULT_NULL_VALUES


def test_binary_label_is_probability_at_least_a_half_at_the_boundary() -> None:
    head = graph._head("binary", "logits", 1, graph.DEFAULT_OPSET)
    tiny = np.float32(np.finfo(np.float32).tiny)
    logits = np.array(
        [
            [0.0],
            [-0.0],
            [tiny],
            [-tiny],
            [1e-8],
            [-1e-8],
            [5.96e-8],
            [-5.96e-8],
            [1e-3],
            [-1e-3],
            [30.0],
            [-30.0],
        ],
        dtype=np.float32,
    )
    probabilities, labels = session(head).run(None, {"logits": logits})
    np.testing.assert_array_equal(labels, (probabilities[:, 1] >= 0.5).astype(np.int64))
    np.testing.assert_array_equal(labels, predicted_classes("binary", probabilities[:, 1].astype(np.float64)))
