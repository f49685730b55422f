"""Typed configuration: one YAML file describes every stage.

The models below are the contract of the ``leanml.yaml`` file (SPEC §2). Loading validates everything
before any work starts and turns pydantic's errors into one line per problem that names the key path and
what is allowed, e.g. ``columns.age.scale: 'zscore' is not one of standard, minmax, none``.

Relative paths in the file (``data.train``, ``data.rejects``, ``workdir``) are resolved against the folder
that holds the config file, so a config can be run from anywhere.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from leanml.errors import ConfigError

DATETIME_PARTS = ("year", "quarter", "month", "day", "dayofweek", "dayofyear", "hour", "minute", "second")
DEFAULT_NULL_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"]


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(StrictModel):
    """How rows are divided into train / validation / test before anything is fitted."""

    validation: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0
    stratify: bool = True
    by: str | None = None
    """Name of a datetime column: the latest rows become validation and test (a time split)."""

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> SplitConfig:
        if self.validation + self.test >= 1.0:
            raise ValueError(
                f"validation + test must be below 1 so rows are left to train on "
                f"(got {self.validation} + {self.test})"
            )
        return self


class DataConfig(StrictModel):
    """Where the data is and how it is read and split."""

    train: str
    """A CSV (.csv, .csv.gz, .zip), Parquet or JSON-lines file, or a glob of shards of one format."""
    null_values: list[str] = Field(default_factory=lambda: list(DEFAULT_NULL_VALUES))
    split: SplitConfig = Field(default_factory=SplitConfig)
    dedupe: bool = False
    """Remove exact duplicate rows (all columns equal) before splitting."""
    rejects: str | None = None
    """Write every row dropped while preparing, with its reason, to this Parquet file."""


class OutlierConfig(StrictModel):
    """Outlier rule of a numeric column.

    ``range`` uses ``min``/``max``; ``iqr`` flags values outside [q1 − k·IQR, q3 + k·IQR]; ``zscore`` flags
    values more than ``k`` population standard deviations from the mean. Bounds come from the training split.
    ``action`` says what training does with a flagged value; ``serving`` says what prediction and serving
    do with a row that training would have dropped (only meaningful with ``action: drop``).
    """

    method: Literal["range", "iqr", "zscore"]
    k: float = Field(3.0, gt=0)
    min: float | None = None
    max: float | None = None
    action: Literal["drop", "clip", "null"] = "clip"
    serving: Literal["clip", "flag", "reject"] = "clip"

    @model_validator(mode="after")
    def _range_needs_bounds(self) -> OutlierConfig:
        if self.method == "range" and self.min is None and self.max is None:
            raise ValueError("method 'range' needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class NumericColumn(StrictModel):
    """A number: outliers, then imputation, then scaling."""

    type: Literal["numeric"]
    impute: Literal["mean", "median", "most_frequent", "constant"] = "median"
    fill_value: float | None = None
    missing_indicator: bool = False
    scale: Literal["standard", "minmax", "none"] = "standard"
    outliers: OutlierConfig | None = None

    @model_validator(mode="after")
    def _constant_needs_value(self) -> NumericColumn:
        if self.impute == "constant" and self.fill_value is None:
            raise ValueError("impute 'constant' needs 'fill_value'")
        return self


class CategoricalColumn(StrictModel):
    """A category: imputation, then one-hot encoding with rare categories grouped."""

    type: Literal["categorical"]
    impute: Literal["most_frequent", "constant"] = "constant"
    fill_value: str = "__missing__"
    missing_indicator: bool = False
    encode: Literal["onehot"] = "onehot"
    min_frequency: Annotated[int, Field(ge=1)] | Annotated[float, Field(gt=0, lt=1)] | None = None
    """Categories seen fewer times (a count, or a fraction of training rows) share one infrequent column."""
    handle_unknown: Literal["ignore", "error"] = "ignore"
    """``ignore``: an unseen category encodes as all zeros; ``error``: the row is rejected."""


class DatetimeColumn(StrictModel):
    """A date or datetime: epoch seconds and chosen calendar parts, each imputed and scaled."""

    type: Literal["datetime"]
    format: str | None = None
    """strptime format for text input; inferred from the data when omitted."""
    parts: list[Literal[DATETIME_PARTS]] = Field(default_factory=lambda: ["hour", "dayofweek", "month"])  # type: ignore[valid-type]
    epoch: bool = True
    impute: Literal["mean", "median", "most_frequent"] = "median"
    missing_indicator: bool = False
    scale: Literal["standard", "minmax", "none"] = "standard"

    @model_validator(mode="after")
    def _has_an_output(self) -> DatetimeColumn:
        if not self.epoch and not self.parts:
            raise ValueError("a datetime column needs 'epoch: true' or at least one of 'parts'")
        return self


class IgnoreColumn(StrictModel):
    """A column the model never sees (ids, free text)."""

    type: Literal["ignore"]


ColumnSpec = Annotated[
    Union[NumericColumn, CategoricalColumn, DatetimeColumn, IgnoreColumn],  # noqa: UP007
    Field(discriminator="type"),
]
COLUMN_TYPES = ("numeric", "categorical", "datetime", "ignore")
Task = Literal["binary", "multiclass", "regression", "auto"]


class Config(StrictModel):
    """The whole ``leanml.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataConfig
    target: str
    task: Task = "auto"
    columns: dict[str, ColumnSpec]
    workdir: str = "runs"
    """Stage outputs go to ``WORKDIR/NAME/STAGE``."""

    @model_validator(mode="after")
    def _target_is_not_a_feature(self) -> Config:
        if self.target in self.columns:
            raise ValueError(f"the target '{self.target}' must not also be listed under 'columns'")
        if not any(spec.type != "ignore" for spec in self.columns.values()):
            raise ValueError("no feature columns: every column is 'ignore'")
        by = self.data.split.by
        if by is not None and by != self.target:
            spec = self.columns.get(by)
            if spec is None or spec.type != "datetime":
                raise ValueError(f"data.split.by names '{by}', which must be a column of type datetime")
        return self

    def stage_dir(self, stage: str) -> Path:
        """The folder a stage writes its outputs to."""
        return Path(self.workdir) / self.name / stage


