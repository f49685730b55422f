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
from the epoch in int64 arithmetic (floor division, so dates before 1970 agree with Polars), the date parts
looked up in a table of one 400-year cycle of the calendar.

At batch 1 a run of ONNX Runtime costs about a microsecond per node, more than the arithmetic of most
nodes, so the graph is built for few nodes: each kind of column is computed for all its columns at once,
and nodes that no output reads (checks and indicators the state does not ask for) are dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
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
# What a categorical value is: a category (or an infrequent one), unseen, missing, invalid. Missing and
# invalid values (>= _MISSING) are imputed.
_KNOWN, _UNSEEN, _MISSING, _INVALID = 0, 1, 2, 3
_STATUSES = 4
STRING_CONCAT_OPSET = 20
"""The first ``ai.onnx`` opset with ``StringConcat``: from it on, one lookup maps every categorical column."""
_CYCLE_DAYS = 146_097
"""Days in 400 Gregorian years, after which the calendar repeats (20,871 weeks: weekdays too)."""
_CYCLE_MICROS = _CYCLE_DAYS * _MICROS_PER_DAY
_DATE_PARTS = ("year", "quarter", "month", "day", "dayofweek", "dayofyear")
_TIME_PARTS = {  # part: (unit, modulus) in µs of the day
    "hour": (3_600 * _MICROS_PER_SECOND, 24),
    "minute": (60 * _MICROS_PER_SECOND, 60),
    "second": (_MICROS_PER_SECOND, 60),
}
_INPUT_TYPES = {
    "numeric": TensorProto.DOUBLE,
    "categorical": TensorProto.STRING,
    "datetime": TensorProto.INT64,
}
_TYPE_NAMES = {TensorProto.DOUBLE: "DOUBLE", TensorProto.STRING: "STRING", TensorProto.INT64: "INT64"}

