"""The target column: task inference, classes, and its encoding as expressions.

Task inference (``task: auto``): text or booleans are classification; numbers are classification when
they are all whole and take at most :data:`MAX_AUTO_CLASSES` distinct values, regression otherwise.
``binary`` means exactly two classes. Classes are sorted (numerically when they are numbers) and the model
predicts indices into that list. Text labels are stripped of surrounding whitespace (``' <=50K'`` is the
class ``'<=50K'``); states written before that keep their labels as they were (``TargetState.strip``).
"""

from __future__ import annotations

import polars as pl

from leanml.data import convert
from leanml.data.state import TargetState
from leanml.data.stats import ValueCounts, value_counts_query
from leanml.errors import DataError

MAX_AUTO_CLASSES = 20
MISSING_TARGET = "missing_target"
INVALID_TARGET = "invalid_target"
UNSEEN_TARGET = "unseen_target"
STRIPPED = convert.CategoryOptions(strip=True)


def infer_target(frame: pl.LazyFrame, name: str, task: str, null_values: list[str]) -> TargetState:
    """Decide the task (when ``auto``) and the classes, in at most two streaming passes over the target."""
    dtype = frame.collect_schema()[name]
    if dtype.is_temporal():
        raise DataError(f"target '{name}': holds {dtype} values; a target must be numbers or labels")
    key = convert.to_category(name, dtype, null_values, STRIPPED).value
    number = convert.to_number(name, dtype, null_values).value if dtype != pl.Boolean else pl.lit(None)
    summary = (
        frame.select(
            key.is_not_null().sum().alias("present"),
            number.is_not_null().sum().alias("numeric"),
            (number == number.floor()).sum().alias("whole"),
            key.approx_n_unique().alias("distinct"),
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )
    present = int(summary["present"])
    if present == 0:
        raise DataError(f"target '{name}': no row has a value")
    all_numeric = int(summary["numeric"]) == present
    if task == "auto":
        if all_numeric and (int(summary["whole"]) < present or int(summary["distinct"]) > MAX_AUTO_CLASSES):
            task = "regression"
        else:
            task = "classification"
    if task == "regression":
        # Rows whose target is not a number are dropped as invalid_target and counted; none at all is fatal.
        if int(summary["numeric"]) == 0:
            raise DataError(f"target '{name}': task is regression but no value is a number")
        return TargetState(name=name, task="regression", strip=True)

    counts = ValueCounts.from_frame(
        value_counts_query(frame.select(key.alias(name)), name).collect(engine="streaming")
    )
    classes = [str(v) for v in counts.values]
    if all_numeric and dtype != pl.Boolean:
        classes.sort(key=float)
        labels: list[object] = [_number_label(c) for c in classes]
    elif dtype == pl.Boolean:
        labels = [c == "true" for c in classes]
    else:
        labels = list(classes)
    if len(classes) < 2:
        raise DataError(
            f"target '{name}': a single class ({classes[0]!r}) in {present} rows; classification needs at "
            f"least two (set 'task: regression' if the target is a number)"
        )
    if task == "binary" and len(classes) != 2:
        raise DataError(f"target '{name}': task is binary but the data has {len(classes)} classes")
    resolved = "binary" if len(classes) == 2 and task != "multiclass" else "multiclass"
    return TargetState(name=name, task=resolved, classes=classes, labels=labels, strip=True)


def _number_label(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def target_exprs(target: TargetState, dtype: pl.DataType, null_values: list[str]) -> tuple[pl.Expr, pl.Expr]:
    """The encoded target (class index or number) and the reason a row has no usable target (or null)."""
    if target.task == "regression":
        converted = convert.to_number(target.name, dtype, null_values)
        reason = (
            pl.when(converted.missing)
            .then(pl.lit(MISSING_TARGET))
            .when(converted.invalid)
            .then(pl.lit(INVALID_TARGET))
        )
        return converted.value, reason
    options = convert.CategoryOptions(strip=target.strip)
    converted = convert.to_category(target.name, dtype, null_values, options)
    # An Enum cast maps each class to its index (null when unseen) and streams, unlike replace_strict.
    index = converted.value.cast(pl.Enum(target.classes), strict=False).to_physical().cast(pl.Int64)

    reason = (
        pl.when(converted.value.is_null())
        .then(pl.lit(MISSING_TARGET))
        .when(index.is_null())
        .then(pl.lit(UNSEEN_TARGET))
    )
    return index, reason
