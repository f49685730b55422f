"""Request validation: every problem of a request, per row and field, before and after conversion.

Two layers, both reporting ``{"row": i, "field": name, "error": message}`` entries:

* :func:`check_columns` (per request, before it is queued): every input column present, values of a
  JSON type the column can take, the row limit;
* :func:`problem_message` (per batch, after the serving graph ran): what each check the graph reports
  says — a value its column cannot read under ``invalid: reject``, out of range under ``reject``, an
  unknown category under ``error``. The checks themselves are the graph's, compiled from the same
  frozen state as training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from leanml.data import convert
from leanml.data.state import CategoricalState, DatetimeState, NumericState, PreprocessState

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
                        "error": f"expected {EXPECTED[column.type]}, got {show_value(value)}",
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
            [{"row": None, "field": "instances", "error": f"expected a list, got {show_value(instances)}"}],
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
            problem = f"expected an object, got {show_value(instance)}"
            errors.append({"row": row, "field": None, "error": problem})
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
                        "error": f"expected {EXPECTED[types[name]]}, got {show_value(value)}",
                    }
                )
    return columns, len(instances), errors


def problem_message(kind: str, column: Any, value: Any, null_values: Sequence[str]) -> str:
    """What a serving check of the graph (``kind`` of ``KIND:COLUMN``) says about one value."""
    if kind == "outlier" and isinstance(column, NumericState) and column.outliers is not None:
        lower = "-inf" if column.outliers.lower is None else f"{column.outliers.lower:g}"
        upper = "inf" if column.outliers.upper is None else f"{column.outliers.upper:g}"
        return f"{show_value(value)} is outside the accepted range [{lower}, {upper}]"
    if kind == "unseen_category" and isinstance(column, CategoricalState):
        known = [*column.categories, *column.infrequent]
        shown = ", ".join(known[:10]) + (", …" if len(known) > 10 else "")
        return f"unknown category {show_value(value)} (known: {shown})"
    if kind == "invalid":
        try:
            convert.parse_value(value, column, null_values)
        except convert.InvalidValue as exc:
            return str(exc)
    if isinstance(column, DatetimeState):
        accepted = convert.describe_formats(convert.datetime_formats(column))
        return f"expected {accepted}, got {show_value(value)}"
    return f"expected {EXPECTED[column.type]}, got {show_value(value)}"


def show_value(value: Any) -> str:
    """A JSON value as an error message quotes it: its repr, or its type for objects, at most 60 chars."""
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."