Key = tuple[Any, ...]
"""Identifies one column of an intermediate block: ``(kind, column, detail)``."""
Slot = tuple[str, int]
"""A column of the datetime values: ``(part, index of the datetime column)``."""


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

    def gather_columns(self, matrix: str, indices: Sequence[int], out: str | None = None) -> str:
        return self.op("Gather", matrix, self.const(list(indices), np.int64, "columns"), axis=1, out=out)

    def used(self, outputs: Sequence[str]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
        """The nodes that ``outputs`` depend on, in order, and the constants those nodes read.

        The per-kind builders compute every check and indicator a column may need, and leave the choice
        to the outputs: ONNX Runtime runs every node of a graph, read or not, and at batch 1 each node
        costs about a microsecond, more than the arithmetic it does.
        """
        needed = set(outputs)
        kept: list[onnx.NodeProto] = []
        for node in reversed(self.nodes):
            if needed.intersection(node.output):
                kept.append(node)
                needed.update(name for name in node.input if name)
        kept.reverse()
        return kept, [tensor for tensor in self.initializers if tensor.name in needed]


class _Check(NamedTuple):
    """Column ``index`` of a BOOL ``[N, width]`` tensor: one serving check of one input column."""

    tensor: str
    index: int
    width: int


class _Block(NamedTuple):
    """An ``[N, k]`` tensor of type ``dtype`` and what each of its k columns is (None: no feature)."""

    tensor: str
    keys: list[Key | None]
    dtype: int


class _Kind(NamedTuple):
    """What the columns of one kind contribute to the graph.

    ``values``: DOUBLE blocks still to be scaled, one :class:`~leanml.data.state.ScaleState` per column
    in ``scales`` (numeric values after outliers and imputation; datetime epoch seconds and calendar
    parts); ``blocks``: finished features (piecewise-linear bins, one-hot columns); ``missing``: a BOOL
    block, per input column whether the value was imputed (the ``missing_indicator`` features);
    ``checks``: the per-row serving checks, by ``(kind, column)``.
    """

    values: list[_Block]
    scales: list[ScaleState]
    blocks: list[_Block]
    missing: _Block
    checks: dict[Key, _Check]


class PackedInput(NamedTuple):
    """One input of the packed serving graph: the ``[N, len(columns)]`` tensor of a kind's columns."""

    name: str
    kind: str
    columns: list[str]


class _Inputs(NamedTuple):
    """Where one kind's columns come in: one ``[N, 1]`` input per column, or one packed ``[N, k]`` input."""

    names: list[str]
    packed: str | None

    def block(self, g: _Builder) -> str:
        """The ``[N, k]`` block of the columns, in order."""
        return self.packed or g.concat(self.names)

    def columns(self, g: _Builder) -> list[str]:
        """One ``[N, 1]`` tensor per column."""
        if self.packed is None:
            return self.names
        if len(self.names) == 1:
            return [self.packed]
        outputs = [g.fresh("column") for _ in self.names]
        ones = g.const([1] * len(self.names), np.int64, "split")
        g.nodes.append(
            helper.make_node("Split", [self.packed, ones], outputs, name=g.fresh("node_Split"), axis=1)
        )
        return outputs


def _columns_check(kind: str, tensor: str, names: Sequence[str]) -> dict[Key, _Check]:
    """The check ``kind`` of every column of an ``[N, len(names)]`` BOOL tensor."""
    return {(kind, name): _Check(tensor, i, len(names)) for i, name in enumerate(names)}


# --------------------------------------------------------------------------------------------------
# Per-kind blocks: numeric, categorical, datetime
# --------------------------------------------------------------------------------------------------
def _numeric(g: _Builder, columns: list[NumericState], inputs: _Inputs) -> _Kind:
    """Outliers → impute, for all numeric columns at once on an ``[N, M]`` block (scaled by the caller).

    Mirrors ``convert.to_number`` (NaN missing; ±inf and beyond float32 invalid, hence null), then
    ``_outlier_exprs`` and ``_feature_exprs``: flagged = below lower or above upper (never for null),
    clip / null by the serving action, fill the nulls; the piecewise-linear encodings of the filled values
    beside.
    """
    names = [c.name for c in columns]
    x = inputs.block(g)
    size = g.op("Abs", x)
    limit = g.const(convert.FLOAT32_MAX, np.float64)
    usable = g.op("LessOrEqual", size, limit)  # False for NaN
    checks = _columns_check("invalid", g.op("Greater", size, limit), names)  # also False for NaN

    rules = [c.outliers for c in columns]
    value = x
    keep = usable  # the value (clipped) is used; otherwise the column's fill
    if any(rule is not None for rule in rules):
        lower = [rule.lower if rule and rule.lower is not None else -np.inf for rule in rules]
        upper = [rule.upper if rule and rule.upper is not None else np.inf for rule in rules]
        outside = g.op(
            "Or",
            g.op("Less", x, g.row(lower, np.float64, "lower")),
            g.op("Greater", x, g.row(upper, np.float64, "upper")),
        )
        flagged = g.op("And", outside, usable)
        checks.update(_columns_check("outlier", flagged, names))
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
            keep = g.op("And", usable, g.op("Not", g.op("And", flagged, nulled)))
    filled = g.op("Where", keep, value, g.row([c.fill for c in columns], np.float64, "fill"))
    blocks = [_piecewise_linear(g, filled, columns)] if any(c.ple_edges for c in columns) else []
    return _Kind(
        values=[_Block(filled, [("numeric", name) for name in names], TensorProto.DOUBLE)],
        scales=[c.scale for c in columns],
        blocks=blocks,
        missing=_Block(g.op("Not", keep), [("missing", name) for name in names], TensorProto.BOOL),
        checks=checks,
    )


def _piecewise_linear(g: _Builder, filled: str, columns: list[NumericState]) -> _Block:
    """Every bin of every ``encode: ple`` column of the imputed ``[N, M]`` block, as
    :func:`~leanml.data.transform.ple_bins` defines them: ``clip((x - start) / width, low, high)``."""
    indices: list[int] = []
    keys: list[Key | None] = []
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
    clipped = g.op("Min", g.op("Max", share, low), g.row([b.high for b in bins], np.float64, "ple_high"))
    return _Block(clipped, keys, TensorProto.DOUBLE)


def _scaled_and_binned(
    g: _Builder, unscaled: list[_Block], scales: Sequence[ScaleState], bins: list[tuple[int, PleBin, Key]]
) -> _Block:
    """Linear scaling of every value and the piecewise-linear bins of the numeric ones, in one chain.

    Both are ``clip((x - a) / b, low, high)``: a scaled value is ``(x - offset) / divisor`` (``none``:
    ``(x - 0) / 1``) clipped to ``[-inf, inf]``, which changes nothing, a bin ``(x - start) / width``
    clipped to its ``[low, high]`` (:func:`_piecewise_linear`). The same float64 operations as apart,
    in one ``Gather`` and four nodes instead of eight. ``bins``: (column of the numeric block, which is
    the first of ``unscaled``, its bin, its key); only for ``none`` and the linear scalings.
    """
    width = len(scales)
    linear = [scale.method != "none" for scale in scales]
    x = g.gather_columns(g.concat([b.tensor for b in unscaled]), [*range(width), *(m for m, _, _ in bins)])
    starts = [s.offset if keep else 0.0 for s, keep in zip(scales, linear, strict=True)]
    widths = [s.divisor if keep else 1.0 for s, keep in zip(scales, linear, strict=True)]
    share = g.op(
        "Div",
        g.op("Sub", x, g.row([*starts, *(piece.start for _, piece, _ in bins)], np.float64, "start")),
        g.row([*widths, *(piece.width for _, piece, _ in bins)], np.float64, "width"),
    )
    low = g.row([-np.inf] * width + [piece.low for _, piece, _ in bins], np.float64, "low")
    high = g.row([np.inf] * width + [piece.high for _, piece, _ in bins], np.float64, "high")
    keys: list[Key | None] = [key for b in unscaled for key in b.keys] + [key for _, _, key in bins]
    return _Block(g.op("Min", g.op("Max", share, low), high), keys, TensorProto.DOUBLE)


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
    g: _Builder,
    columns: list[CategoricalState],
    null_values: Sequence[str],
    inputs: _Inputs,
    one_lookup: bool,
) -> _Kind:
    """One-hot with an infrequent column, for all categorical columns at once.

    Each column's text is mapped to its position in one shared one-hot space of G columns: each category
    to its own column, every infrequent category to the column's infrequent column, a null token (or an
    invalid value) to the position of the frozen fill, as ``fill_null(fill)`` does before encoding, and
    anything else to G, which ``OneHot`` encodes as all zeros (an unseen category). Beside the position,
    a status tells missing, invalid and unseen values apart, for the indicators and checks.

    With ``one_lookup`` (opset 20's ``StringConcat``), every text is prefixed with its column's number
    and one ``LabelEncoder`` maps all columns at once to ``position * 4 + status``: four nodes whatever
    the number of columns. Otherwise two ``LabelEncoder`` per column (position, status).
    """
    depth = sum(len(c.categories) + bool(c.infrequent) for c in columns)  # G
    positions: list[dict[str, int]] = []
    statuses: list[dict[str, int]] = []
    keys: list[Key | None] = []
    for column in columns:
        base = len(keys)
        position_of = {category: base + i for i, category in enumerate(column.categories)}
        keys += [("category", column.name, i) for i in range(len(column.categories))]
        if column.infrequent:
            position_of.update({category: len(keys) for category in column.infrequent})
            keys.append(("infrequent", column.name))
        status_of = dict.fromkeys(position_of, _KNOWN)
        # A null token is missing even if it is also spelled like a category (Polars checks nulls first).
        status_of.update(dict.fromkeys([*null_values, MISSING_STRING], _MISSING))
        status_of[INVALID_STRING] = _INVALID
        fill = position_of.get(column.fill, depth)
        position_of.update({text: fill for text, status in status_of.items() if status != _KNOWN})
        positions.append(position_of)
        statuses.append(status_of)
    if one_lookup:
        width = len(str(len(columns) - 1))  # a fixed width: no column's prefix is another's prefix + text
        prefixes = [f"{i:0{width}d}:" for i in range(len(columns))]
        codes = {
            prefix + text: position * _STATUSES + status_of[text]
            for prefix, position_of, status_of in zip(prefixes, positions, statuses, strict=True)
            for text, position in position_of.items()
        }
        keyed = g.op("StringConcat", g.row(prefixes, object, "column_prefix"), inputs.block(g))
        code = _label_encoder(g, keyed, codes, depth * _STATUSES + _UNSEEN)
        every_status = g.const(_STATUSES, np.int64, "statuses")
        position, status = g.op("Div", code, every_status), g.op("Mod", code, every_status)
    else:
        texts = inputs.columns(g)
        position = g.concat([_label_encoder(g, t, p, depth) for t, p in zip(texts, positions, strict=True)])
        status = g.concat([_label_encoder(g, t, s, _UNSEEN) for t, s in zip(texts, statuses, strict=True)])
    names = [c.name for c in columns]
    checks = _columns_check("unseen_category", g.op("Equal", status, g.const(_UNSEEN, np.int64)), names)
    checks.update(_columns_check("invalid", g.op("Equal", status, g.const(_INVALID, np.int64)), names))
    blocks: list[_Block] = []
    if keys:
        # A position outside [-G, G - 1] (here G itself: unseen, or a fill that is no category) gives
        # a row of zeros.
        hot = g.op(
            "OneHot",
            position,
            g.const(depth, np.int64, "depth"),
            g.const([0.0, 1.0], np.float32, "off_on"),
        )  # [N, C, G]; FLOAT, as ONNX Runtime has no DOUBLE OneHot (0 and 1 are exact either way)
        onehot = g.op("ReduceSum", hot, g.const([1], np.int64), keepdims=0)
        blocks.append(_Block(onehot, keys, TensorProto.FLOAT))
    missing = g.op("GreaterOrEqual", status, g.const(_MISSING, np.int64))  # missing or invalid: imputed
    return _Kind(
        values=[],
        scales=[],
        blocks=blocks,
        missing=_Block(missing, [("missing", name) for name in names], TensorProto.BOOL),
        checks=checks,
    )


