"""Typed configuration: one YAML file describes every stage.

The models below are the contract of the ``leanml.yaml`` file (documented in ``docs/config.md``).
Loading validates everything before any work starts and turns pydantic's errors into one line per problem
that names the key path and what is allowed, e.g.
``columns.age.scale: 'zscore' is not one of standard, minmax, robust, quantile, none``.

Relative paths in the file (``data.train``, ``data.rejects``, ``workdir``, ``store``) are resolved
against the folder that holds the config file, so a config can be run from anywhere.
"""

from __future__ import annotations

import builtins
import codecs
import copy
import hashlib
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from leanml.errors import ConfigError

DATETIME_PARTS = ("year", "quarter", "month", "day", "dayofweek", "dayofyear", "hour", "minute", "second")
DEFAULT_NULL_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"]
InvalidPolicy = Literal["null", "reject"]
"""What preparing, predicting and serving do with a value that cannot be read as its column's type:
``null`` treats it as missing (imputed, and counted as invalid), ``reject`` drops (prepare) or rejects
(predict, serve) its row with the reason ``invalid:COLUMN``."""


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
    """Remove duplicate rows before splitting: rows equal in the target and every column of a type other
    than ``ignore`` (an index or id column does not make a row unique)."""
    rejects: str | None = None
    """Write every row dropped while preparing, with its reason, to this Parquet file."""
    separator: str | None = None
    """CSV field separator (one character: ``;``, ``"\\t"``, ...); ``null``: sniffed from the first lines."""
    encoding: str = "utf-8"
    """Text encoding of CSV input (``utf-8``, ``latin-1``, ``cp1252``, any Python codec name)."""
    max_invalid: float = Field(0.01, ge=0.0, le=1.0)
    """Prepare fails when a larger share of a column's rows holds values that cannot be read as its type."""

    @field_validator("separator")
    @classmethod
    def _one_character(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError("must be one character, e.g. ';' or '\\t'")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError("unknown encoding; use e.g. utf-8, latin-1 or cp1252") from None
        return value


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
    scale: Literal["standard", "minmax", "robust", "quantile", "none"] = "standard"
    """``robust``: centred on the median, divided by the IQR, then softly clipped to about ±3;
    ``quantile``: mapped through the fitted quantiles to a standard normal (see docs/config.md)."""
    encode: Literal["none", "ple"] = "none"
    """``ple``: piecewise-linear encoding over ``bins`` quantile bins (Gorishniy et al., 2022), beside the
    scaled value: features ``NAME__ple0`` … ``NAME__ple{bins-1}`` (fewer where quantiles tie)."""
    bins: int = Field(16, ge=2, le=256)
    """Bins of ``encode: ple`` (ignored otherwise, so a dumped config reads back)."""
    outliers: OutlierConfig | None = None
    thousands: Literal[",", ".", " ", "'", "_", "\u00a0", "\u202f"] | None = None
    """Thousands separator of numbers written as text (``1,234``); digits must be grouped by three."""
    decimal: Literal[".", ","] = "."
    """Decimal mark of numbers written as text (``1,5`` with ``decimal: ','``)."""
    invalid: InvalidPolicy = "reject"

    @model_validator(mode="after")
    def _constant_needs_value(self) -> NumericColumn:
        if self.impute == "constant" and self.fill_value is None:
            raise ValueError("impute 'constant' needs 'fill_value'")
        if self.thousands is not None and self.thousands == self.decimal:
            raise ValueError(f"thousands and decimal are both {self.decimal!r}")
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
    strip: bool = False
    """Remove whitespace around values, so ``' State-gov'`` and ``'State-gov'`` are one category."""
    boolean: bool = False
    """The column holds booleans: true/t/yes/y/1/on (any case) and JSON true are the category ``true``,
    false/f/no/n/0/off and JSON false ``false``; anything else is invalid."""
    invalid: InvalidPolicy = "reject"


class DatetimeColumn(StrictModel):
    """A date or datetime: epoch seconds and chosen calendar parts, each imputed and scaled."""

    type: Literal["datetime"]
    format: str | None = None
    """One format for text input (see ``formats``)."""
    formats: list[str] | None = Field(None, min_length=1)
    """Formats of text input, tried in order (the first that reads a value wins); inferred from the
    training rows when neither this nor ``format`` is given."""
    invalid: InvalidPolicy = "reject"
    parts: list[Literal[DATETIME_PARTS]] = Field(default_factory=lambda: ["hour", "dayofweek", "month"])  # type: ignore[valid-type]
    epoch: bool = True
    impute: Literal["mean", "median", "most_frequent"] = "median"
    missing_indicator: bool = False
    scale: Literal["standard", "minmax", "robust", "quantile", "none"] = "standard"

    @model_validator(mode="after")
    def _has_an_output(self) -> DatetimeColumn:
        if not self.epoch and not self.parts:
            raise ValueError("a datetime column needs 'epoch: true' or at least one of 'parts'")
        if self.format is not None and self.formats is not None:
            raise ValueError("give 'format' or 'formats', not both")
        from leanml.data.convert import compile_format  # the parser owns the directives it supports

        for fmt in [self.format] if self.format else self.formats or []:
            compile_format(fmt)
        return self


class IgnoreColumn(StrictModel):
    """A column the model never sees (ids, free text)."""

    type: Literal["ignore"]


ColumnSpec = Annotated[
    Union[NumericColumn, CategoricalColumn, DatetimeColumn, IgnoreColumn],  # noqa: UP007
    Field(discriminator="type"),
]
COLUMN_TYPES = ("numeric", "categorical", "datetime", "ignore")
PREPARE_SECTIONS = ("data", "target", "task", "columns")
"""The sections the prepare stage's outputs depend on."""
Task = Literal["binary", "multiclass", "regression", "auto"]
METRICS = ("accuracy", "f1", "roc_auc", "log_loss", "rmse", "mae", "r2", "loss")


class ModelConfig(StrictModel):
    """The network. ``linear`` uses no hidden layers; ``resmlp`` is the teacher-sized one; ``tabm`` is an
    ensemble of ``members`` MLPs sharing their hidden layers (TabM-mini), probabilities averaged.

    For ``resmlp``, ``hidden`` is ``[width]`` or ``[width, inner]``: ``blocks`` residual blocks of
    ``width`` units, each with an inner layer of ``inner`` units (default: ``width``).
    ``embedding: periodic`` embeds each numeric feature (numeric columns and datetime parts; not one-hot
    or ``__missing`` features) as PLR: ``embedding_frequencies`` periodic terms, scaled by
    ``embedding_scale`` at initialisation, mapped to ``embedding_dim`` units.
    """

    arch: Literal["linear", "mlp", "resmlp", "tabm"] = "mlp"
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [256, 128], min_length=1)
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    norm: Literal["none", "batch", "layer"] = "none"
    blocks: int = Field(2, ge=1)
    """Residual blocks of ``resmlp``."""
    members: int = Field(32, ge=1)
    """Ensemble members of ``tabm``."""
    embedding: Literal["none", "periodic"] = "none"
    embedding_dim: int = Field(16, ge=1)
    embedding_frequencies: int = Field(48, ge=1)
    embedding_scale: float = Field(0.01, gt=0.0)

    @model_validator(mode="after")
    def _resmlp_widths(self) -> ModelConfig:
        if self.arch == "resmlp" and len(self.hidden) > 2:
            raise ValueError(f"arch 'resmlp' takes hidden: [width] or [width, inner], got {self.hidden}")
        return self


