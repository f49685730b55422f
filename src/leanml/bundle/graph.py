"""The serving graph (SPEC §3.7): the frozen preprocessing compiled to ONNX operators, joined with the model.

:func:`compile_preprocessing` turns a :class:`~leanml.data.state.PreprocessState` into an ONNX graph that
computes, from raw typed columns, the same feature matrix as :func:`~leanml.data.preprocessor.transform`
in ``serve`` mode, plus the per-row serving checks. :func:`build_pipeline` joins that graph with the
exported model (:func:`~leanml.models.export.export_onnx`, fp32 or int8) and adds the output head, so one
file answers requests in any ONNX Runtime, with no Python.

Inputs, one tensor ``[N, 1]`` per input column, named after the column:

* numeric → DOUBLE; missing is NaN. ±inf and values beyond float32's range are *invalid*: treated as
  missing (imputed), as :func:`~leanml.data.convert.to_number` does, and reported in ``problems``;
* categorical → STRING; missing is :data:`MISSING_STRING` (``""``), and every token of
  ``state.null_values`` is missing too, as :func:`~leanml.data.convert.to_category` treats them;
  :data:`INVALID_STRING` marks a value the column cannot take (a non-boolean under ``boolean: true``);
* datetime → INT64 microseconds since the Unix epoch (UTC); missing is :data:`MISSING_INT64` (int64 min),
  and :data:`INVALID_INT64` (int64 min + 1) marks text that did not parse: treated as missing and
  reported in ``problems``.

Outputs of the preprocessing graph: ``features`` ``[N, F]`` FLOAT in ``state.feature_names`` order,
``problems`` ``[N, K]`` BOOL in :func:`problem_names` order and ``flags`` ``[N, J]`` BOOL in
:func:`flag_names` order (out-of-bounds values let through under the ``flag`` policy).

Every step is done with the same float64 operations, in the same order, as the Polars expressions, so the
float64 features are bit-identical before the final cast to float32. Datetime calendar parts are computed
from the epoch in int64 arithmetic (floor division, so dates before 1970 agree with Polars).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import polars as pl
from onnx import TensorProto, compose, helper, numpy_helper

from leanml.data import convert
from leanml.data.preprocessor import columns_frame, rejection_rules
from leanml.data.state import (
    CategoricalState,
    DatetimeState,
    NumericState,
    OutlierState,
    PreprocessState,
    ScaleState,
)
from leanml.data.transform import PleBin, ple_bins, quantile_table
from leanml.errors import DataError

MISSING_STRING = ""
"""A missing categorical value (``""`` is also one of the default null tokens)."""
MISSING_INT64 = int(np.iinfo(np.int64).min)
"""A missing datetime: int64 min, far outside any date Polars can represent."""
INVALID_INT64 = MISSING_INT64 + 1
"""A datetime whose text did not parse: imputed like a missing one (reported under ``invalid: reject``)."""
INVALID_STRING = "\x00invalid"
"""A categorical value the column cannot take: imputed like a missing one (a problem under ``reject``)."""
DATETIME_UNIT = "us"

DEFAULT_OPSET = 18
MIN_OPSET = 13  # Squeeze/Unsqueeze/ReduceSum take axes as inputs, Softmax works per axis
ML_OPSET = 3
ML_DOMAIN = "ai.onnx.ml"

FEATURES = "features"
PROBLEMS = "problems"
FLAGS = "flags"
PROBABILITIES = "probabilities"
LABEL_INDEX = "label_index"
PREDICTION = "prediction"
OUTPUT_NAMES = (FEATURES, PROBLEMS, FLAGS, PROBABILITIES, LABEL_INDEX, PREDICTION)
MODEL_PREFIX = "model/"
# The names :func:`leanml.models.export.export_onnx` gives the network's input and output (repeated here so
# that importing this module does not import torch).
ONNX_INPUT = "features"
ONNX_OUTPUT = "output"

_BATCH = "N"
_MICROS_PER_SECOND = 1_000_000
_MICROS_PER_DAY = 86_400 * _MICROS_PER_SECOND
_UNSEEN, _MISSING, _INVALID = -1, -2, -3  # category codes of an unseen, a missing, an invalid value
_INPUT_TYPES = {
    "numeric": TensorProto.DOUBLE,
    "categorical": TensorProto.STRING,
    "datetime": TensorProto.INT64,
}
_TYPE_NAMES = {TensorProto.DOUBLE: "DOUBLE", TensorProto.STRING: "STRING", TensorProto.INT64: "INT64"}

Key = tuple[Any, ...]
"""Identifies one column of an intermediate block: ``(kind, column, detail)``."""


# --------------------------------------------------------------------------------------------------
# Names of the checks
# --------------------------------------------------------------------------------------------------
def serving_action(rule: OutlierState) -> str:
    """What serving does with a value outside the bounds: clip, null, flag or reject."""
    return rule.action if rule.action != "drop" else rule.serving


def problem_names(state: PreprocessState) -> list[str]:
    """The columns of ``problems``, in order.

    The serving rejection rules of :func:`~leanml.data.preprocessor.rejection_rules`, in their order:
    ``invalid:COL`` under ``invalid: reject`` (a value present but unusable: text that is not a number or
    a date, ±inf, beyond float32's range, a non-boolean), ``outlier:COL`` under the serving policy
    ``reject`` and ``unseen_category:COL`` under ``handle_unknown: error``. Under ``invalid: null`` an
    unusable value is imputed like a missing one, with no problem, as prepare and predict do.
    """
    return [reason for _, reason, _ in rejection_rules(state.columns, "serve")]


def flag_names(state: PreprocessState) -> list[str]:
    """The columns of ``flags``: numeric columns whose out-of-bounds values are let through and flagged."""
    return [
        c.name
        for c in state.columns
        if isinstance(c, NumericState) and c.outliers is not None and serving_action(c.outliers) == "flag"
    ]


def flagged_columns(flags: np.ndarray, names: Sequence[str]) -> list[str | None]:
    """Per row of the ``flags`` output, the flagged columns joined by commas (as ``__flags`` spells them),
    or None."""
    if not names or not flags.any():
        return [None] * len(flags)
    return [",".join(name for name, hit in zip(names, row, strict=True) if hit) or None for row in flags]


# --------------------------------------------------------------------------------------------------
# A small graph builder
# --------------------------------------------------------------------------------------------------
class _Builder:
    """Collects nodes and constants with unique names under a prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counter = itertools.count()

    def fresh(self, hint: str) -> str:
        return f"{self.prefix}{hint}_{next(self._counter)}"

    def const(self, value: Any, dtype: Any, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def row(self, values: Sequence[Any], dtype: Any, hint: str = "row") -> str:
        """A ``[1, len(values)]`` constant, to broadcast against an ``[N, len(values)]`` block."""
        return self.const(np.asarray(values, dtype=dtype).reshape(1, -1), dtype, hint)

    def op(self, op_type: str, *inputs: str, out: str | None = None, domain: str = "", **attrs: Any) -> str:
        output = out or self.fresh(op_type.lower())
        self.nodes.append(
            helper.make_node(
                op_type, list(inputs), [output], name=self.fresh(f"node_{op_type}"), domain=domain, **attrs
            )
        )
        return output

    def concat(self, tensors: Sequence[str], axis: int = 1) -> str:
        return tensors[0] if len(tensors) == 1 else self.op("Concat", *tensors, axis=axis)

    def gather_columns(self, matrix: str, indices: Sequence[int]) -> str:
        return self.op("Gather", matrix, self.const(list(indices), np.int64, "columns"), axis=1)

    def empty_bool(self, like: str) -> str:
        """An ``[N, 0]`` boolean tensor (no checks), N taken from ``like``."""
        rows = self.op(
            "Slice",
            self.op("Shape", like),
            self.const([0], np.int64),
            self.const([1], np.int64),
        )
        shape = self.op("Concat", rows, self.const([0], np.int64), axis=0)
        return self.op("ConstantOfShape", shape, value=numpy_helper.from_array(np.zeros(1, dtype=bool)))


class _Check(NamedTuple):
    """Column ``index`` of a BOOL ``[N, width]`` tensor: one serving check of one input column."""

    tensor: str
    index: int
    width: int


class _Block:
    """An ``[N, k]`` DOUBLE or BOOL tensor and what each of its k columns is."""

    def __init__(self, tensor: str, keys: Sequence[Key | None]) -> None:
        self.tensor = tensor
        self.keys = list(keys)


# --------------------------------------------------------------------------------------------------
# Per-kind blocks: numeric, categorical, datetime
# --------------------------------------------------------------------------------------------------
def _numeric(g: _Builder, columns: list[NumericState]) -> tuple[list[_Block], dict[Key, _Check]]:
    """Outliers → impute → scale, for all numeric columns at once on an ``[N, M]`` block.

    Mirrors ``convert.to_number`` (NaN missing; ±inf and beyond float32 invalid, hence null), then
    ``_outlier_exprs`` and ``_feature_exprs``: flagged = below lower or above upper (never for null),
    clip / null by the serving action, fill the nulls, scale; the piecewise-linear encodings of the filled
    values beside.
    """
    names = [c.name for c in columns]
    x = g.concat(names)
    missing = g.op("IsNaN", x)
    usable = g.op("LessOrEqual", g.op("Abs", x), g.const(convert.FLOAT32_MAX, np.float64))  # False for NaN
    null = g.op("Not", usable)
    checks: dict[Key, _Check] = {}
    invalid = g.op("And", null, g.op("Not", missing))
    for i, name in enumerate(names):
        checks[("invalid", name)] = _Check(invalid, i, len(names))

    rules = [c.outliers for c in columns]
    value = x
    if any(rule is not None for rule in rules):
        lower = [rule.lower if rule and rule.lower is not None else -np.inf for rule in rules]
        upper = [rule.upper if rule and rule.upper is not None else np.inf for rule in rules]
        outside = g.op(
            "Or",
            g.op("Less", x, g.row(lower, np.float64, "lower")),
            g.op("Greater", x, g.row(upper, np.float64, "upper")),
        )
        flagged = g.op("And", outside, usable)
        for i, name in enumerate(names):
            checks[("outlier", name)] = _Check(flagged, i, len(names))
        actions = [serving_action(rule) if rule else None for rule in rules]
        if "clip" in actions:
            clip_lower = [lo if a == "clip" else -np.inf for lo, a in zip(lower, actions, strict=True)]
            clip_upper = [up if a == "clip" else np.inf for up, a in zip(upper, actions, strict=True)]
            value = g.op(
                "Max",
                g.op("Min", x, g.row(clip_upper, np.float64, "clip_upper")),
                g.row(clip_lower, np.float64, "clip_lower"),
            )
        if "null" in actions:
            nulled = g.row([a == "null" for a in actions], bool, "null_action")
            null = g.op("Or", null, g.op("And", flagged, nulled))
    filled = g.op("Where", null, g.row([c.fill for c in columns], np.float64, "fill"), value)
    scaled = _scale(g, filled, [c.scale for c in columns])
    blocks = [
        _Block(scaled, [("numeric", name) for name in names]),
        _Block(g.op("Cast", null, to=TensorProto.DOUBLE), [("missing", name) for name in names]),
    ]
    if any(c.ple_edges for c in columns):
        blocks.append(_piecewise_linear(g, filled, columns))
    return blocks, checks


def _piecewise_linear(g: _Builder, filled: str, columns: list[NumericState]) -> _Block:
    """Every bin of every ``encode: ple`` column of the imputed ``[N, M]`` block, as
    :func:`~leanml.data.transform.ple_bins` defines them: ``clip((x - start) / width, low, high)``."""
    indices: list[int] = []
    keys: list[Key] = []
    bins: list[PleBin] = []
    for m, column in enumerate(columns):
        for t, piece in enumerate(ple_bins(column.ple_edges)):
            indices.append(m)
            keys.append(("ple", column.name, t))
            bins.append(piece)
    x = g.gather_columns(filled, indices)
    share = g.op(
        "Div",
        g.op("Sub", x, g.row([b.start for b in bins], np.float64, "ple_start")),
        g.row([b.width for b in bins], np.float64, "ple_width"),
    )
    low = g.row([b.low for b in bins], np.float64, "ple_low")
    return _Block(
        g.op("Min", g.op("Max", share, low), g.row([b.high for b in bins], np.float64, "ple_high")), keys
    )


def _scale(g: _Builder, block: str, scales: Sequence[ScaleState]) -> str:
    """Each column's scaling, as :func:`~leanml.data.transform._scaled` computes it.

    ``(x - offset) / divisor`` for the linear methods (``none`` is ``(x - 0) / 1``, which leaves every value
    as is), then ``robust`` columns softly clipped; ``quantile`` columns take :func:`_quantile_scaled`.
    """
    methods = [scale.method for scale in scales]
    if all(method == "none" for method in methods):
        return block
    linear = [method not in ("none", "quantile") for method in methods]
    out = block
    if any(linear):
        offsets = [scale.offset if keep else 0.0 for scale, keep in zip(scales, linear, strict=True)]
        divisors = [scale.divisor if keep else 1.0 for scale, keep in zip(scales, linear, strict=True)]
        centred = g.op("Sub", block, g.row(offsets, np.float64, "offset"))
        out = g.op("Div", centred, g.row(divisors, np.float64, "divisor"))
    if "robust" in methods:
        third = g.op("Div", out, g.const(3.0, np.float64))
        bound = g.op("Sqrt", g.op("Add", g.op("Mul", third, third), g.const(1.0, np.float64)))
        robust = g.row([method == "robust" for method in methods], bool, "robust")
        out = g.op("Where", robust, g.op("Div", out, bound), out)
    if "quantile" in methods:
        quantile = g.row([method == "quantile" for method in methods], bool, "quantile")
        out = g.op("Where", quantile, _quantile_scaled(g, block, scales), out)
    return out


def _quantile_scaled(g: _Builder, block: str, scales: Sequence[ScaleState]) -> str:
    """The ``quantile`` map of every column of ``block`` (columns of other methods get a dummy table).

    For each value, the number of knots at or below it (clipped to ``[1, K - 1]``) picks the segment
    ``[lo, hi]`` from a flat table of every column's knots, as ``search_sorted(side="right")`` does in
    Polars; with ``x`` clipped to the end knots, the answer is the knot's score at ``lo`` or ``hi``, else
    ``after[lo] + (x - lo) * (before[hi] - after[lo]) / (hi - lo)``.
    """
    dummy = {"knots": [0.0, 1.0], "scores": [0.0, 0.0], "before": [0.0, 0.0], "after": [0.0, 0.0]}
    tables = [quantile_table(scale) if scale.method == "quantile" else dummy for scale in scales]
    width = max(len(table["knots"]) for table in tables)
    flat: dict[str, np.ndarray] = {}
    for key in dummy:
        padded = np.zeros((len(tables), width))
        for m, table in enumerate(tables):
            padded[m, : len(table[key])] = table[key]
        flat[key] = padded
    grid = np.full((1, len(tables), width), np.inf)
    for m, table in enumerate(tables):
        grid[0, m, : len(table["knots"])] = table["knots"]
    first = g.row([table["knots"][0] for table in tables], np.float64, "first_knot")
    last = g.row([table["knots"][-1] for table in tables], np.float64, "last_knot")
    x = g.op("Max", g.op("Min", block, last), first)
    at_or_below = g.op(
        "LessOrEqual", g.const(grid, np.float64, "knots"), g.op("Unsqueeze", x, g.const([2], np.int64))
    )
    count = g.op(
        "ReduceSum", g.op("Cast", at_or_below, to=TensorProto.INT64), g.const([2], np.int64), keepdims=0
    )
    top = g.row([len(table["knots"]) - 1 for table in tables], np.int64, "last_segment")
    upper = g.op("Max", g.op("Min", count, top), g.const(1, np.int64))
    upper = g.op("Add", upper, g.row([m * width for m in range(len(tables))], np.int64, "table_row"))
    lower = g.op("Sub", upper, g.const(1, np.int64))

    def look_up(key: str, index: str) -> str:
        return g.op("Gather", g.const(flat[key].ravel(), np.float64, key), index)

    lo, hi = look_up("knots", lower), look_up("knots", upper)
    start, end = look_up("after", lower), look_up("before", upper)
    rise = g.op("Mul", g.op("Sub", x, lo), g.op("Sub", end, start))
    between = g.op("Add", start, g.op("Div", rise, g.op("Sub", hi, lo)))
    at_hi = g.op("Where", g.op("Equal", x, hi), look_up("scores", upper), between)
    return g.op("Where", g.op("Equal", x, lo), look_up("scores", lower), at_hi)


def _categorical(
    g: _Builder, columns: list[CategoricalState], null_values: Sequence[str]
) -> tuple[list[_Block], dict[Key, _Check]]:
    """One-hot with an infrequent column, for all categorical columns at once.

    Each column's text is mapped (``LabelEncoder``) to a code in one shared one-hot space: each category
    to its own column, every infrequent category to the column's infrequent column, a null token to
    ``-2`` (missing) and anything else to ``-1`` (unseen, all zeros). Missing codes are replaced by the
    code of the frozen fill, as ``fill_null(fill)`` does before encoding.
    """
    codes: list[str] = []
    keys: list[Key] = []
    fills: list[int] = []
    for column in columns:
        base = len(keys)
        mapping = {category: base + i for i, category in enumerate(column.categories)}
        keys += [("category", column.name, i) for i in range(len(column.categories))]
        if column.infrequent:
            mapping.update({category: len(keys) for category in column.infrequent})
            keys.append(("infrequent", column.name))
        fills.append(mapping.get(column.fill, _UNSEEN))
        # A null token is missing even if it is also spelled like a category (Polars checks nulls first).
        mapping.update({token: _MISSING for token in [*null_values, MISSING_STRING]})
        mapping[INVALID_STRING] = _INVALID
        codes.append(
            g.op(
                "LabelEncoder",
                column.name,
                domain=ML_DOMAIN,
                keys_strings=list(mapping),
                values_int64s=list(mapping.values()),
                default_int64=_UNSEEN,
            )
        )
    code = g.concat(codes)
    invalid = g.op("Equal", code, g.const(_INVALID, np.int64))
    missing = g.op("Or", g.op("Equal", code, g.const(_MISSING, np.int64)), invalid)
    unseen = g.op("Equal", code, g.const(_UNSEEN, np.int64))
    filled = g.op("Where", missing, g.row(fills, np.int64, "fill_code"), code)
    blocks = [_Block(g.op("Cast", missing, to=TensorProto.DOUBLE), [("missing", c.name) for c in columns])]
    if keys:
        space = g.const(np.arange(len(keys), dtype=np.int64).reshape(1, 1, -1), np.int64, "onehot_space")
        hits = g.op("Equal", g.op("Unsqueeze", filled, g.const([2], np.int64)), space)  # [N, C, G]
        onehot = g.op(
            "ReduceSum", g.op("Cast", hits, to=TensorProto.DOUBLE), g.const([1], np.int64), keepdims=0
        )
        blocks.append(_Block(onehot, keys))
    checks = {("unseen_category", c.name): _Check(unseen, i, len(columns)) for i, c in enumerate(columns)}
    checks.update({("invalid", c.name): _Check(invalid, i, len(columns)) for i, c in enumerate(columns)})
    return blocks, checks


def _datetime(g: _Builder, columns: list[DatetimeState]) -> tuple[list[_Block], dict[Key, _Check]]:
    """Epoch seconds and calendar parts, imputed and scaled, for all datetime columns at once.

    Mirrors Polars: ``seconds = µs / 1e6`` (float64), fill, then the moment ``round(seconds * 1e6)``
    (half to even, as ``Expr.round``) whose parts are computed in int64 arithmetic.
    """
    names = [c.name for c in columns]
    x = g.concat(names)
    missing = g.op("Equal", x, g.const(MISSING_INT64, np.int64))
    invalid = g.op("Equal", x, g.const(INVALID_INT64, np.int64))
    null = g.op("Or", missing, invalid)
    micros = g.const(float(_MICROS_PER_SECOND), np.float64)
    seconds = g.op("Div", g.op("Cast", x, to=TensorProto.DOUBLE), micros)
    handled = g.op("Where", null, g.row([c.fill_epoch for c in columns], np.float64, "fill_epoch"), seconds)

    parts_needed = sorted({out.part for c in columns for out in c.outputs if out.part != "epoch"})
    stacked = [handled]
    where: dict[str, int] = {"epoch": 0}
    if parts_needed:
        moment = g.op("Cast", g.op("Round", g.op("Mul", handled, micros)), to=TensorProto.INT64)
        calendar = _Calendar(g, moment)
        for part in parts_needed:
            where[part] = len(stacked)
            stacked.append(g.op("Cast", calendar.part(part), to=TensorProto.DOUBLE))
    matrix = g.concat(stacked)  # [N, D * len(stacked)]: part-major
    indices, keys, scales = [], [], []
    for d, column in enumerate(columns):
        for k, out in enumerate(column.outputs):
            indices.append(where[out.part] * len(columns) + d)
            keys.append(("datetime", column.name, k))
            scales.append(out.scale)
    blocks = [_Block(g.op("Cast", null, to=TensorProto.DOUBLE), [("missing", name) for name in names])]
    if indices:
        blocks.append(_Block(_scale(g, g.gather_columns(matrix, indices), scales), keys))
    checks = {("invalid", name): _Check(invalid, i, len(names)) for i, name in enumerate(names)}
    return blocks, checks


class _Calendar:
    """Calendar parts of int64 epoch microseconds (proleptic Gregorian, UTC), built on demand.

    Uses floor division throughout (``Mod`` with ``fmod=0`` takes the divisor's sign, like Python), so
    1969-12-31 23:00 is hour 23 of a Wednesday, as in Polars; the date comes from H. Hinnant's
    ``civil_from_days``.
    """

    def __init__(self, g: _Builder, micros: str) -> None:
        self.g = g
        self.micros = micros
        self._memo: dict[str, str] = {}

    def _int(self, value: int) -> str:
        return self.g.const(value, np.int64)

    def _floordiv(self, a: str, b: int) -> tuple[str, str]:
        """``(a // b, a % b)`` with Python's floor semantics, for a positive constant ``b``."""
        g = self.g
        rest = g.op("Mod", a, self._int(b), fmod=0)
        return g.op("Div", g.op("Sub", a, rest), self._int(b)), rest

    def _get(self, name: str, build: Callable[[], str]) -> str:
        if name not in self._memo:
            self._memo[name] = build()
        return self._memo[name]

    def part(self, part: str) -> str:
        """``year``, ``quarter``, ``month``, ``day``, ``dayofweek`` (Monday 0), ``dayofyear`` (from 1),
        ``hour``, ``minute`` or ``second``."""
        builders: dict[str, Callable[[], str]] = {
            "year": self._year,
            "quarter": self._quarter,
            "month": lambda: self._civil()[1],
            "day": lambda: self._civil()[2],
            "dayofweek": self._dayofweek,
            "dayofyear": self._dayofyear,
            "hour": lambda: self._time(3_600 * _MICROS_PER_SECOND, 24),
            "minute": lambda: self._time(60 * _MICROS_PER_SECOND, 60),
            "second": lambda: self._time(_MICROS_PER_SECOND, 60),
        }
        return self._get(part, builders[part])

    def _days(self) -> tuple[str, str]:
        def build() -> str:
            days, micros_of_day = self._floordiv(self.micros, _MICROS_PER_DAY)
            self._memo["micros_of_day"] = micros_of_day
            return days

        days = self._get("days", build)
        return days, self._memo["micros_of_day"]

    def _time(self, unit: int, modulus: int) -> str:
        # (micros of the day // unit) % modulus; micros of the day is >= 0, so Div truncates = floors.
        g = self.g
        count = g.op("Div", self._days()[1], self._int(unit))
        return count if unit * modulus == _MICROS_PER_DAY else g.op("Mod", count, self._int(modulus), fmod=0)

    def _dayofweek(self) -> str:
        # 1970-01-01 was a Thursday (3 when Monday is 0).
        g = self.g
        return g.op("Mod", g.op("Add", self._days()[0], self._int(3)), self._int(7), fmod=0)

    def _civil(self) -> tuple[str, str, str]:
        """(year, month, day), from Hinnant's ``civil_from_days``; also memoizes the March-based day."""

        def build() -> str:
            g = self.g
            z = g.op("Add", self._days()[0], self._int(719_468))
            era, doe = self._floordiv(z, 146_097)  # doe in [0, 146096]: truncating Div is floor from here
            yoe = g.op(
                "Div",
                g.op(
                    "Sub",
                    g.op(
                        "Add",
                        g.op("Sub", doe, g.op("Div", doe, self._int(1_460))),
                        g.op("Div", doe, self._int(36_524)),
                    ),
                    g.op("Div", doe, self._int(146_096)),
                ),
                self._int(365),
            )
            year_start = g.op(
                "Sub",
                g.op("Add", g.op("Mul", yoe, self._int(365)), g.op("Div", yoe, self._int(4))),
                g.op("Div", yoe, self._int(100)),
            )
            doy = g.op("Sub", doe, year_start)  # day of the March-based year, from 0
            mp = g.op("Div", g.op("Add", g.op("Mul", doy, self._int(5)), self._int(2)), self._int(153))
            month_start = g.op(
                "Div", g.op("Add", g.op("Mul", mp, self._int(153)), self._int(2)), self._int(5)
            )
            day = g.op("Add", g.op("Sub", doy, month_start), self._int(1))
            before_march = g.op("GreaterOrEqual", mp, self._int(10))  # January and February
            month = g.op(
                "Where",
                before_march,
                g.op("Sub", mp, self._int(9)),
                g.op("Add", mp, self._int(3)),
            )
            year = g.op(
                "Add",
                g.op("Add", yoe, g.op("Mul", era, self._int(400))),
                g.op("Cast", before_march, to=TensorProto.INT64),
            )
            self._memo.update(month=month, day=day, march_doy=doy, before_march=before_march)
            return year

        year = self._get("year", build)
        return year, self._memo["month"], self._memo["day"]

    def _year(self) -> str:
        return self._civil()[0]

    def _quarter(self) -> str:
        g = self.g
        month = self._civil()[1]
        return g.op("Add", g.op("Div", g.op("Sub", month, self._int(1)), self._int(3)), self._int(1))

    def _dayofyear(self) -> str:
        # January/February: March-based day 306 is January 1st. March on: 60 days before March 1st
        # (January 1st is day 1), plus one in a leap year.
        g = self.g
        year = self._civil()[0]
        doy, before_march = self._memo["march_doy"], self._memo["before_march"]

        def divisible(n: int) -> str:
            return g.op("Equal", g.op("Mod", year, self._int(n), fmod=0), self._int(0))

        leap = g.op("Or", g.op("And", divisible(4), g.op("Not", divisible(100))), divisible(400))
        after_feb = g.op("Add", g.op("Add", doy, self._int(60)), g.op("Cast", leap, to=TensorProto.INT64))
        return g.op("Where", before_march, g.op("Sub", doy, self._int(305)), after_feb)


# --------------------------------------------------------------------------------------------------
# Public: the preprocessing graph
# --------------------------------------------------------------------------------------------------
def _feature_keys(state: PreprocessState) -> list[Key]:
    """The block key of each feature, in ``state.feature_names`` order (see ``state.feature_names``)."""
    keys: list[Key] = []
    for column in state.columns:
        if isinstance(column, NumericState):
            keys.append(("numeric", column.name))
            keys += [("ple", column.name, t) for t in range(len(column.ple_edges) - 1)]
        elif isinstance(column, CategoricalState):
            keys += [("category", column.name, i) for i in range(len(column.categories))]
            if column.infrequent:
                keys.append(("infrequent", column.name))
        else:
            keys += [("datetime", column.name, k) for k in range(len(column.outputs))]
        if column.indicator:
            keys.append(("missing", column.name))
    return keys


def _check_names(state: PreprocessState) -> None:
    if not state.columns:
        raise DataError("the preprocessing has no input columns; there is nothing to compile")
    clashes = [c.name for c in state.columns if c.name in OUTPUT_NAMES]
    if clashes:
        raise DataError(
            f"input column(s) {', '.join(map(repr, clashes))} would clash with the serving graph's "
            f"outputs ({', '.join(OUTPUT_NAMES)}); rename them"
        )


def compile_preprocessing(
    state: PreprocessState, opset: int = DEFAULT_OPSET, ml_opset: int = ML_OPSET
) -> onnx.ModelProto:
    """The frozen preprocessing (``transform`` in serve mode) as an ONNX model.

    ``opset`` is the ``ai.onnx`` opset (13 or later); ``ml_opset`` the ``ai.onnx.ml`` one, for
    ``LabelEncoder`` (its string → int64 attributes exist from version 2 on).

    Inputs: one ``[N, 1]`` tensor per column of ``state.columns`` (see the module docstring for types
    and missing codes). Outputs: ``features`` ``[N, F]`` FLOAT, ``problems`` ``[N, K]`` BOOL
    (:func:`problem_names`) and ``flags`` ``[N, J]`` BOOL (:func:`flag_names`).
    """
    if opset < MIN_OPSET:
        raise ValueError(f"the serving graph needs ONNX opset {MIN_OPSET} or later, got {opset}")
    _check_names(state)
    g = _Builder("pre/")
    blocks: list[_Block] = []
    checks: dict[Key, _Check] = {}
    numeric = [c for c in state.columns if isinstance(c, NumericState)]
    categorical = [c for c in state.columns if isinstance(c, CategoricalState)]
    datetimes = [c for c in state.columns if isinstance(c, DatetimeState)]
    for found_blocks, found_checks in (
        _numeric(g, numeric) if numeric else ([], {}),
        _categorical(g, categorical, state.null_values) if categorical else ([], {}),
        _datetime(g, datetimes) if datetimes else ([], {}),
    ):
        blocks += found_blocks
        checks.update(found_checks)

    # Features: every block side by side, then one Gather into the state's feature order.
    position = {key: i for i, key in enumerate(k for b in blocks for k in b.keys)}
    order = [position[key] for key in _feature_keys(state)]
    if len(order) != len(state.feature_names):  # pragma: no cover - a guard for future state changes
        raise AssertionError("the graph's features do not line up with state.feature_names")
    matrix = g.concat([b.tensor for b in blocks])
    g.op("Cast", g.gather_columns(matrix, order), to=TensorProto.FLOAT, out=FEATURES)

    first_input = state.columns[0].name
    _bool_output(g, PROBLEMS, [_check_key(name) for name in problem_names(state)], checks, first_input)
    _bool_output(g, FLAGS, [("outlier", name) for name in flag_names(state)], checks, first_input)

    graph = helper.make_graph(
        g.nodes,
        "leanml_preprocessing",
        [helper.make_tensor_value_info(c.name, _INPUT_TYPES[c.type], [_BATCH, 1]) for c in state.columns],
        [
            helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [_BATCH, len(order)]),
            helper.make_tensor_value_info(PROBLEMS, TensorProto.BOOL, [_BATCH, len(problem_names(state))]),
            helper.make_tensor_value_info(FLAGS, TensorProto.BOOL, [_BATCH, len(flag_names(state))]),
        ],
        initializer=g.initializers,
    )
    imports = [helper.make_opsetid("", opset), helper.make_opsetid(ML_DOMAIN, ml_opset)]
    model = helper.make_model(graph, opset_imports=imports, producer_name="leanml")
    model.ir_version = helper.find_min_ir_version_for(imports)
    return model


def _check_key(problem: str) -> Key:
    kind, column = problem.split(":", 1)
    return (kind, column)


def _bool_output(g: _Builder, out: str, keys: list[Key], sources: dict[Key, _Check], like: str) -> None:
    """``out`` ``[N, len(keys)]``: the check of each key, gathered from the blocks that computed it."""
    if not keys:
        g.op("Identity", g.empty_bool(like), out=out)
        return
    widths = {sources[key].tensor: sources[key].width for key in keys}  # each check tensor once, in order
    starts = dict(zip(widths, itertools.accumulate([0, *widths.values()]), strict=False))
    indices = [starts[sources[key].tensor] + sources[key].index for key in keys]
    g.op("Identity", g.gather_columns(g.concat(list(widths)), indices), out=out)


# --------------------------------------------------------------------------------------------------
# Public: the whole pipeline — preprocessing, model, output head
# --------------------------------------------------------------------------------------------------
def build_pipeline(
    state: PreprocessState, model: onnx.ModelProto | bytes | str | Path, spec: Mapping[str, Any]
) -> onnx.ModelProto:
    """One graph from raw columns to answers: :func:`compile_preprocessing` → the model → the head.

    ``model`` is the exported network (input ``features``, output ``output``; fp32, or int8 from
    ``onnxruntime.quantization.quantize_dynamic``): a ``ModelProto``, its bytes or a path. The model's
    names are prefixed with ``model/``. Outputs: classification → ``probabilities`` ``[N, C]`` FLOAT
    (binary: ``[1 - p, p]`` with ``p = sigmoid(logit)``; multiclass: softmax) and ``label_index`` ``[N]``
    INT64 (binary: ``p >= 0.5``, as :func:`leanml.metrics.predicted_classes`; multiclass: argmax);
    regression → ``prediction`` ``[N]`` FLOAT (the network already returns the target's units); then
    ``problems`` and ``flags``, passed through from the preprocessing, and ``features``, the model's
    input (for drift monitoring).
    """
    network = _load_model(model)
    imports = {entry.domain: entry.version for entry in network.opset_import}
    opset = imports.get("", imports.get("ai.onnx", DEFAULT_OPSET))
    ml_opset = imports.get(ML_DOMAIN, ML_OPSET)
    preprocessing = compile_preprocessing(state, opset=opset, ml_opset=ml_opset)
    preprocessing.ir_version = network.ir_version
    joined = compose.merge_models(
        preprocessing,
        network,
        io_map=[(FEATURES, ONNX_INPUT)],
        prefix2=MODEL_PREFIX,
        name="leanml_pipeline",
        producer_name="leanml",
    )
    head = _head(str(spec["task"]), MODEL_PREFIX + ONNX_OUTPUT, int(spec["n_outputs"]), opset)
    head.ir_version = network.ir_version
    pipeline = compose.merge_models(
        joined,
        head,
        io_map=[(MODEL_PREFIX + ONNX_OUTPUT, MODEL_PREFIX + ONNX_OUTPUT)],
        name="leanml_pipeline",
        producer_name="leanml",
    )
    # Answers first, then the checks, then the features (the server's drift monitor counts them).
    outputs = sorted(pipeline.graph.output, key=lambda o: o.name in (PROBLEMS, FLAGS))
    del pipeline.graph.output[:]
    pipeline.graph.output.extend(outputs)
    width = len(state.feature_names)
    pipeline.graph.output.append(helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [_BATCH, width]))
    onnx.checker.check_model(pipeline)
    return pipeline


