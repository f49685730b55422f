"""JSON values → the serving graph's inputs, one value at a time.

The server reads each request on its own, so a request's inputs never depend on the other requests of
its batch (a column mixing JSON types is not merged into one dtype, as a data frame would). Every value
follows the rules of :mod:`leanml.data.convert`, which prepare and ``Bundle.predict`` apply to whole
columns; ``tests/bundle/test_feed.py`` checks the two agree value by value:

* numeric: numbers and booleans as float64; text is stripped and parsed; a null token, ``"nan"`` or NaN
  is missing (NaN); text that is not a number, ±inf and values beyond float32's range are *invalid*
  (encoded as +inf, which the graph imputes and reports as ``invalid:COL``);
* categorical: text as is; integers and integral floats as integer text (``7.0`` and ``7`` are one
  category); booleans as ``true``/``false``; a null token is missing (``""``);
* datetime: text parsed with the column's frozen format (the formats training tried, in order, when it
  froze none) to microseconds since the epoch; unparseable text is invalid.

Text that cannot be encoded as UTF-8 (a lone surrogate such as ``"\\ud800"``, valid in JSON) is reported
as a problem of its own row and field: it never reaches the graph.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from leanml.bundle.graph import INVALID_INT64, MISSING_INT64, MISSING_STRING
from leanml.data import convert
from leanml.data.state import CategoricalState, DatetimeState, NumericState, PreprocessState

FieldError = dict[str, Any]
INVALID_NUMBER = math.inf
# Polars' text → Float64 grammar: an optional sign, digits with an optional fraction and exponent, or inf.
_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity)", re.IGNORECASE)
_INT64_LIMIT = 2**63


Values = dict[str, list[Any]]
"""One request's values per input column, read and ready to stack: floats, texts, or datetime texts."""


def request_feed(
    columns: Mapping[str, Sequence[Any]], rows: int, state: PreprocessState
) -> tuple[dict[str, np.ndarray], list[FieldError]]:
    """The graph's input feed for one request's columns, and the values that cannot be fed at all.

    ``columns`` holds every input column of ``state`` with ``rows`` JSON values each (structural checks
    have run). Returns ``{column: array [rows, 1]}`` and ``{"row", "field", "error"}`` entries for text
    that is not valid Unicode.
    """
    values, errors = read_request(columns, rows, state)
    return stack_feeds([values], state), errors


def read_request(
    columns: Mapping[str, Sequence[Any]], rows: int, state: PreprocessState
) -> tuple[Values, list[FieldError]]:
    """One request's values as the graph reads them (see the module docstring), and its problems.

    Numbers and categories are final; datetime texts are only stripped: :func:`stack_feeds` parses those
    of a whole batch at once (each value on its own: the result for one never depends on another).
    """
    read: Values = {}
    errors: list[FieldError] = []
    nulls = frozenset(state.null_values)
    for column in state.columns:
        raw = columns.get(column.name) or [None] * rows
        if isinstance(column, NumericState):
            read[column.name] = [number(v, nulls) for v in raw]
            continue
        for row, value in enumerate(raw):
            if isinstance(value, str) and not _encodable(value):
                errors.append({"row": row, "field": column.name, "error": "text is not valid Unicode"})
        if isinstance(column, CategoricalState):
            read[column.name] = [MISSING_STRING if _bad_text(v) else category(v, nulls) for v in raw]
        else:
            texts = [v.strip() if isinstance(v, str) and not _bad_text(v) else None for v in raw]
            read[column.name] = [None if t in nulls else t for t in texts]
    return read, errors


def stack_feeds(requests: Sequence[Values], state: PreprocessState) -> dict[str, np.ndarray]:
    """The feed of a batch: every request's values stacked, one ``[rows, 1]`` array per input column."""
    feed: dict[str, np.ndarray] = {}
    for column in state.columns:
        values = [v for request in requests for v in request[column.name]]
        if isinstance(column, NumericState):
            array = np.array(values, dtype=np.float64)
        elif isinstance(column, CategoricalState):
            array = np.array(values, dtype=object)
        else:
            array = datetimes(values, column)
        feed[column.name] = array.reshape(-1, 1)
    return feed


def number(value: Any, nulls: frozenset[str]) -> float:
    """A numeric input as the graph takes it: NaN when missing, +inf when invalid."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str):
        text = value.strip()
        if text in nulls or text.lower() == "nan":
            return math.nan
        if not _NUMBER.fullmatch(text):
            return INVALID_NUMBER
        value = float(text)
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        return INVALID_NUMBER
    if math.isnan(result):
        return math.nan
    return result if abs(result) <= convert.FLOAT32_MAX else INVALID_NUMBER


def category(value: Any, nulls: frozenset[str]) -> str:
    """A categorical input as text, as :func:`leanml.data.convert.to_category` spells it."""
    if value is None:
        return MISSING_STRING
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if math.isnan(value):
            return MISSING_STRING
        if math.isinf(value) or value.is_integer():
            # As Polars casts an integral float to Int64: beyond int64 (or infinite), it is missing.
            if not -_INT64_LIMIT <= value < _INT64_LIMIT:
                return MISSING_STRING
            text = str(int(value))
        else:
            text = pl.Series([value], dtype=pl.Float64).cast(pl.String)[0]
    else:
        text = str(value)
    return MISSING_STRING if text in nulls else text


def datetimes(texts: Sequence[str | None], column: DatetimeState) -> np.ndarray:
    """Stripped datetime texts (None when missing) as int64 microseconds since the epoch.

    Parsed with the column's frozen format, or with the formats training tries, in order, when it froze
    none (the first that parses wins). Missing and unparseable values take the graph's codes.
    """
    out = np.full(len(texts), MISSING_INT64, dtype=np.int64)
    present = [row for row, text in enumerate(texts) if text is not None]
    if not present:
        return out
    series = pl.Series([texts[row] for row in present], dtype=pl.String)
    formats = [column.format] if column.format else list(convert.DATETIME_FORMATS)
    parsed = pl.select(
        pl.coalesce(
            [
                pl.lit(series)
                .str.to_datetime(fmt, strict=False, time_unit=convert.EPOCH_UNIT, time_zone="UTC")
                .dt.replace_time_zone(None)
                for fmt in formats
            ]
        )
        .dt.epoch(convert.EPOCH_UNIT)
        .fill_null(INVALID_INT64)
        .alias("epoch")
    ).to_series()
    out[present] = parsed.to_numpy()
    return out


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _bad_text(value: Any) -> bool:
    return isinstance(value, str) and not _encodable(value)
