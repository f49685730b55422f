"""Request validation: every problem of a request, per row and field, before and after conversion.

Two layers, both reporting ``{"row": i, "field": name, "error": message}`` entries:

* :func:`check_columns` (per request, before it is queued): every input column present, values of a
  JSON type the column can take, the row limit;
* :func:`value_problems` (per batch, after the bundle's own preprocessing has annotated the rows): values
  that could not be converted, and rows the serving rules reject (out of range under ``reject``, unknown
  category under ``error``). These come from the same expressions as training, not a second copy of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from leanml.data.preprocessor import invalid_column, rejection_rules
from leanml.data.state import CategoricalState, NumericState, PreprocessState

FieldError = dict[str, Any]
SCALARS = (str, int, float, bool)
EXPECTED = {
    "numeric": "a number",
    "categorical": "a category (text or number)",
    "datetime": "a date or datetime as text",
}


class RequestError(Exception):
    """A request that cannot be answered: an HTTP status, a message and the per-field details."""

    def __init__(self, status: int, message: str, details: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []


def accepts(kind: str, value: Any) -> bool:
    """Whether a JSON value is of a type a column of ``kind`` can take (null always is)."""
    if value is None:
        return True
    if kind == "datetime":
        return isinstance(value, str)
    return isinstance(value, SCALARS)


def check_columns(
    columns: Mapping[str, Sequence[Any]], rows: int, state: PreprocessState, max_rows: int
) -> list[FieldError]:
    """Problems of a columnar request: missing input columns and values of the wrong JSON type.

    Raises :class:`RequestError` (413) when the request has more than ``max_rows`` rows.
    """
    if rows > max_rows:
        raise RequestError(413, f"{rows} rows in one request; the limit is {max_rows}")
    errors: list[FieldError] = []
    for column in state.columns:
        values = columns.get(column.name)
        if values is None:
            errors.append({"row": None, "field": column.name, "error": "required column is missing"})
            continue
        for row, value in enumerate(values):
            if not accepts(column.type, value):
                errors.append(
                    {
                        "row": row,
                        "field": column.name,
                        "error": f"expected {EXPECTED[column.type]}, got {_show(value)}",
                    }
                )
    return errors


def instances_to_columns(
    instances: Any, state: PreprocessState, max_rows: int
) -> tuple[dict[str, list[Any]], int, list[FieldError]]:
    """KServe V1 ``instances`` (a list of objects) → columns, row count and problems."""
    if not isinstance(instances, list):
        raise RequestError(
            422,
            "'instances' must be a list of objects",
            [{"row": None, "field": "instances", "error": f"expected a list, got {_show(instances)}"}],
        )
    if not instances:
        raise RequestError(
            422, "'instances' is empty", [{"row": None, "field": "instances", "error": "no rows"}]
        )
    if len(instances) > max_rows:
        raise RequestError(413, f"{len(instances)} rows in one request; the limit is {max_rows}")
    errors: list[FieldError] = []
    names = [c.name for c in state.columns]
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for row, instance in enumerate(instances):
        if not isinstance(instance, dict):
            errors.append({"row": row, "field": None, "error": f"expected an object, got {_show(instance)}"})
            for name in names:
                columns[name].append(None)
            continue
        for name in names:
            if name not in instance:
                errors.append({"row": row, "field": name, "error": "required field is missing"})
            columns[name].append(instance.get(name))
    types = {c.name: c.type for c in state.columns}
    for name, values in columns.items():
        for row, value in enumerate(values):
            if not accepts(types[name], value):
                errors.append(
                    {
                        "row": row,
                        "field": name,
                        "error": f"expected {EXPECTED[types[name]]}, got {_show(value)}",
                    }
                )
    return columns, len(instances), errors


def value_problems(
    annotated: pl.DataFrame,
    columns: Mapping[str, Sequence[Any]],
    state: PreprocessState,
    offset: int,
    rows: int,
) -> list[FieldError]:
    """Per-row problems found by the preprocessing of rows ``offset .. offset+rows`` of a batch.

    ``annotated`` holds, for the whole batch, the columns returned by :func:`problem_columns`.
    """
    part = annotated.slice(offset, rows)
    errors: list[FieldError] = []
    kinds = {c.name: c for c in state.columns}
    for column in state.columns:
        flags = part[_problem_name("invalid", column.name)]
        if flags.any():
            for row in flags.arg_true().to_list():
                errors.append(
                    {
                        "row": row,
                        "field": column.name,
                        "error": f"expected {EXPECTED[column.type]}, got {_show(columns[column.name][row])}",
                    }
                )
    for name, reason, _ in rejection_rules(state.columns, "serve"):
        flags = part[_problem_name(reason, name)]
        if flags.any():
            column = kinds[name]
            for row in flags.arg_true().to_list():
                errors.append(
                    {"row": row, "field": name, "error": _rejection_message(column, columns[name][row])}
                )
    errors.sort(key=lambda e: (e["row"], e["field"]))
    return errors


def problem_columns(state: PreprocessState) -> list[pl.Expr]:
    """Boolean columns to select from an annotated frame for :func:`value_problems`."""
    exprs = [pl.col(invalid_column(c.name)).alias(_problem_name("invalid", c.name)) for c in state.columns]
    exprs += [
        condition.fill_null(False).alias(_problem_name(reason, name))
        for name, reason, condition in rejection_rules(state.columns, "serve")
    ]
    return exprs


def _problem_name(kind: str, column: str) -> str:
    return f"__problem:{kind}:{column}"


def _rejection_message(column: Any, value: Any) -> str:
    if isinstance(column, NumericState) and column.outliers is not None:
        lower = "-inf" if column.outliers.lower is None else f"{column.outliers.lower:g}"
        upper = "inf" if column.outliers.upper is None else f"{column.outliers.upper:g}"
        return f"{_show(value)} is outside the accepted range [{lower}, {upper}]"
    if isinstance(column, CategoricalState):
        known = [*column.categories, *column.infrequent]
        shown = ", ".join(known[:10]) + (", …" if len(known) > 10 else "")
        return f"unknown category {_show(value)} (known: {shown})"
    return f"rejected value {_show(value)}"


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def show_value(value: Any) -> str:
    """A JSON value as an error message quotes it: its repr, or its type for objects, at most 60 chars."""
    return _show(value)