def _label_encoder(g: _Builder, texts: str, mapping: Mapping[str, int], default: int) -> str:
    """INT64 of ``texts``' shape: each text looked up in ``mapping`` (else ``default``)."""
    return g.op(
        "LabelEncoder",
        texts,
        domain=ML_DOMAIN,
        keys_strings=list(mapping),
        values_int64s=list(mapping.values()),
        default_int64=default,
    )


def _datetime(g: _Builder, columns: list[DatetimeState], inputs: _Inputs) -> _Kind:
    """Epoch seconds and calendar parts, imputed, for all datetime columns at once (scaled by the caller).

    Mirrors Polars: ``seconds = µs / 1e6`` (float64), fill, then the moment ``round(seconds * 1e6)``
    (half to even, as ``Expr.round``) whose calendar parts :func:`_calendar` finds.
    """
    names = [c.name for c in columns]
    x = inputs.block(g)
    invalid = g.op("Equal", x, g.const(INVALID_INT64, np.int64))
    # MISSING_INT64 and INVALID_INT64 are the two smallest int64 values: one comparison finds both.
    null = g.op("LessOrEqual", x, g.const(INVALID_INT64, np.int64))
    micros = g.const(float(_MICROS_PER_SECOND), np.float64)
    seconds = g.op("Div", g.op("Cast", x, to=TensorProto.DOUBLE), micros)
    handled = g.op("Where", null, g.row([c.fill_epoch for c in columns], np.float64, "fill_epoch"), seconds)

    # Slots: the columns of the blocks an output may read, as (part, index of the datetime column).
    tensors, slots = [handled], [[("epoch", d) for d in range(len(columns))]]
    parts = sorted({out.part for c in columns for out in c.outputs if out.part != "epoch"})
    if parts:
        moment = g.op("Cast", g.op("Round", g.op("Mul", handled, micros)), to=TensorProto.INT64)
        for tensor, block_slots in _calendar(g, moment, parts, len(columns)):
            tensors.append(tensor)
            slots.append(block_slots)
    every_slot = [slot for block_slots in slots for slot in block_slots]
    reads = [every_slot.index((out.part, d)) for d, c in enumerate(columns) for out in c.outputs]
    outputs = [(("datetime", c.name, k), out.scale) for c in columns for k, out in enumerate(c.outputs)]
    if len(set(reads)) != len(reads):  # pragma: no cover - fitting lists each part of a column once
        raise DataError("a datetime column lists a calendar part twice; its features would clash")
    # Each slot feeds at most one output: the blocks are scaled as they are, and a slot no output reads
    # (a part another datetime column asked for) is left unscaled and unread.
    keys: list[Key | None] = [None] * len(every_slot)
    scales = [ScaleState(method="none")] * len(every_slot)
    for slot, (key, scale) in zip(reads, outputs, strict=True):
        keys[slot], scales[slot] = key, scale
    starts = itertools.accumulate([0, *map(len, slots)])
    values = [
        _Block(tensor, keys[start : start + len(block_slots)], TensorProto.DOUBLE)
        for tensor, block_slots, start in zip(tensors, slots, starts, strict=False)
    ]
    return _Kind(
        values=values,
        scales=scales,
        blocks=[],
        missing=_Block(null, [("missing", name) for name in names], TensorProto.BOOL),
        checks=_columns_check("invalid", invalid, names),
    )