def load_config(path: str | Path) -> Config:
    """Read, validate and resolve a YAML config file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config '{path}': {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"'{path}' is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"'{path}' must hold a mapping of sections (name, data, target, columns, ...)")
    return parse_config(raw, base_dir=path.resolve().parent)


def parse_config(raw: dict[str, Any], base_dir: Path | None = None) -> Config:
    """Validate a config mapping; relative paths are resolved against ``base_dir`` when given."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe_error(err) for err in exc.errors()]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None
    if base_dir is None:
        return config
    data = config.data.model_copy(
        update={
            "train": _resolve(config.data.train, base_dir),
            "rejects": _resolve(config.data.rejects, base_dir) if config.data.rejects else None,
        }
    )
    return config.model_copy(update={"data": data, "workdir": _resolve(config.workdir, base_dir)})


def _resolve(path: str, base_dir: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base_dir / p)


def _describe_error(err: Any) -> str:
    full_loc = list(err["loc"])
    loc = list(full_loc)
    # Discriminated unions add the tag to the path (columns.age.numeric.scale); users never wrote it.
    if len(loc) > 2 and loc[0] == "columns" and loc[2] in COLUMN_TYPES:
        del loc[2]
    path = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    given = err.get("input")
    if kind == "literal_error":
        allowed = ", ".join(re.findall(r"'([^']*)'", err["ctx"]["expected"]))
        return f"{path}: {given!r} is not one of {allowed}"
    if kind == "union_tag_invalid":
        return f"{path}.type: {err['ctx']['tag']!r} is not one of {', '.join(COLUMN_TYPES)}"
    if kind == "union_tag_not_found":
        return f"{path}.type: required, one of {', '.join(COLUMN_TYPES)}"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(full_loc[:-1])
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"{path}: unknown key{hint}"
    if kind == "missing":
        return f"{path}: required"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{path}: {message} (got {given!r})" if not isinstance(given, dict) else f"{path}: {message}"


def _allowed_keys(loc: list[Any]) -> list[str]:
    """The field names of the config section at ``loc`` (for 'unknown key' messages)."""
    model: Any = Config
    for part in loc:
        model = _section_type(model, part)
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _section_type(model: Any, part: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel):
        field = model.model_fields.get(str(part))
        return None if field is None else _unwrap(field.annotation)
    if typing.get_origin(model) is dict:
        return _unwrap(typing.get_args(model)[1])
    if isinstance(part, str) and part in COLUMN_TYPES:
        return {
            "numeric": NumericColumn,
            "categorical": CategoricalColumn,
            "datetime": DatetimeColumn,
            "ignore": IgnoreColumn,
        }[part]
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Optional[...] and Annotated[...] from a field annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation
