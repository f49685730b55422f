"""scikit-learn estimators that fit and predict through leanml's own stages.

:class:`LeanClassifier` and :class:`LeanRegressor` follow scikit-learn's estimator contract, so
``cross_val_score``, ``GridSearchCV``, ``Pipeline`` and ``clone`` work with them. They are a thin boundary,
not a second implementation: ``fit`` writes the training frame to a temporary Parquet file, infers the
column specs as ``leanml init`` does (without its piecewise-linear bins, which would make a frame and an
array of the same numbers fit different features; ``columns`` turns them on), builds a
:class:`~leanml.config.Config`, runs the train stage (:func:`~leanml.training.stage.train_and_bundle`:
prepare → train → bundle) into a temporary workdir and store, and keeps the resulting bundle's files;
``predict`` scores through :meth:`~leanml.bundle.Bundle.predict`, the path that batch prediction and the
server use.

The fitted state is the bundle itself (``bundle_files_``: file name → bytes, a few tens of KB for small
models), so a fitted estimator pickles as plain bytes and nothing on disk outlives ``fit``. The loaded
bundle (an ONNX Runtime session) is a cache rebuilt on first use after unpickling; it is never pickled.
:meth:`LeanClassifier.save_bundle` writes the folder out for ``leanml predict`` or ``leanml serve``.

Parameters are flat where they are the usual knobs (``hidden``, ``lr``, ``epochs``, ...), so a grid reads
``{"lr": [1e-3, 1e-2]}``; everything else in a config section goes through ``model``, ``train`` and
``columns`` dicts (a key that a flat parameter already sets is refused, so each setting has one place).
"""

from __future__ import annotations

import numbers
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    assert_all_finite,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from leanml.bundle import Bundle, load_bundle
from leanml.config import Config, parse_config
from leanml.data.infer import infer_config
from leanml.data.preprocessor import REASON
from leanml.errors import LeanMLError
from leanml.training.stage import train_and_bundle

MODEL_KEYS = ("arch", "hidden", "dropout")
"""``model`` keys set by flat parameters."""
TRAIN_KEYS = ("lr", "batch_size", "epochs", "weight_decay", "seed", "early_stopping")
"""``train`` keys set by flat parameters (``seed`` comes from ``random_state``)."""
TARGET_NAME = "target"
MIN_SAMPLES = 2


