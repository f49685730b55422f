"""Reading JSON values for the serving graph: value by value, the same verdicts as the Polars path."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leanml.bundle.feed import request_feed
from leanml.bundle.graph import INVALID_INT64, MISSING_INT64, graph_inputs
from leanml.config import parse_config
from leanml.data.preprocessor import fit_preprocessor
from leanml.data.target import infer_target

NULLS = ["", "NA", "?"]


@pytest.fixture(scope="module")
def state() -> Any:
    frame = pl.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, None, 5.0, 6.0],
            "c": ["a", "b", "7", "a", "b", "a"],
            "t": [
                "2013-01-01 05:00:00",
                "2013-02-01 06:00:00",
                "2013-03-01 07:00:00",
                None,
                "2013-05-01 08:00:00",
                "x",
            ],
            "y": [0, 1, 0, 1, 0, 1],
        }
    )
    config = parse_config(
        {
            "name": "m",
            "data": {"train": "unused.parquet", "null_values": NULLS},
            "target": "y",
            "columns": {
                "x": {"type": "numeric", "scale": "standard"},
                "c": {"type": "categorical"},
                "t": {"type": "datetime", "parts": ["hour", "month"]},
            },
        }
    )
    target = infer_target(frame.lazy(), "y", "auto", NULLS)
    return fit_preprocessor(frame.lazy(), config.columns, target, NULLS)


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "NA", " 7 ", "7", "a", "abc", "1e5", " -2.5", "nan", "inf", "1_000", "0x10", "1,5"]),
    st.text(max_size=6),
)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _polars_feed(state: Any, column: str, value: Any) -> np.ndarray | None:
    """What the Polars path feeds for one value in a column of its own JSON type (None: no such column)."""
    try:
        series = pl.Series(column, [value], strict=True)
    except (TypeError, OverflowError, pl.exceptions.PolarsError):
        return None
    others = {c.name: pl.Series(c.name, [None]) for c in state.columns if c.name != column}
    return graph_inputs(pl.DataFrame([series, *others.values()]), state)[column]


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_numbers_and_categories_read_as_the_polars_path_reads_them(state: Any, value: Any) -> None:
    for column in ("x", "c"):
        if isinstance(value, str) and not _encodable(value):
            continue
        feed, errors = request_feed({"x": [None], "c": [None], "t": [None], column: [value]}, 1, state)
        assert errors == []
        expected = _polars_feed(state, column, value)
        if expected is None:
            continue
        fractional = isinstance(value, float) and math.isfinite(value) and not value.is_integer()
        if column == "c" and fractional:
            continue  # Polars and Python spell some exponents differently; both are unknown categories
        assert _same(feed[column], expected), (column, value, feed[column], expected)


def test_datetimes_use_the_frozen_format(state: Any) -> None:
    values = ["2013-01-01 05:00:00", " 2013-01-01 05:00:00 ", "NA", None, "yesterday", "2013-13-40 00:00:00"]
    assert _same(request_feed({"t": values}, 6, state)[0]["t"], graph_inputs({"t": values}, state)["t"])
    feed, errors = request_feed({"x": [None] * 6, "c": [None] * 6, "t": values}, 6, state)
    assert errors == []
    epoch = feed["t"].ravel()
    assert epoch[0] == epoch[1] == 1357016400 * 1_000_000
    assert epoch[2] == epoch[3] == MISSING_INT64
    assert epoch[4] == epoch[5] == INVALID_INT64


def test_a_request_reads_the_same_whatever_else_it_holds(state: Any) -> None:
    mixed = [True, 1.5, "2", None, 7.0, "abc"]
    together, _ = request_feed({"x": mixed, "c": mixed, "t": [None] * 6}, 6, state)
    for row, value in enumerate(mixed):
        alone, _ = request_feed({"x": [value], "c": [value], "t": [None]}, 1, state)
        for column in ("x", "c"):
            assert _same(together[column][row], alone[column][0])
    assert together["c"][4, 0] == "7" and together["x"][0, 0] == 1.0 and together["x"][5, 0] == math.inf


def test_text_that_is_not_unicode_is_the_requests_own_problem(state: Any) -> None:
    feed, errors = request_feed({"x": [1.0, 2.0], "c": ["a", "\ud800"], "t": ["\udfff", None]}, 2, state)
    assert {(e["row"], e["field"]) for e in errors} == {(1, "c"), (0, "t")}
    assert all("not valid Unicode" in e["error"] for e in errors)
    assert feed["c"][0, 0] == "a"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(value=json_values)
def test_short_paths_read_as_the_general_parser(state: Any, value: Any) -> None:
    from leanml.bundle.feed import INVALID, MISSING, readers
    from leanml.data import convert

    read = readers(state)
    for column in state.columns:
        try:
            parsed = convert.parse_value(value, column, state.null_values)
        except convert.InvalidValue:
            parsed = INVALID[column.type]
        expected = MISSING[column.type] if parsed is None else parsed
        got = read[column.name](value)
        assert got == expected or (got != got and expected != expected), (column.name, value, got, expected)
        assert read[column.name](value) == got or got != got  # a cached answer is the same answer


@settings(max_examples=150, deadline=None)
@given(batch=st.lists(st.lists(json_values, min_size=1, max_size=3), min_size=1, max_size=5))
def test_a_batch_reads_each_request_as_it_reads_alone(state: Any, batch: list[list[Any]]) -> None:
    from leanml.bundle.feed import read_batch, readers

    read = readers(state)
    requests = [{"x": values, "c": values, "t": [str(v) for v in values]} for values in batch]
    rows = [len(values) for values in batch]
    feed, errors = read_batch(requests, rows, state, read)
    start = 0
    for request, n, problems in zip(requests, rows, errors, strict=True):
        alone, alone_errors = request_feed(request, n, state, read)
        assert problems == alone_errors
        for name, values in alone.items():
            got = feed[name][start : start + n].ravel().tolist()
            values = values.ravel().tolist()
            same = all(a == b or (a != a and b != b) for a, b in zip(got, values, strict=True))
            assert same or alone_errors  # a request with a problem is answered by its problems
        start += n


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(st.lists(json_values, min_size=0, max_size=3), min_size=1, max_size=4))
def test_packed_reading_puts_each_value_where_packing_the_columns_puts_it(batch: list[list[Any]]) -> None:
    from leanml.bundle.feed import read_batch, readers
    from leanml.bundle.graph import pack, packed_inputs

    state = _two_of_each_kind()
    read = readers(state)
    requests = [
        {"x": values, "c": values, "x2": values[::-1], "c2": [str(v) for v in values]} for values in batch
    ]
    rows = [len(values) for values in batch]
    packing = packed_inputs(state)
    packed, packed_errors = read_batch(requests, rows, state, read, packing)
    columns, errors = read_batch(requests, rows, state, read)
    assert packed_errors == errors
    expected = pack(columns, packing)
    assert list(packed) == [entry.name for entry in packing] == list(expected)
    for name, matrix in expected.items():
        got = packed[name]
        assert (
            got.shape == matrix.shape == (sum(rows), len(next(e for e in packing if e.name == name).columns))
        )
        assert got.dtype == matrix.dtype and got.flags.c_contiguous
        assert all(a == b or (a != a and b != b) for a, b in zip(got.ravel(), matrix.ravel(), strict=True))


def _two_of_each_kind() -> Any:
    frame = pl.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, None],
            "c": ["a", "b", "a", "b"],
            "x2": [5.0, 6.0, 7.0, 8.0],
            "c2": ["u", "v", "u", None],
            "y": [0, 1, 0, 1],
        }
    )
    config = parse_config(
        {
            "name": "m",
            "data": {"train": "unused.parquet", "null_values": NULLS},
            "target": "y",
            "columns": {
                "x": {"type": "numeric"},
                "c": {"type": "categorical"},
                "x2": {"type": "numeric"},
                "c2": {"type": "categorical"},
            },
        }
    )
    target = infer_target(frame.lazy(), "y", "auto", NULLS)
    return fit_preprocessor(frame.lazy(), config.columns, target, NULLS)


def test_packed_input_names_step_around_column_and_output_names() -> None:
    from leanml.bundle.graph import PackedInput, packed_inputs
    from leanml.data.state import PreprocessState

    state = _two_of_each_kind()
    assert packed_inputs(state) == [
        PackedInput("numeric", "numeric", ["x", "x2"]),
        PackedInput("categorical", "categorical", ["c", "c2"]),
    ]
    data = state.model_dump(mode="json")
    for column in data["columns"]:
        column["name"] = {"x": "numeric", "x2": "numeric_", "c": "categorical", "c2": "c2"}[column["name"]]
    renamed = PreprocessState.from_dict(data)
    assert [(e.name, e.columns) for e in packed_inputs(renamed)] == [
        ("numeric__", ["numeric", "numeric_"]),
        ("categorical_", ["categorical", "c2"]),
    ]
