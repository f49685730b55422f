"""JSON values → the serving graph's inputs, one value at a time.

The server reads each request on its own, so a request's inputs never depend on the other requests of
its batch (a column mixing JSON types is not merged into one dtype, as a data frame would). Every value
is read by :func:`leanml.data.convert.parse_value` — the per-value twin of the Polars expressions that
prepare and ``Bundle.predict`` apply to whole columns, with the column's own options (``thousands``,
``decimal``, ``strip``, ``boolean``, date ``formats``) — then takes the graph's encoding:

* numeric → float64: NaN when missing, +inf when invalid;
* categorical → text: :data:`~leanml.bundle.graph.MISSING_STRING` when missing,
  :data:`~leanml.bundle.graph.INVALID_STRING` when invalid;
* datetime → int64 microseconds since the epoch: the graph's missing and invalid codes otherwise.

The graph imputes an invalid value like a missing one, and reports it as ``invalid:COL`` when the column's
policy is ``invalid: reject`` — the verdict prepare and predict give the same value. Text that cannot be
encoded as UTF-8 (a lone surrogate such as ``"\\ud800"``, valid in JSON) is reported as a problem of its
own row and field: it never reaches the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from leanml.bundle.graph import INVALID_INT64, INVALID_STRING, MISSING_INT64, MISSING_STRING, PackedInput
from leanml.data import convert
from leanml.data.state import CategoricalState, NumericState, PreprocessState

FieldError = dict[str, Any]
MISSING = {"numeric": math.nan, "categorical": MISSING_STRING, "datetime": MISSING_INT64}
INVALID = {"numeric": math.inf, "categorical": INVALID_STRING, "datetime": INVALID_INT64}
DTYPES = {"numeric": np.float64, "categorical": object, "datetime": np.int64}
DATETIME_CACHE = 4096
"""Distinct datetime texts remembered per column (the cache is emptied when full)."""


def readers(state: PreprocessState) -> dict[str, Callable[[Any], Any]]:
    """Per input column, a function reading one JSON value into the graph's encoding.

    The common JSON types take short paths that give exactly what the general parser gives (a test checks
    them against it); datetime text is remembered in a bounded cache, since served timestamps repeat.
    """
    nulls = tuple(state.null_values)
    made: dict[str, Callable[[Any], Any]] = {}
    for column in state.columns:
        if isinstance(column, NumericState):
            options = convert.NumberOptions.of(column)
            made[column.name] = _number_reader(_reader(convert.parse_number, options, nulls, "numeric"))
        elif isinstance(column, CategoricalState):
            options = convert.CategoryOptions.of(column)
            general = _reader(convert.parse_category, options, nulls, "categorical")
            plain = not (options.strip or options.boolean)
            made[column.name] = _category_reader(general, frozenset(nulls)) if plain else general
        else:
            general = _reader(convert.parse_datetime, convert.datetime_formats(column), nulls, "datetime")
            made[column.name] = _cached(general)
    return made


def _reader(
    parse: Callable[..., Any], options: Any, nulls: tuple[str, ...], kind: str
) -> Callable[[Any], Any]:
    missing, invalid = MISSING[kind], INVALID[kind]

    def read(value: Any) -> Any:
        try:
            parsed = parse(value, options, nulls)
        except convert.InvalidValue:
            return invalid
        return missing if parsed is None else parsed

    return read


def _number_reader(general: Callable[[Any], Any]) -> Callable[[Any], Any]:
    limit = convert.FLOAT32_MAX

    def read(value: Any) -> Any:
        kind = type(value)
        if kind is float:
            if value != value:  # NaN: missing
                return math.nan
            return value if -limit <= value <= limit else math.inf
        if kind is int:
            try:
                number = float(value)
            except OverflowError:
                return math.inf
            return number if -limit <= number <= limit else math.inf
        return general(value)

    return read


def _category_reader(general: Callable[[Any], Any], nulls: frozenset[str]) -> Callable[[Any], Any]:
    def read(value: Any) -> Any:
        if type(value) is str:
            return MISSING_STRING if value in nulls else value
        return general(value)

    return read


def _cached(general: Callable[[Any], Any], size: int = DATETIME_CACHE) -> Callable[[Any], Any]:
    cache: dict[str, Any] = {}

    def read(value: Any) -> Any:
        if type(value) is not str:
            return general(value)
        found = cache.get(value)
        if found is None:
            if len(cache) >= size:
                cache.clear()
            found = cache[value] = general(value)
        return found

    return read


def request_feed(
    columns: Mapping[str, Sequence[Any]],
    rows: int,
    state: PreprocessState,
    read: Mapping[str, Callable[[Any], Any]] | None = None,
    packing: Sequence[PackedInput] | None = None,
) -> tuple[dict[str, np.ndarray], list[FieldError]]:
    """The graph's input feed for one request's columns, and the values that cannot be fed at all.

    ``columns`` holds the input columns of ``state`` with ``rows`` JSON values each (structural checks
    have run; an absent column is all missing); ``read`` comes from :func:`readers` (made when omitted).
    Returns ``{column: array [rows, 1]}`` (with ``packing``, the packed graph's ``{input: [rows, k]}``)
    and ``{"row", "field", "error"}`` entries for text that is not valid Unicode.
    """
    feed, errors = read_batch([columns], [rows], state, read or readers(state), packing)
    return feed, errors[0]


def read_batch(
    requests: Sequence[Mapping[str, Sequence[Any]]],
    rows: Sequence[int],
    state: PreprocessState,
    read: Mapping[str, Callable[[Any], Any]],
    packing: Sequence[PackedInput] | None = None,
) -> tuple[dict[str, np.ndarray], list[list[FieldError]]]:
    """The feed of a whole batch, read column by column, and each request's own problems.

    Every value is read on its own, so this gives each request exactly what :func:`request_feed` gives
    it alone; it only saves the per-request loop. A request with a problem keeps its rows (as missing
    values) so that the others' rows stay where they are; its answer is its problems. With ``packing``
    (:func:`leanml.bundle.graph.packed_inputs`) the values go straight into the packed inputs' arrays.
    """
    errors: list[list[FieldError]] = [[] for _ in requests]
    values_of: dict[str, list[Any]] = {}
    for column in state.columns:
        name = column.name
        values = [
            v for request, n in zip(requests, rows, strict=True) for v in request.get(name) or [None] * n
        ]
        reader = read[name]
        if column.type != "numeric" and not all(_encodable(v) for v in values if type(v) is str):
            missing = MISSING[column.type]
            start = 0
            for index, n in enumerate(rows):
                for row in range(n):
                    value = values[start + row]
                    if type(value) is str and not _encodable(value):
                        problem = {"row": row, "field": name, "error": "text is not valid Unicode"}
                        errors[index].append(problem)
                        values[start + row] = None
                start += n
            encoded = [missing if v is None else reader(v) for v in values]
        else:
            encoded = [reader(v) for v in values]
        values_of[name] = encoded
    for problems in errors:
        problems.sort(key=lambda e: (e["row"], e["field"]))
    if packing is None:
        feed = {
            c.name: np.array(values_of[c.name], dtype=DTYPES[c.type]).reshape(-1, 1) for c in state.columns
        }
    else:  # [k, rows] → [rows, k], each row's values side by side
        feed = {
            entry.name: np.ascontiguousarray(
                np.array([values_of[name] for name in entry.columns], dtype=DTYPES[entry.kind])
                .reshape(len(entry.columns), -1)
                .T
            )
            for entry in packing
        }
    return feed, errors


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