class _LeanEstimator(BaseEstimator):
    """What :class:`LeanClassifier` and :class:`LeanRegressor` share: parameters, ``fit``, input checks."""

    def __init__(
        self,
        hidden: int | tuple[int, ...] = (64,),
        arch: str = "mlp",
        dropout: float = 0.0,
        lr: float = 1e-3,
        batch_size: int = 32,
        epochs: int = 100,
        weight_decay: float = 0.0,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        patience: int = 10,
        model: dict[str, Any] | None = None,
        train: dict[str, Any] | None = None,
        columns: dict[str, dict[str, Any]] | None = None,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.hidden = hidden
        self.arch = arch
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.model = model
        self.train = train
        self.columns = columns
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are imputed by the column specs
        tags.target_tags.required = True
        return tags

    # --- fit ---------------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> _LeanEstimator:
        """Train a leanml model on ``X`` (pandas or Polars frame, or a 2-D numeric array) and target ``y``.

        Runs prepare → train → bundle in a temporary folder and keeps the bundle's files. Errors of the
        data or the config are raised as ``ValueError`` with leanml's message (naming the column or key).
        """
        frame = self._input_frame(X, reset=True)
        target = self._target(y)
        check_consistent_length(frame, target)
        if frame.height < MIN_SAMPLES:
            raise ValueError(
                f"X: found {frame.height} sample(s) while a minimum of {MIN_SAMPLES} is required by "
                f"{type(self).__name__}"
            )
        target_name = _free_name(TARGET_NAME, frame.columns)
        table = frame.with_columns(pl.Series(target_name, target))
        with tempfile.TemporaryDirectory(prefix="leanml-sklearn-") as folder:
            data = Path(folder) / "train.parquet"
            table.write_parquet(data)
            try:
                config = self._config(data, target_name, folder, numeric_only=not _is_frame(X))
                outcome = train_and_bundle(config)
            except LeanMLError as exc:
                raise ValueError(str(exc)) from exc
            self.bundle_files_ = {
                p.name: p.read_bytes() for p in outcome.bundle.path.iterdir() if p.is_file()
            }
        self.columns_ = {name: spec.model_dump(mode="json") for name, spec in config.columns.items()}
        self.history_ = outcome.result.history
        self.best_epoch_ = outcome.result.best_epoch
        self._loaded: Bundle | None = None
        self._after_fit(self.bundle)
        return self

    def _after_fit(self, bundle: Bundle) -> None:
        """Hook: learn what the subclass needs from the loaded bundle."""

    def _config(self, data: Path, target: str, folder: str, numeric_only: bool) -> Config:
        """The leanml config of this estimator's parameters for the training table at ``data``."""
        if numeric_only:  # a numeric array: every column is a number, nothing to infer but that
            names = [n for n in pl.read_parquet_schema(data) if n != target]
            inferred: dict[str, Any] = {name: {"type": "numeric"} for name in names}
        else:  # a frame: the column specs `leanml init` would write
            inferred = yaml.safe_load(infer_config(str(data), target, config_dir=folder))["columns"]
            for spec in inferred.values():  # the same features whatever holds X (an array or a frame):
                spec.pop("encode", None)  # init's bins are opt-in here, columns={NAME: {"encode": "ple"}}
            ignored = [name for name, spec in inferred.items() if spec["type"] == "ignore"]
            ignored = [name for name in ignored if name not in (self.columns or {})]
            if ignored:
                warnings.warn(
                    f"{type(self).__name__}: column(s) {', '.join(map(repr, ignored))} are not used as "
                    f"features (constant, id-like, free text or unsupported; `leanml init` says why); "
                    f"set columns={{NAME: {{'type': ...}}}} to use them",
                    UserWarning,
                    stacklevel=3,
                )
        unknown = sorted(set(self.columns or {}) - set(inferred))
        if unknown:
            raise ValueError(
                f"columns: {', '.join(map(repr, unknown))} not in X; X has {', '.join(inferred)}"
            )
        seed = self._seed()
        hidden = [self.hidden] if isinstance(self.hidden, numbers.Integral) else list(self.hidden)
        model = {"arch": self.arch, "hidden": hidden, "dropout": self.dropout}
        train = {
            "lr": self.lr,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "weight_decay": self.weight_decay,
            "seed": seed,
            "early_stopping": {"patience": self.patience} if self.early_stopping else None,
        }
        raw = {
            "name": type(self).__name__,
            "data": {
                "train": str(data),
                "split": {
                    "validation": self.validation_fraction if self.early_stopping else 0.0,
                    "test": 0.0,  # held-out scoring is the caller's (cross_val_score, a test split)
                    "seed": seed,
                },
            },
            "target": target,
            "task": self._config_task(),
            "columns": {**inferred, **(self.columns or {})},
            "model": {**model, **_extra("model", self.model, MODEL_KEYS)},
            "train": {**train, **_extra("train", self.train, TRAIN_KEYS)},
            "workdir": str(Path(folder) / "runs"),
            "store": str(Path(folder) / "models"),
        }
        return parse_config(raw)

    def _config_task(self) -> str:
        return "regression"

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral) and int(self.random_state) >= 0:
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _target(self, y: Any) -> np.ndarray:
        """``y`` as a 1-D array (a column vector warns, as scikit-learn estimators do)."""
        if isinstance(y, pl.Series):
            y = y.to_numpy()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = column_or_1d(y, warn=True)
        if y.dtype.kind in "fc":
            assert_all_finite(y, input_name="y")
        return y

    def __getstate__(self) -> dict[str, Any]:
        return _without_cache(super().__getstate__())

    # --- predict -----------------------------------------------------------------------------------------

    @property
    def bundle(self) -> Bundle:
        """The fitted model as a loaded, verified :class:`~leanml.bundle.Bundle` (cached, not pickled).

        It is loaded from a temporary copy that is removed once ONNX Runtime has read it, so its ``path``
        no longer exists; :meth:`save_bundle` writes a folder to keep.
        """
        check_is_fitted(self, "bundle_files_")
        if getattr(self, "_loaded", None) is None:
            # ONNX Runtime reads the graph when the bundle loads, so the folder can go right after.
            with tempfile.TemporaryDirectory(prefix="leanml-sklearn-") as folder:
                self._loaded = load_bundle(self.save_bundle(Path(folder) / "bundle"))
        assert self._loaded is not None
        return self._loaded

    def save_bundle(self, path: str | Path) -> Path:
        """Write the fitted bundle to the new folder ``path`` (for ``leanml predict`` / ``leanml serve``)."""
        check_is_fitted(self, "bundle_files_")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=False)
        for name, payload in self.bundle_files_.items():
            (path / name).write_bytes(payload)
        return path

    def _predictions(self, X: Any) -> pl.DataFrame:
        """The bundle's prediction frame for ``X``; a row the bundle's rules reject is an error."""
        check_is_fitted(self, "bundle_files_")
        frame = self._input_frame(X, reset=False)
        try:
            result = self.bundle.predict(frame)
        except LeanMLError as exc:
            raise ValueError(str(exc)) from exc
        rejected = result.with_row_index("row").filter(pl.col(REASON).is_not_null())
        if rejected.height:
            row, reason = rejected.select("row", REASON).row(0)
            raise ValueError(
                f"X: {rejected.height} row(s) rejected by the model's serving rules; "
                f"the first is row {row}: {reason}"
            )
        return result

    # --- input -------------------------------------------------------------------------------------------

    def _input_frame(self, X: Any, reset: bool) -> pl.DataFrame:
        """``X`` as a Polars frame; checks (or, when fitting, records) the feature count and names."""
        if _is_frame(X):
            validate_data(self, X, reset=reset, skip_check_array=True)
            frame = X if isinstance(X, pl.DataFrame) else pl.from_pandas(X)
            if getattr(self, "feature_names_in_", None) is None:  # unnamed (e.g. integer) columns
                frame.columns = [f"x{i}" for i in range(frame.width)]
            return frame
        array = validate_data(
            self,
            X,
            reset=reset,
            dtype="numeric",
            ensure_all_finite="allow-nan",
            ensure_min_samples=1 if not reset else MIN_SAMPLES,
        )
        # Fitted on a named frame, an array's columns are taken in that order (scikit-learn has warned).
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            names = [f"x{i}" for i in range(array.shape[1])]
        array = array.astype(np.float64, copy=False)
        return pl.DataFrame(
            [pl.Series(str(name), array[:, i], nan_to_null=True) for i, name in enumerate(names)]
        )