def _load_model(model: onnx.ModelProto | bytes | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    return onnx.load(str(model))


def _head(task: str, logits: str, n_outputs: int, opset: int) -> onnx.ModelProto:
    """The output head as a model: network outputs ``[N, n_outputs]`` → probabilities or values."""
    g = _Builder("head/")
    if task == "binary":
        first = g.op("Slice", logits, g.const([0], np.int64), g.const([1], np.int64), g.const([1], np.int64))
        p = g.op("Sigmoid", first)
        g.op("Concat", g.op("Sub", g.const(1.0, np.float32), p), p, axis=1, out=PROBABILITIES)
        positive = g.op("Cast", g.op("GreaterOrEqual", p, g.const(0.5, np.float32)), to=TensorProto.INT64)
        g.op("Squeeze", positive, g.const([1], np.int64), out=LABEL_INDEX)
        outputs = [
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [_BATCH, 2]),
            helper.make_tensor_value_info(LABEL_INDEX, TensorProto.INT64, [_BATCH]),
        ]
    elif task == "multiclass":
        g.op("Softmax", logits, axis=1, out=PROBABILITIES)
        g.op("ArgMax", PROBABILITIES, axis=1, keepdims=0, out=LABEL_INDEX)
        outputs = [
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [_BATCH, n_outputs]),
            helper.make_tensor_value_info(LABEL_INDEX, TensorProto.INT64, [_BATCH]),
        ]
    elif task == "regression":
        first = g.op("Slice", logits, g.const([0], np.int64), g.const([1], np.int64), g.const([1], np.int64))
        g.op("Squeeze", first, g.const([1], np.int64), out=PREDICTION)
        outputs = [helper.make_tensor_value_info(PREDICTION, TensorProto.FLOAT, [_BATCH])]
    else:
        raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")
    graph = helper.make_graph(
        g.nodes,
        "leanml_head",
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [_BATCH, n_outputs])],
        outputs,
        initializer=g.initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="leanml")


