"""Mergeable statistics: merging shard statistics equals the statistics of the whole."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leanml.data.stats import Moments, ValueCounts, moment_exprs, moments_from_row, value_counts_query

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=64)
samples = st.lists(st.integers(min_value=-50, max_value=50).map(float) | finite, min_size=1, max_size=60)


def moments_of(values: list[float]) -> Moments:
    row = pl.DataFrame({"x": values}).select(moment_exprs("x", "")).row(0, named=True)
    return moments_from_row(row, "")


def counts_of(values: list[float]) -> ValueCounts:
    return ValueCounts.from_frame(value_counts_query(pl.LazyFrame({"x": values}), "x").collect())


@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_moments_merge_equals_moments_of_concatenation(a: list[float], b: list[float]) -> None:
    merged = moments_of(a).merge(moments_of(b))
    whole = np.array(a + b)
    assert merged.count == whole.size
    assert merged.mean == pytest.approx(whole.mean(), rel=1e-9, abs=1e-6)
    assert merged.variance == pytest.approx(whole.var(), rel=1e-7, abs=1e-3)
    assert (merged.min, merged.max) == (whole.min(), whole.max())


@settings(max_examples=60, deadline=None)
@given(samples, samples, st.floats(min_value=0, max_value=1))
def test_value_counts_merge_and_quantiles_equal_numpy(a: list[float], b: list[float], q: float) -> None:
    merged = counts_of(a).merge(counts_of(b))
    whole = np.array(a + b)
    assert merged.total == whole.size
    assert merged.quantile(q) == pytest.approx(np.quantile(whole, q), rel=1e-12, abs=1e-9)
    assert merged.median() == pytest.approx(np.median(whole), rel=1e-12, abs=1e-9)
    values, counts = np.unique(whole, return_counts=True)
    assert merged.mode() == values[np.argmax(counts)]  # numpy's argmax picks the smallest tied value


def test_with_constant_adds_imputed_copies() -> None:
    base = moments_of([1.0, 2.0, 3.0])
    imputed = base.with_constant(10.0, 2)
    whole = np.array([1.0, 2.0, 3.0, 10.0, 10.0])
    assert imputed.mean == pytest.approx(whole.mean())
    assert imputed.variance == pytest.approx(whole.var())


def test_empty_statistics_raise() -> None:
    with pytest.raises(ValueError):
        ValueCounts([], []).median()
    with pytest.raises(ValueError):
        ValueCounts([], []).mode()