def _calendar(g: _Builder, moment: str, parts: Sequence[str], width: int) -> list[tuple[str, list[Slot]]]:
    """The calendar ``parts`` (``year``, ``quarter``, ``month``, ``day``, ``dayofweek`` (Monday 0),
    ``dayofyear`` (from 1), ``hour``, ``minute``, ``second``) of int64 epoch microseconds ``[N, width]``
    (UTC, proleptic Gregorian): DOUBLE blocks ``[N, width * k]``, each with its slots ``(part, column)``.

    Floor division throughout (``Mod`` with ``fmod=0`` takes the divisor's sign, like Python), so
    1969-12-31 23:00 is hour 23 of a Wednesday, as in Polars. The date parts of a day are looked up in
    :func:`_calendar_table`, which holds one 400-year cycle (the day of the week is two arithmetic nodes
    instead of 146 KB of table): one ``Gather`` instead of some thirty
    arithmetic nodes, each about a microsecond at batch 1. The time parts are ``(µs of the day // unit)
    % modulus``, every part in the same two nodes.
    """
    found: list[tuple[str, list[Slot]]] = []
    dates = [part for part in parts if part in _DATE_PARTS and part != "dayofweek"]
    if dates or "dayofweek" in parts:
        cycle = g.op("Mod", moment, g.const(_CYCLE_MICROS, np.int64), fmod=0)  # in [0, cycle): floor
        day = g.op("Div", cycle, g.const(_MICROS_PER_DAY, np.int64))  # cycle >= 0: truncation floors
    if "dayofweek" in parts:  # two nodes rather than 146 KB of table: 1970-01-01 was a Thursday (3)
        weekday = g.op("Mod", g.op("Add", day, g.const(3, np.int64)), g.const(7, np.int64), fmod=0)
        found.append((g.op("Cast", weekday, to=TensorProto.DOUBLE), [("dayofweek", d) for d in range(width)]))
    if dates:
        table = g.const(_calendar_table(dates), None, "calendar")
        values = g.op("Cast", g.op("Gather", table, day), to=TensorProto.DOUBLE)  # [N, width, k]
        if "year" in dates:
            # The table's years are those of the cycle from 1970: add 400 per cycle since, floor(moment /
            # cycle), as truncating Div minus one where the truncated remainder is negative (moment - cycle
            # would overflow within 400 years of int64's smallest value).
            length = g.const(_CYCLE_MICROS, np.int64)
            below = g.op("Less", g.op("Mod", moment, length, fmod=1), g.const(0, np.int64))
            cycles = g.op("Sub", g.op("Div", moment, length), g.op("Cast", below, to=TensorProto.INT64))
            years = g.op("Unsqueeze", g.op("Cast", cycles, to=TensorProto.DOUBLE), g.const([2], np.int64))
            per_cycle = [400.0 if part == "year" else 0.0 for part in dates]
            values = g.op("Add", values, g.op("Mul", years, g.const([[per_cycle]], np.float64, "per_cycle")))
        flat = g.op("Reshape", values, g.const([0, -1], np.int64))
        found.append((flat, [(part, d) for d in range(width) for part in dates]))
    times = [part for part in parts if part in _TIME_PARTS]
    if times:
        micros = g.op("Mod", moment, g.const(_MICROS_PER_DAY, np.int64), fmod=0)  # of the day: >= 0
        shape = (1, len(times)) if width == 1 else (1, 1, len(times))
        if width > 1:  # [N, width, 1], against every unit at once
            micros = g.op("Unsqueeze", micros, g.const([2], np.int64))
        units = np.array([_TIME_PARTS[part][0] for part in times]).reshape(shape)
        count = g.op("Div", micros, g.const(units, np.int64, "time_unit"))
        moduli = [_TIME_PARTS[part][1] for part in times]
        if moduli != [24] * len(times):  # the hour (µs of the day // 1 h) is below 24 already
            count = g.op("Mod", count, g.const(np.reshape(moduli, shape), np.int64, "time_modulus"), fmod=0)
        if width > 1:
            count = g.op("Reshape", count, g.const([0, -1], np.int64))
        found.append(
            (g.op("Cast", count, to=TensorProto.DOUBLE), [(part, d) for d in range(width) for part in times])
        )
    return found