# --------------------------------------------------------------------------------------------------
# Public: feeding the graph, and describing it
# --------------------------------------------------------------------------------------------------
def graph_inputs(
    data: pl.DataFrame | Mapping[str, Sequence[Any]], state: PreprocessState
) -> dict[str, np.ndarray]:
    """The graph's input feed for raw rows: a frame, or JSON-like values per column.

    Values go through the same converters as training (:func:`leanml.data.convert.convert_column`, with
    each column's reading options and date formats), then take the graph's encodings: numeric → float64
    (NaN when missing, +inf when present but not a usable number); categorical → text
    (:data:`MISSING_STRING` when missing, :data:`INVALID_STRING` when invalid); datetime → int64 µs
    (:data:`MISSING_INT64` when missing, :data:`INVALID_INT64` when the text did not parse). A column
    absent from ``data`` is all missing.
    """
    if isinstance(data, pl.DataFrame):
        frame = data
    else:
        height = len(next(iter(data.values()))) if data else 0
        frame = columns_frame(data, height)
    absent = [c.name for c in state.columns if c.name not in frame.columns]
    if absent:
        frame = frame.with_columns(pl.lit(None).alias(name) for name in absent)
    schema = frame.schema
    exprs = []
    for column in state.columns:
        name, dtype = column.name, schema[column.name]
        got = convert.convert_column(name, column, dtype, state.null_values)
        if isinstance(column, NumericState):
            expr = (
                pl.when(got.missing.fill_null(True))
                .then(float("nan"))
                .when(got.invalid.fill_null(False))
                .then(float("inf"))
                .otherwise(got.value)
            )
        elif isinstance(column, CategoricalState):
            expr = (
                pl.when(got.invalid.fill_null(False))
                .then(pl.lit(INVALID_STRING))
                .otherwise(got.value.fill_null(MISSING_STRING))
            )
        else:
            expr = (
                pl.when(got.invalid.fill_null(False))
                .then(INVALID_INT64)
                .otherwise(got.value.dt.epoch(DATETIME_UNIT).fill_null(MISSING_INT64))
            )
        exprs.append(expr.alias(name))
    converted = frame.select(exprs)
    feed: dict[str, np.ndarray] = {}
    for column in state.columns:
        series = converted.get_column(column.name)
        if isinstance(column, NumericState):
            values = series.cast(pl.Float64).to_numpy().astype(np.float64, copy=False)
        elif isinstance(column, CategoricalState):
            values = np.asarray(series.cast(pl.String).to_list(), dtype=object)
        else:
            values = series.cast(pl.Int64).to_numpy().astype(np.int64, copy=False)
        feed[column.name] = values.reshape(-1, 1)
    return feed