class EarlyStoppingConfig(StrictModel):
    """Stop when the validation ``metric`` has not improved by ``min_delta`` for ``patience`` epochs."""

    patience: int = Field(5, ge=1)
    metric: Literal[METRICS] | None = None  # type: ignore[valid-type]
    """Default: the task's main metric (roc_auc, accuracy or rmse); ``loss`` is the validation loss."""
    min_delta: float = Field(0.0, ge=0.0)


class TrainConfig(StrictModel):
    """How the model is fitted.

    ``gd`` is full-batch gradient descent (one step per epoch; ``batch_size`` is ignored), ``sgd`` plain
    stochastic gradient descent on ``batch_size`` rows (1 or more), ``momentum`` SGD with (optionally
    Nesterov) momentum. Schedules are per epoch, after ``warmup_epochs`` of linear warm-up: ``cosine``
    decays to zero at the last epoch, ``step`` multiplies by ``gamma`` every ``step_size`` epochs,
    ``plateau`` multiplies by ``gamma`` after ``plateau_patience`` epochs without a better validation metric.
    """

    optimizer: Literal["gd", "sgd", "momentum", "adam", "adamw"] = "adamw"
    lr: float = Field(1.0e-3, gt=0.0)
    batch_size: int = Field(512, ge=1)
    epochs: int = Field(30, ge=1)
    weight_decay: float = Field(0.0, ge=0.0)
    """L2 penalty (decoupled for adamw) on weight matrices; biases and norm parameters are not decayed."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    schedule: Literal["constant", "cosine", "step", "plateau"] = "constant"
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    plateau_patience: int = Field(2, ge=1)
    warmup_epochs: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0.0)
    """Clip the gradients' global L2 norm to this value; ``null`` for no clipping."""
    early_stopping: EarlyStoppingConfig | None = None
    restore_best: bool = False
    """End with the weights of the epoch with the best validation metric, not the last epoch's (always so
    with ``early_stopping``)."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """Classification: train on targets moved this share towards uniform. Refused when the monitored
    metric scores probabilities (roc_auc, log_loss): smoothing distorts them."""
    seed: int = Field(0, ge=0)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    memory_budget_mb: float = Field(2048.0, gt=0.0)
    """A split whose decoded features exceed this is streamed from its Parquet file instead of loaded."""

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.nesterov and self.optimizer != "momentum":
            raise ValueError(f"nesterov applies to optimizer 'momentum' only, not '{self.optimizer}'")
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov needs a momentum above 0")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})")
        return self


class SearchSpec(StrictModel):
    """One dimension of a tuning search space, written in the YAML as one of:

    - ``[sgd, adam]``: a choice among values (any YAML value: numbers, text, lists, mappings);
    - ``{uniform: [0.0, 0.5]}``: a float drawn uniformly in [lo, hi] (optional ``step``);
    - ``{log_uniform: [1.0e-4, 1.0e-1]}``: a float drawn uniformly in log space (lo > 0);
    - ``{int: [1, 4]}``: an integer in [lo, hi] (optional ``step``, default 1).
    """

    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    log_uniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None
    step: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _a_list_is_a_choice(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"choice": value}
        if not isinstance(value, dict | SearchSpec):
            raise ValueError(f"expected {SEARCH_FORMS}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SearchSpec:
        given = [kind for kind in SEARCH_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"expected {SEARCH_FORMS}")
        if self.choice is not None:
            if not self.choice:
                raise ValueError("the list of values is empty")
            if self.step is not None:
                raise ValueError("'step' applies to uniform and int ranges, not to a list of values")
            return self
        low, high = self.bounds
        if low >= high:
            raise ValueError(f"the range [{low}, {high}] is empty: lo must be below hi")
        if self.log_uniform is not None and low <= 0:
            raise ValueError(f"log_uniform needs lo > 0 (got {low})")
        if self.log_uniform is not None and self.step is not None:
            raise ValueError("'step' applies to uniform and int ranges, not to log_uniform")
        if self.int is not None and self.step is not None and self.step != round(self.step):
            raise ValueError(f"an int range needs a whole step (got {self.step})")
        return self

    @model_serializer
    def _as_written(self) -> Any:
        if self.choice is not None:
            return self.choice
        written: dict[str, Any] = {self.kind: list(self.bounds)}
        if self.step is not None:
            written["step"] = builtins.int(self.step) if self.int is not None else self.step
        return written

    @property
    def kind(self) -> str:
        """``choice``, ``uniform``, ``log_uniform`` or ``int``."""
        return next(kind for kind in SEARCH_KINDS if getattr(self, kind) is not None)

    @property
    def bounds(self) -> tuple[Any, Any]:
        """``(lo, hi)`` of a range (not for a choice)."""
        bounds = self.uniform or self.log_uniform or self.int
        if bounds is None:
            raise ValueError("a choice has no bounds")
        return bounds


SEARCH_KINDS = ("choice", "uniform", "log_uniform", "int")
SEARCH_FORMS = "a list of values, or one of {uniform: [lo, hi]}, {log_uniform: [lo, hi]}, {int: [lo, hi]}"
TUNE_METRICS = tuple(m for m in METRICS if m != "loss")


class TuneConfig(StrictModel):
    """Hyperparameter search: which sampler, how many trials, and the space of dotted keys.

    ``space`` maps any config key (``train.lr``, ``model.hidden``, ``columns.age.scale``) to a
    :class:`SearchSpec`. ``grid`` tries every combination of the lists (and int ranges) once; ``random``
    and ``tpe`` draw ``trials`` points. ``metric`` (default: the task's main metric) is scored on the
    validation split; ``pruner`` stops trials whose per-epoch validation metric falls behind.
    """

    sampler: Literal["grid", "random", "tpe"] = "tpe"
    trials: int | None = Field(None, ge=1)
    """Trials to run; default 40 (random, tpe) or the size of the grid (grid, which never exceeds it)."""
    jobs: int = Field(1, ge=1)
    """Trials run at once, each in its own process."""
    timeout_s: float | None = Field(None, gt=0)
    """No new trial starts after this many seconds; running ones finish."""
    seed: int = Field(0, ge=0)
    metric: Literal[TUNE_METRICS] | None = None  # type: ignore[valid-type]
    pruner: Literal["median", "hyperband", "none"] = "median"
    prune_startup_trials: int = Field(5, ge=0)
    """Trials that must finish before the median pruner prunes anything."""
    prune_warmup_epochs: int = Field(1, ge=0)
    """Epochs every trial runs before it can be pruned."""
    space: dict[str, SearchSpec] = Field(default_factory=dict)
    """Dotted config key → spec; empty: train.lr, train.optimizer and model.hidden (``leanml.tuning``)."""

    @model_validator(mode="after")
    def _grid_needs_values(self) -> TuneConfig:
        if self.sampler != "grid":
            return self
        for key, spec in self.space.items():
            if spec.kind in ("uniform", "log_uniform"):
                raise ValueError(
                    f"sampler 'grid' needs a list of values (or an int range) for every key, but "
                    f"space.{key} is a {spec.kind} range: list the values to try, e.g. [0.001, 0.01, 0.1]"
                )
        return self


SHRINK_METHODS = ("distill", "prune", "quantize")


class DistillConfig(StrictModel):
    """Knowledge distillation into a smaller ``mlp`` student (Hinton et al., 2015).

    Classification minimises ``alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · CE(student, y)``
    with both output distributions softened at temperature ``T``; regression minimises
    ``alpha · MSE(student, teacher) + (1 − alpha) · MSE(student, y)`` on the standardized target.
    """

    student: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=1)
    """Hidden widths of the student; ``null``: the smallest of a ladder of sizes that keeps the budget."""
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.7, ge=0.0, le=1.0)
    epochs: int | None = Field(None, ge=1)
    """Epochs per student; ``null``: enough for 4,000 optimizer steps, at least 60 and at most 500, and
    past 60,000 steps fewer (at least 8)."""
    lr: float = Field(3.0e-3, gt=0.0)
    batch_size: int = Field(512, ge=2)
    max_students: int = Field(4, ge=1)
    """Students trained at most while searching the ladder for the smallest one inside the budget."""
    embedding: Literal["auto", "keep", "none"] = "auto"
    """Whether students embed numeric inputs as the teacher does: ``auto``: plain MLPs first, embedded
    students only when none of them keeps the budget; ``keep``: always; ``none``: never."""
    synthetic: Literal["auto", "munge", "mixup", "none"] = "auto"
    """Extra rows made around the training rows and labelled by the teacher (``leanml.shrinking.synth``):
    ``munge`` (Bucilă et al., 2006), ``mixup`` (convex combinations), ``none``, or ``auto``: ``munge``
    for a training split of at most ``synthetic_auto_rows`` rows, none above (measured in
    bench/quality.py: on 5,000–20,000 training rows they make a student follow its teacher more closely;
    on 43,000 they cost it)."""
    synthetic_factor: int = Field(4, ge=1)
    """Synthetic rows per training row, fewer to stay within ``synthetic_max_rows`` and the memory budget."""
    synthetic_auto_rows: int = Field(25_000, ge=0)
    """``synthetic: auto`` makes MUNGE rows for training splits of at most this many rows."""
    synthetic_max_rows: int = Field(40_000, ge=0)
    """Synthetic rows in all at most (none for a larger training split): measured, they help a student
    learn from a few thousand rows and hurt it on tens of thousands (bench/shrink.py)."""
    munge_p: float = Field(0.5, gt=0.0, le=1.0)
    """MUNGE: probability that a column takes the nearest neighbour's value."""
    munge_s: float = Field(1.0, gt=0.0)
    """MUNGE: a swapped numeric value is drawn around the neighbour's with sd ``|a − b| / munge_s``."""
    mixup_alpha: float = Field(0.4, gt=0.0)
    """mixup: the weight of a row is drawn from ``Beta(mixup_alpha, mixup_alpha)``."""


class PruneConfig(StrictModel):
    """Magnitude pruning, in steps, each followed by fine-tuning and measured against the budget.

    ``structured`` removes whole hidden units (those whose incoming and outgoing weights have the smallest
    norms), so the layers become physically smaller and faster. ``unstructured`` (a sparsity, e.g. 0.8)
    zeroes that share of all weights by global magnitude: the layers stay dense, so it saves storage only
    when the file is compressed and makes nothing faster.
    """

    structured: bool = True
    step: float = Field(0.25, gt=0.0, lt=1.0)
    """Share of each hidden layer's remaining units removed per step."""
    max_steps: int = Field(6, ge=1)
    min_units: int = Field(2, ge=1)
    """No hidden layer is pruned below this many units."""
    finetune_epochs: int | None = Field(None, ge=0)
    """Epochs of fine-tuning after each step; ``null``: enough for 1,000 optimizer steps, 2 to 100."""
    finetune_lr: float = Field(1.0e-3, gt=0.0)
    unstructured: float | None = Field(None, gt=0.0, lt=1.0)


class QuantizeConfig(StrictModel):
    """int8 with ONNX Runtime's dynamic quantization: int8 weights, activations quantized per batch."""

    per_channel: bool = True


class ShrinkConfig(StrictModel):
    """Shrinking a trained model under a quality budget.

    Steps run in the order distill → prune → quantize, each measured on the validation split and rolled
    back when it breaks the budget. ``max_metric_drop`` is in points of the metric for scores in [0, 1]
    (accuracy, f1, roc_auc, r2: 0.01 = one point) and relative to the parent's value for errors (rmse, mae,
    log_loss: 0.01 = 1 % worse). The latency target is the p50 at batch 1 on ONNX Runtime with one thread;
    the size target is the served graph (``model.onnx``).
    """

    methods: list[Literal[SHRINK_METHODS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(SHRINK_METHODS), min_length=1
    )
    metric: Literal[TUNE_METRICS] | None = None  # type: ignore[valid-type]
    """Default: the task's main metric (roc_auc, accuracy or rmse)."""
    max_metric_drop: float = Field(0.01, ge=0.0)
    margin_se: float = Field(1.0, ge=0.0)
    """A step is kept when its drop plus this many standard errors of the drop (a paired bootstrap over
    the validation rows) is inside the budget; ``0`` judges the observed drop alone."""
    target_latency_us: float | None = Field(None, gt=0.0)
    target_size_kb: float | None = Field(None, gt=0.0)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    latency_runs: int = Field(2000, ge=10)
    """Timed runs at batch 1 per measurement (batch 1024 runs a fiftieth of them, at least 10)."""
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _no_repeats(self) -> ShrinkConfig:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods lists a method twice: {self.methods}")
        return self


class ServeConfig(StrictModel):
    """The HTTP server: where it listens, how it batches, and its limits."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    """Worker processes; one per core by default."""
    max_batch_size: int = Field(64, ge=1)
    """Rows per model call: a batch closes when it holds this many rows..."""
    max_wait_ms: float = Field(0.0, ge=0.0)
    """...or when its first request has waited this long (0: run as soon as the worker is free; requests
    arriving during a model call form the next batch)."""
    max_queue: int = Field(1024, ge=1)
    """Requests waiting for a batch; beyond it requests are shed with 503 and Retry-After."""
    timeout_ms: float = Field(5000.0, gt=0.0)
    """A request not answered within this gets 504."""
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_rows: int = Field(1024, ge=1)
    """Rows in one request; more is refused with 413."""
    api_key_env: str | None = None
    """Name of an environment variable holding the API key; requests must send it as ``X-API-Key`` or
    ``Authorization: Bearer KEY``."""
    idle_timeout_s: float = Field(5.0, gt=0.0)
    """An idle keep-alive connection is closed after this long."""
    header_timeout_s: float = Field(10.0, gt=0.0)
    """Time a client has to send a request's line and headers."""
    body_timeout_s: float = Field(30.0, gt=0.0)
    """Time a client has to send a request's body once its headers arrived."""
    max_connections: int = Field(10_000, ge=1)
    """Open connections per worker; more are answered 503 and closed (lowered to fit the file limit)."""
    runtime: Literal["onnx", "torch"] = "onnx"
    """Read for configs of earlier versions: the server always runs the serving graph on ONNX Runtime, and
    says so when this asks for ``torch``."""
    threads: int | None = Field(None, ge=1)
    """ONNX Runtime intra-op threads per model (default: ONNX Runtime's choice)."""
    reload_interval_s: float = Field(1.0, gt=0.0)
    """How often the store's aliases are checked for promote/rollback."""
    access_log: bool = False
    """One log record per request (uvicorn's access log, in the ``--log-format``); off by default because
    it costs time on every request."""


class TrackingConfig(StrictModel):
    """Experiment tracking of the ``train``, ``tune`` and ``shrink`` runs in MLflow (``leanml[mlflow]``)."""

    mlflow: bool | str = False
    """``false``: no tracking, and nothing imports MLflow; ``true``: a local store in
    ``WORKDIR/NAME/mlruns/`` (``mlflow.db`` and ``artifacts/``); a string: an MLflow tracking URI
    (``http://HOST:5000``, ``sqlite:///PATH/mlflow.db``, ``databricks``)."""
    experiment: str | None = None
    """The MLflow experiment the runs go to (default: the config's ``name``)."""

    @field_validator("mlflow")
    @classmethod
    def _uri_not_empty(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and not value.strip():
            raise ValueError("expected true, false or a tracking URI, got an empty string")
        return value


class RayConfig(StrictModel):
    """Where and how wide the stages run on a Ray cluster (``--ray ADDRESS`` or ``ray.address``)."""

    address: str | None = None
    """``auto`` (the running cluster), ``local`` (an in-process cluster sized to this machine) or
    ``ray://HOST:PORT``; unset: nothing imports Ray and every stage runs in this process."""
    num_workers: int = Field(2, ge=1)
    """Ray Train workers (one DDP process each), and concurrent tuning trials."""
    cpus_per_worker: float = Field(1.0, gt=0.0)
    """CPUs reserved for each worker, trial or data task."""
    storage: str | None = None
    """Checkpoints, study storage and shards: a folder every node reaches (NFS, or ``s3://``/``gs://`` for
    checkpoints); default ``WORKDIR/NAME/ray``, fine on one node."""
    max_failures: int = Field(3, ge=0)
    """Worker losses a training run survives, each time resuming from its last checkpoint."""


class Config(StrictModel):
    """The whole ``leanml.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: DataConfig
    target: str
    task: Task = "auto"
    columns: dict[str, ColumnSpec]
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    shrink: ShrinkConfig = Field(default_factory=ShrinkConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    workdir: str = "runs"
    """Stage outputs go to ``WORKDIR/NAME/STAGE``."""
    store: str = "models"
    """The model store: bundles are written to ``STORE/NAME/vN/``."""

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

    def digest(self, sections: tuple[str, ...] | None = None) -> str:
        """sha256 of the config, or of some of its top-level sections (lineage, staleness checks)."""
        payload = self.model_dump(mode="json")
        if sections is not None:
            payload = {key: payload[key] for key in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def stage_dir(self, stage: str) -> Path:
        """The folder a stage writes its outputs to."""
        return Path(self.workdir) / self.name / stage


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, validate and resolve a YAML config file; raise :class:`ConfigError` listing every problem.

    ``overrides`` are ``dotted.key=value`` strings (values parsed as YAML) applied before validation,
    e.g. ``["train.epochs=5", "model.hidden=[64, 32]"]``.
    """
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
    return parse_config(apply_overrides(raw, overrides or []), base_dir=path.resolve().parent)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.key=value`` set (the value is read as YAML)."""
    result = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML: {exc}") from None
        parts = key.strip().split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: '{'.'.join(parts[: depth + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return result


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
    return config.model_copy(
        update={
            "data": data,
            "workdir": _resolve(config.workdir, base_dir),
            "store": _resolve(config.store, base_dir),
        }
    )


def with_section(config: Config, section: str, updates: dict[str, Any]) -> Config:
    """``config`` with the keys of one section replaced; ``None`` values are left out (not set).

    The result is validated again, so an error names ``SECTION.KEY``.
    """
    given = {key: value for key, value in updates.items() if value is not None}
    if not given:
        return config
    raw = config.model_dump(mode="json")
    raw[section] = {**raw[section], **given}
    return parse_config(raw)


def _resolve(path: str, base_dir: Path) -> str:
    p = Path(path).expanduser()
    return os.path.normpath(p if p.is_absolute() else base_dir / p)


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