def _calendar_table(parts: Sequence[str]) -> np.ndarray:
    """``[146097, len(parts)]``: the date ``parts`` of each day of the 400-year cycle from 1970-01-01.

    Row ``t`` is day ``t`` after 1970-01-01, and day ``n`` (any integer) reads row ``n mod 146097``: the
    Gregorian calendar repeats every 146,097 days, a whole number of weeks too, except the year, which is
    ``400 * (n div 146097)`` more than the row's. The smallest unsigned integers that hold the values.
    """
    days = np.arange(_CYCLE_DAYS).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    years = days.astype("datetime64[Y]")
    month = months.astype(np.int64) % 12 + 1
    values = {
        "year": years.astype(np.int64) + 1970,
        "quarter": (month - 1) // 3 + 1,
        "month": month,
        "day": (days - months.astype("datetime64[D]")).astype(np.int64) + 1,
        "dayofyear": (days - years.astype("datetime64[D]")).astype(np.int64) + 1,
    }
    table = np.stack([values[part] for part in parts], axis=1)
    return table.astype(np.uint8 if table.max() <= np.iinfo(np.uint8).max else np.uint16)


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


def packed_inputs(state: PreprocessState) -> list[PackedInput]:
    """The inputs of the packed graph: one ``[N, k]`` tensor per kind of column, columns in state order.

    Names are ``numeric``, ``categorical`` and ``datetime``, with ``_`` appended while a column or an
    output already has the name.
    """
    taken = {c.name for c in state.columns} | set(OUTPUT_NAMES)
    packed = []
    for kind in _INPUT_TYPES:
        columns = [c.name for c in state.columns if c.type == kind]
        if columns:
            name = kind
            while name in taken:
                name += "_"
            packed.append(PackedInput(name, kind, columns))
    return packed