def manifest_entry(state: PreprocessState) -> dict[str, Any]:
    """What ``manifest.json`` says about ``pipeline.onnx``: inputs, encodings, outputs and check names."""
    task = state.target.task
    answers: list[dict[str, Any]]
    if task == "regression":
        answers = [{"name": PREDICTION, "type": "FLOAT", "shape": [-1]}]
    else:
        classes = 2 if task == "binary" else len(state.target.classes)
        answers = [
            {"name": PROBABILITIES, "type": "FLOAT", "shape": [-1, classes]},
            {"name": LABEL_INDEX, "type": "INT64", "shape": [-1]},
        ]
    problems, flags = problem_names(state), flag_names(state)
    return {
        "inputs": [
            {"name": c.name, "kind": c.type, "type": _TYPE_NAMES[_INPUT_TYPES[c.type]], "shape": [-1, 1]}
            for c in state.columns
        ],
        "missing": {"DOUBLE": "NaN", "STRING": MISSING_STRING, "INT64": MISSING_INT64},
        "string_null_values": sorted({MISSING_STRING, *state.null_values}),
        "invalid": {
            "DOUBLE": f"±inf or |x| > {convert.FLOAT32_MAX!r} (float32's range)",
            "INT64": INVALID_INT64,
            "STRING": INVALID_STRING,
        },
        "datetime_unit": f"{DATETIME_UNIT} since 1970-01-01T00:00:00 UTC",
        "outputs": [
            *answers,
            {"name": PROBLEMS, "type": "BOOL", "shape": [-1, len(problems)]},
            {"name": FLAGS, "type": "BOOL", "shape": [-1, len(flags)]},
        ],
        "problems": problems,
        "flags": flags,
        "labels": list(state.target.labels),
    }
