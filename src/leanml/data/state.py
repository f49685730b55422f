"""The frozen preprocessing state: every statistic ``transform`` needs, as plain JSON data.

A :class:`PreprocessState` holds no code and nothing pickled. It is written to ``preprocess.json`` by the
prepare stage and travels inside every bundle; loading it checks the format version so that a state from
a newer leanml is refused with a clear message instead of being misread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leanml._version import __version__
from leanml.errors import StateError, require_format_version
from leanml.files import write_json

STATE_FORMAT_VERSION = 1
INFREQUENT = "__infrequent__"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScaleState(_Frozen):
    """A frozen scaling: ``(x - offset) / divisor`` (standard, min-max, identity); ``robust`` then softly
    clips ``z`` to ``z / sqrt(1 + (z / 3)²)``; ``quantile`` maps ``x`` through ``knots`` (the fitted
    quantiles, strictly increasing) to standard-normal scores: ``scores[i]`` at ``knots[i]``, linear
    between ``after[i]`` just above a knot and ``before[i + 1]`` just below the next (they differ from
    ``scores`` where several quantiles share a value), constant beyond the first and last knot."""

    method: Literal["standard", "minmax", "robust", "quantile", "none"]
    offset: float = 0.0
    divisor: float = 1.0
    knots: list[float] = Field(default_factory=list)
    scores: list[float] = Field(default_factory=list)
    before: list[float] = Field(default_factory=list)
    after: list[float] = Field(default_factory=list)


class OutlierState(_Frozen):
    """Frozen outlier bounds and what training and serving do with a value outside them."""

    method: Literal["range", "iqr", "zscore"]
    lower: float | None
    upper: float | None
    action: Literal["drop", "clip", "null"]
    serving: Literal["clip", "flag", "reject"]


class NumericState(_Frozen):
    """A numeric input column."""

    type: Literal["numeric"] = "numeric"
    name: str
    impute: str
    fill: float
    indicator: bool
    scale: ScaleState
    ple_edges: list[float] = Field(default_factory=list)
    """Bin edges of the piecewise-linear encoding (``encode: ple``), strictly increasing; empty: none. The
    features ``NAME__ple{t}`` (one per bin, beside the scaled value) are given by
    :func:`leanml.data.transform.ple_bins`."""
    outliers: OutlierState | None = None
    observed_min: float
    observed_max: float
    thousands: str | None = None
    """Thousands separator of numbers written as text (see ``leanml.data.convert.NumberOptions``)."""
    decimal: str = "."
    invalid: Literal["null", "reject"] = "reject"
    """A value that is not a number: ``null`` (imputed) or ``reject`` (the row is rejected)."""


class CategoricalState(_Frozen):
    """A categorical input column, one-hot encoded."""

    type: Literal["categorical"] = "categorical"
    name: str
    impute: str
    fill: str
    indicator: bool
    categories: list[str]
    """Categories with their own output column, sorted."""
    infrequent: list[str] = Field(default_factory=list)
    """Categories seen in training below ``min_frequency``; they share the ``=__infrequent__`` column."""
    handle_unknown: Literal["ignore", "error"]
    strip: bool = False
    """Whitespace around values is removed before they are compared with the categories."""
    boolean: bool = False
    """Values are booleans mapped to ``true`` / ``false`` (see ``leanml.data.convert.CategoryOptions``)."""
    invalid: Literal["null", "reject"] = "reject"


class DatetimeOutput(_Frozen):
    """One output of a datetime column: ``epoch`` seconds or a calendar part, with its scaling."""

    part: str
    scale: ScaleState


class DatetimeState(_Frozen):
    """A datetime input column."""

    type: Literal["datetime"] = "datetime"
    name: str
    format: str | None
    """The first of ``formats`` (states written before ``formats`` existed have only this)."""
    impute: str
    fill_epoch: float
    indicator: bool
    outputs: list[DatetimeOutput]
    observed_min: float
    observed_max: float
    formats: list[str] = Field(default_factory=list)
    """Formats of text input, tried in order; read with ``leanml.data.convert.datetime_formats``."""
    invalid: Literal["null", "reject"] = "reject"


ColumnState = Annotated[Union[NumericState, CategoricalState, DatetimeState], Field(discriminator="type")]  # noqa: UP007


class TargetState(_Frozen):
    """The target: its task and, for classification, the classes in output order."""

    name: str
    task: Literal["binary", "multiclass", "regression"]
    classes: list[str] = Field(default_factory=list)
    """Canonical text of each class (how the data spells it); the model predicts indices into this list."""
    labels: list[Any] = Field(default_factory=list)
    """The classes as values for output: numbers, booleans or text."""
    strip: bool = False
    """Whitespace around text labels is removed (``' <=50K'`` is the class ``'<=50K'``)."""


class PreprocessState(_Frozen):
    """Everything needed to turn raw rows into model inputs, identically at training and serving time."""

    format_version: int = STATE_FORMAT_VERSION
    leanml_version: str = __version__
    null_values: list[str]
    target: TargetState
    columns: list[ColumnState]
    ignored: list[str] = Field(default_factory=list)
    training_rows: int

    @property
    def feature_names(self) -> list[str]:
        """Names of the model's input features, in order."""
        names: list[str] = []
        for column in self.columns:
            names.extend(feature_names(column))
        return names

    def save(self, path: str | Path) -> None:
        """Write the state as JSON, atomically."""
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> PreprocessState:
        """Read a state file written by :meth:`save`; refuse unknown or newer formats."""
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StateError(f"cannot read preprocessing state '{path}': {exc}") from None
        return cls.from_dict(payload, source=str(path))

    @classmethod
    def from_dict(cls, payload: Any, source: str = "preprocessing state") -> PreprocessState:
        """Validate a state mapping (as stored in ``preprocess.json``)."""
        if not isinstance(payload, dict):
            raise StateError(f"{source}: expected a JSON object")
        require_format_version(payload, STATE_FORMAT_VERSION, source)
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise StateError(f"{source}: invalid at {where}: {first['msg']}") from None


def feature_names(column: NumericState | CategoricalState | DatetimeState) -> list[str]:
    """The output feature names of one input column."""
    name = column.name
    if isinstance(column, NumericState):
        names = [name, *(f"{name}__ple{t}" for t in range(len(column.ple_edges) - 1))]
    elif isinstance(column, CategoricalState):
        names = [f"{name}={c}" for c in column.categories]
        if column.infrequent:
            names.append(f"{name}={INFREQUENT}")
    else:
        names = [f"{name}__{out.part}" for out in column.outputs]
    if column.indicator:
        names.append(f"{name}__missing")
    return names