def pack(feed: Mapping[str, np.ndarray], packing: Sequence[PackedInput]) -> dict[str, np.ndarray]:
    """A per-column feed (:func:`graph_inputs`) as the packed graph's feed."""
    packed = {}
    for entry in packing:
        parts = [feed[name] for name in entry.columns]
        packed[entry.name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    return packed


def compile_preprocessing(
    state: PreprocessState, opset: int = DEFAULT_OPSET, ml_opset: int = ML_OPSET, packed: bool = False
) -> onnx.ModelProto:
    """The frozen preprocessing (``transform`` in serve mode) as an ONNX model.

    ``opset`` is the ``ai.onnx`` opset (13 or later); ``ml_opset`` the ``ai.onnx.ml`` one, for
    ``LabelEncoder`` (its string → int64 attributes exist from version 2 on).

    Inputs: one ``[N, 1]`` tensor per column of ``state.columns`` (see the module docstring for types
    and missing codes); with ``packed``, one ``[N, k]`` tensor per kind of column instead
    (:func:`packed_inputs`), the same values side by side, which saves ONNX Runtime's cost per input
    (about 1.75 µs per numeric and 3.6 µs per text input at batch 1; ``bench/ort_inputs.py``).
    Outputs: ``features`` ``[N, F]`` FLOAT, ``problems`` ``[N, K]`` BOOL (:func:`problem_names`) and
    ``flags`` ``[N, J]`` BOOL (:func:`flag_names`).

    Each kind of column is one block of nodes over all its columns at once, and only the nodes an output
    reads are kept: at batch 1 a run costs about a microsecond per node, whatever the node does.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"the serving graph needs ONNX opset {MIN_OPSET} or later, got {opset}")
    _check_names(state)
    g = _Builder("pre/")
    numeric = [c for c in state.columns if isinstance(c, NumericState)]
    categorical = [c for c in state.columns if isinstance(c, CategoricalState)]
    datetimes = [c for c in state.columns if isinstance(c, DatetimeState)]
    entries = packed_inputs(state) if packed else []
    packing = {entry.kind: entry.name for entry in entries}

    def inputs(columns: Sequence[NumericState | CategoricalState | DatetimeState]) -> _Inputs:
        return _Inputs([c.name for c in columns], packing.get(columns[0].type))

    one_lookup = opset >= STRING_CONCAT_OPSET
    kinds = [
        *([_numeric(g, numeric, inputs(numeric))] if numeric else []),
        *(
            [_categorical(g, categorical, state.null_values, inputs(categorical), one_lookup)]
            if categorical
            else []
        ),
        *([_datetime(g, datetimes, inputs(datetimes))] if datetimes else []),
    ]
    checks = {key: check for kind in kinds for key, check in kind.checks.items()}

    # Numeric and datetime values are scaled together; then every block that holds a feature is cast to
    # FLOAT (the model's input type), side by side, and one Gather puts the features in the state's order.
    unscaled = [block for kind in kinds for block in kind.values]
    blocks = [kind_block for kind in kinds for kind_block in kind.blocks]
    scales = [scale for kind in kinds for scale in kind.scales]
    bins = [
        (m, piece, ("ple", c.name, t))
        for m, c in enumerate(numeric)
        for t, piece in enumerate(ple_bins(c.ple_edges))
    ]
    if bins and not {scale.method for scale in scales} & {"robust", "quantile"}:
        # The numeric block (first of the values) gives the bins; its own bins block is left unread.
        blocks = [block for block in blocks if not any(key and key[0] == "ple" for key in block.keys)]
        blocks.append(_scaled_and_binned(g, unscaled, scales, bins))
    elif unscaled:
        scaled = _scale(g, g.concat([b.tensor for b in unscaled]), scales)
        blocks.append(_Block(scaled, [key for b in unscaled for key in b.keys], TensorProto.DOUBLE))
    blocks += [kind.missing for kind in kinds]
    matrix, order = _feature_order(g, blocks, _feature_keys(state))
    if len(order) != len(state.feature_names):  # pragma: no cover - a guard for future state changes
        raise AssertionError("the graph's features do not line up with state.feature_names")
    g.gather_columns(matrix, order, out=FEATURES)

    problems = [_check_key(name) for name in problem_names(state)]
    flags = [("outlier", name) for name in flag_names(state)]
    # The packed graph leaves out a check output with no columns (PipelineRuntime returns it empty): at
    # batch 1 its node and its copy out cost more than a microsecond of a call that carries nothing.
    widths = {PROBLEMS: len(problems), FLAGS: len(flags)}
    checked = [name for name, width in widths.items() if width or not packed]
    if PROBLEMS in checked:
        _bool_output(g, PROBLEMS, problems, checks, like=FEATURES)
    if FLAGS in checked:
        _bool_output(g, FLAGS, flags, checks, like=PROBLEMS if problems else FEATURES)

    nodes, initializers = g.used([FEATURES, *checked])
    graph = helper.make_graph(
        nodes,
        "leanml_preprocessing",
        [
            helper.make_tensor_value_info(entry.name, _INPUT_TYPES[entry.kind], [_BATCH, len(entry.columns)])
            for entry in entries
        ]
        if packed
        else [
            helper.make_tensor_value_info(c.name, _INPUT_TYPES[c.type], [_BATCH, 1]) for c in state.columns
        ],
        [
            helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [_BATCH, len(state.feature_names)]),
            *(
                helper.make_tensor_value_info(name, TensorProto.BOOL, [_BATCH, widths[name]])
                for name in checked
            ),
        ],
        initializer=initializers,
    )
    imports = [helper.make_opsetid("", opset), helper.make_opsetid(ML_DOMAIN, ml_opset)]
    model = helper.make_model(graph, opset_imports=imports, producer_name="leanml")
    model.ir_version = helper.find_min_ir_version_for(imports)
    return model


def _feature_order(g: _Builder, blocks: list[_Block], features: list[Key]) -> tuple[str, list[int]]:
    """A FLOAT matrix of the blocks that hold a feature, and the column of each feature in it.

    Blocks of one type are joined first, so each type is cast to FLOAT once; a block no feature reads is
    left out (and its nodes are dropped with it).
    """
    wanted = set(features)
    by_type: dict[int, list[_Block]] = {}
    for block in blocks:
        if wanted.intersection(block.keys):
            by_type.setdefault(block.dtype, []).append(block)
    parts: list[str] = []
    keys: list[Key | None] = []
    for dtype, group in by_type.items():
        joined = g.concat([b.tensor for b in group])
        parts.append(joined if dtype == TensorProto.FLOAT else g.op("Cast", joined, to=TensorProto.FLOAT))
        keys += [key for b in group for key in b.keys]
    position = {key: i for i, key in enumerate(keys) if key is not None}
    return g.concat(parts), [position[key] for key in features]


def _check_key(problem: str) -> Key:
    kind, column = problem.split(":", 1)
    return (kind, column)


def _bool_output(g: _Builder, out: str, keys: list[Key], sources: dict[Key, _Check], like: str) -> None:
    """``out`` ``[N, len(keys)]``: the check of each key, gathered from the blocks that computed it.

    With no keys, ``[N, 0]``: no columns of ``like``, an ``[N, k]`` tensor computed anyway (``problems``,
    or else ``features``, then cast to BOOL).
    """
    if not keys:
        if like == PROBLEMS:
            g.gather_columns(like, [], out=out)
        else:
            g.op("Cast", g.gather_columns(like, []), to=TensorProto.BOOL, out=out)
        return
    widths = {sources[key].tensor: sources[key].width for key in keys}  # each check tensor once, in order
    starts = dict(zip(widths, itertools.accumulate([0, *widths.values()]), strict=False))
    indices = [starts[sources[key].tensor] + sources[key].index for key in keys]
    if indices != list(range(sum(widths.values()))):
        g.gather_columns(g.concat(list(widths)), indices, out=out)
    elif len(widths) > 1:  # the checks are in order already: no Gather
        g.op("Concat", *widths, axis=1, out=out)
    else:
        g.op("Identity", *widths, out=out)


# --------------------------------------------------------------------------------------------------
# Public: the whole pipeline — preprocessing, model, output head
# --------------------------------------------------------------------------------------------------
def build_pipeline(
    state: PreprocessState,
    model: onnx.ModelProto | bytes | str | Path,
    spec: Mapping[str, Any],
    packed: bool = False,
) -> onnx.ModelProto:
    """One graph from raw columns to answers: :func:`compile_preprocessing` → the model → the head.

    ``model`` is the exported network (input ``features``, output ``output``; fp32, or int8 from
    ``onnxruntime.quantization.quantize_dynamic``): a ``ModelProto``, its bytes or a path. The model's
    names are prefixed with ``model/``. Outputs: classification → ``probabilities`` ``[N, C]`` FLOAT
    (binary: ``[1 - p, p]`` with ``p = sigmoid(logit)``; multiclass: softmax) and ``label_index`` ``[N]``
    INT64 (binary: ``p >= 0.5``, as :func:`leanml.metrics.predicted_classes`; multiclass: argmax);
    regression → ``prediction`` ``[N]`` FLOAT (the network already returns the target's units); then
    ``problems`` and ``flags``, passed through from the preprocessing, and ``features``, the model's
    input (for drift monitoring). ``packed``: the preprocessing takes :func:`packed_inputs` (the graph
    the server runs; ``pipeline.onnx`` keeps one input per column).
    """
    network = _load_model(model)
    imports = {entry.domain: entry.version for entry in network.opset_import}
    opset = imports.get("", imports.get("ai.onnx", DEFAULT_OPSET))
    ml_opset = imports.get(ML_DOMAIN, ML_OPSET)
    preprocessing = compile_preprocessing(state, opset=opset, ml_opset=ml_opset, packed=packed)
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

    def first_column() -> str:
        if n_outputs == 1:  # the whole tensor: no node (each costs about a microsecond at batch 1)
            return logits
        return g.op("Slice", logits, g.const([0], np.int64), g.const([1], np.int64), g.const([1], np.int64))

    if task == "binary":
        p = g.op("Sigmoid", first_column())
        g.op("Concat", g.op("Sub", g.const(1.0, np.float32), p), p, axis=1, out=PROBABILITIES)
        # p >= 0.5 exactly when p >= 1 - p in float32 (1 - p rounds to at least 0.5 when p < 0.5); the last
        # index wins a tie: one node for GreaterOrEqual, Cast and Squeeze.
        g.op("ArgMax", PROBABILITIES, axis=1, keepdims=0, select_last_index=1, out=LABEL_INDEX)
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
        g.op("Squeeze", first_column(), g.const([1], np.int64), out=PREDICTION)
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