class LeanClassifier(ClassifierMixin, _LeanEstimator):
    """A leanml classifier (binary or multiclass) with scikit-learn's estimator interface.

    Parameters map to the config: ``hidden``, ``arch``, ``dropout`` → ``model``; ``lr``, ``batch_size``,
    ``epochs``, ``weight_decay`` → ``train``; ``early_stopping`` holds out ``validation_fraction`` of the
    rows (stratified) and stops after ``patience`` epochs without a better validation metric, keeping the
    best epoch's weights; ``random_state`` seeds the split and the training. ``model``, ``train`` (e.g.
    ``{"optimizer": "sgd", "device": "cuda"}``) and ``columns`` (column name → spec, e.g.
    ``{"city": {"type": "categorical", "min_frequency": 10}}``, over the inferred specs) reach every other
    config key.

    Fitted attributes: ``classes_``, ``n_features_in_``, ``feature_names_in_`` (named frames only),
    ``columns_`` (the column specs used), ``history_`` (one record per epoch), ``best_epoch_`` and
    ``bundle_files_`` (the bundle, file name → bytes).
    """

    def fit(self, X: Any, y: Any) -> LeanClassifier:
        """Train on ``X`` and class labels ``y`` (numbers, strings or booleans; at least two classes)."""
        labels = self._target(y)
        check_classification_targets(labels)
        self.classes_ = np.unique(labels)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y: {type(self).__name__} needs samples of at least 2 classes, but the data contains "
                f"{len(self.classes_)} class(es): {list(self.classes_)}"
            )
        super().fit(X, labels)
        return self

    def _config_task(self) -> str:
        return "binary" if len(self.classes_) == 2 else "multiclass"

    def _after_fit(self, bundle: Bundle) -> None:
        # The bundle orders classes its own way (numbers numerically, text by frequency); classes_ is sorted.
        self._order = _class_order(self.classes_, bundle)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[n_samples, n_classes]``, columns in the order of ``classes_``."""
        result = self._predictions(X)
        labels = self.bundle.labels
        probas = result.select([f"proba_{label}" for label in labels]).to_numpy().astype(np.float64)
        return probas[:, self._order]

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row (values from ``classes_``)."""
        check_is_fitted(self, "bundle_files_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class LeanRegressor(RegressorMixin, _LeanEstimator):
    """A leanml regressor with scikit-learn's estimator interface.

    Same parameters and fitted attributes as :class:`LeanClassifier`, without ``classes_``; the network
    learns the standardized target and predicts in the target's units.
    """

    def fit(self, X: Any, y: Any) -> LeanRegressor:
        """Train on ``X`` and the numeric target ``y``."""
        values = self._target(y)
        try:
            as_float = values.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"y: {type(self).__name__} needs numbers, got values of dtype {values.dtype}"
            ) from None
        assert_all_finite(as_float, input_name="y")
        super().fit(X, as_float)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The predicted value of each row."""
        return self._predictions(X)["prediction"].to_numpy().astype(np.float64)


def _without_cache(state: dict[str, Any]) -> dict[str, Any]:
    """A pickling state without the loaded bundle (a live ONNX Runtime session): it reloads from bytes."""
    state = dict(state)
    state.pop("_loaded", None)
    return state


def _is_frame(X: Any) -> bool:
    if isinstance(X, pl.DataFrame):
        return True
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas comes with scikit-learn's usual installs
        return False
    return isinstance(X, pd.DataFrame)


def _free_name(name: str, taken: list[str]) -> str:
    """``name``, or ``name_1``, ``name_2``, ... whichever is not a column already."""
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _extra(section: str, given: Mapping[str, Any] | None, flat: tuple[str, ...]) -> dict[str, Any]:
    """The keys of a ``model``/``train`` parameter, refusing those that a flat parameter sets."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise ValueError(f"{section}: expected a dict of config keys, got {type(given).__name__}")
    repeated = [key for key in given if key in flat]
    if repeated:
        where = ", ".join(
            "random_state" if key == "seed" else "early_stopping/patience" if key == "early_stopping" else key
            for key in repeated
        )
        raise ValueError(
            f"{section}: {', '.join(map(repr, repeated))} is set by the estimator's own parameter(s) "
            f"({where}); set it there"
        )
    return dict(given)


def _class_order(classes: np.ndarray, bundle: Bundle) -> np.ndarray:
    """For each class in ``classes``, its column in the bundle's outputs."""
    if classes.dtype.kind in "biuf":  # the bundle turned them into numbers (or booleans): compare values
        keys = [c.item() if classes.dtype.kind == "b" else float(c) for c in classes]
        theirs = [v if isinstance(v, bool) else float(v) for v in bundle.labels]
    else:  # text: compare the class text as the bundle read it
        keys = [str(c) for c in classes]
        theirs = [str(v) for v in bundle.state.target.classes]
    position = {key: i for i, key in enumerate(theirs)}
    missing = [c for c, key in zip(classes, keys, strict=True) if key not in position]
    if missing or len(theirs) != len(keys):
        raise ValueError(f"y: the trained model's classes {bundle.labels} do not match {list(classes)}")
    return np.array([position[key] for key in keys])
