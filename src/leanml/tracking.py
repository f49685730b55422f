"""Experiment tracking: the runs of ``train``, ``tune`` and ``shrink`` recorded in MLflow.

The stages talk to a :class:`Tracker` and never to MLflow: :func:`tracked_run` gives a
:class:`NullTracker`, which does nothing, unless the config's ``tracking.mlflow`` is set, and only then is
MLflow imported (it is the optional extra ``leanml[mlflow]``). What a run records:

- params: the config, flattened to dotted keys (``train.lr``, ``columns.age.impute``);
- metrics: per epoch ``train_loss``, ``val_loss``, ``val_METRIC`` and ``lr`` (step = epoch), then
  ``validation/METRIC`` and ``test/METRIC`` of the returned model; shrink logs every step's figures
  (``distill/roc_auc``, ``int8/onnx_bytes``, ... with step = the step's row in the report);
- artifacts: the reports and plots the stage wrote, and the bundle folder under ``bundle/``.

A tune run is the parent of one nested run per trial (its values, its per-epoch metric and its final
validation metrics) and of the run that trains the best config. Runs are addressed by id through one
``MlflowClient`` (never MLflow's global "active run"), behind a lock, so trials finishing in parallel
threads log safely.

``tracking: {mlflow: true}`` keeps everything under ``WORKDIR/NAME/mlruns/``: the SQLite store
``mlflow.db`` (MLflow 3 refuses new plain-folder stores) and the artifacts in ``artifacts/``; browse it
with ``mlflow ui --backend-store-uri sqlite:///WORKDIR/NAME/mlruns/mlflow.db``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from leanml._version import __version__
from leanml.errors import ConfigError
from leanml.files import file_lock
from leanml.logs import LOGGER

if TYPE_CHECKING:
    from leanml.bundle import BundleRef
    from leanml.config import Config
    from leanml.shrinking.results import ShrinkResult
    from leanml.training.loop import TrainResult

LOCAL_FOLDER = "mlruns"
"""The local store of ``tracking: {mlflow: true}``, under ``WORKDIR/NAME/``."""
MAX_PARAM_CHARS = 6000  # MLflow refuses longer param values
BATCH = 100  # params per log_batch call (MLflow's limit); metrics go 1000 at a time
STAGE_TAG = "leanml.stage"
PARENT_TAG = "mlflow.parentRunId"
SQLITE = "sqlite:///"
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


class Tracker(Protocol):
    """Where a stage reports its run: params, metrics, files, nested runs."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record parameters (written once; values become text)."""

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Record metric values at ``step`` (``None``, NaN and infinities are skipped)."""

    def log_files(self, paths: Iterable[Path], folder: str) -> None:
        """Copy files (or whole folders) into the run's artifacts under ``folder``."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Label the run."""

    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> Tracker:
        """Start a run nested in this one."""

    def end(self, status: str = "FINISHED") -> None:
        """Close the run: ``FINISHED``, ``FAILED`` or ``KILLED``."""


class NullTracker:
    """The tracker of an untracked run: every call does nothing."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Do nothing."""

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Do nothing."""

    def log_files(self, paths: Iterable[Path], folder: str) -> None:
        """Do nothing."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Do nothing."""

    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> Tracker:
        """Itself: a run nested in an untracked one is untracked."""
        return self

    def end(self, status: str = "FINISHED") -> None:
        """Do nothing."""


class MlflowTracker:
    """One MLflow run, addressed by its id through a shared client (thread-safe through ``lock``)."""

    def __init__(self, client: Any, experiment_id: str, run_id: str, lock: threading.Lock) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.lock = lock

    @classmethod
    def start(
        cls,
        client: Any,
        experiment_id: str,
        name: str,
        tags: Mapping[str, Any],
        lock: threading.Lock | None = None,
    ) -> MlflowTracker:
        """Create a run named ``name`` in the experiment and return its tracker."""
        lock = lock or threading.Lock()
        with lock:
            run = client.create_run(experiment_id, run_name=name, tags=_text_values(tags))
        return cls(client, experiment_id, run.info.run_id, lock)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record parameters, 100 per call."""
        from mlflow.entities import Param

        items = [Param(_key(k), str(v)[:MAX_PARAM_CHARS]) for k, v in params.items()]
        with self.lock:
            for start in range(0, len(items), BATCH):
                self.client.log_batch(self.run_id, params=items[start : start + BATCH])

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Record metric values at ``step`` (0 when not given, as MLflow does)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_key(k), float(v), now, step or 0) for k, v in metrics.items() if _is_number(v)]
        with self.lock:
            for start in range(0, len(items), 10 * BATCH):
                self.client.log_batch(self.run_id, metrics=items[start : start + 10 * BATCH])

    def log_files(self, paths: Iterable[Path], folder: str) -> None:
        """Copy files and folders into the run's artifacts under ``folder``."""
        with self.lock:
            for path in paths:
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), f"{folder}/{path.name}")
                elif path.is_file():
                    self.client.log_artifact(self.run_id, str(path), folder)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Label the run."""
        with self.lock:
            for key, value in _text_values(tags).items():
                self.client.set_tag(self.run_id, key, value)

    def child(self, name: str, tags: Mapping[str, Any] | None = None) -> Tracker:
        """A run nested in this one (MLflow's ``mlflow.parentRunId`` tag)."""
        return MlflowTracker.start(
            self.client, self.experiment_id, name, {**(tags or {}), PARENT_TAG: self.run_id}, self.lock
        )

    def end(self, status: str = "FINISHED") -> None:
        """Close the run."""
        with self.lock:
            self.client.set_terminated(self.run_id, status)


_nesting: contextvars.ContextVar[tuple[Tracker, str] | None] = contextvars.ContextVar(
    "leanml_tracking_nesting", default=None
)


@contextlib.contextmanager
def nested_runs(parent: Tracker, name: str) -> Iterator[None]:
    """Inside the block (in this thread), the run :func:`tracked_run` starts is nested in ``parent`` and
    named ``name``: tune trains its best config this way, through the train stage as it is."""
    token = _nesting.set((parent, name))
    try:
        yield
    finally:
        _nesting.reset(token)


@contextlib.contextmanager
def tracked_run(config: Config, stage: str) -> Iterator[Tracker]:
    """A run of ``stage`` for ``config``: a new run in the config's experiment (nested when inside
    :func:`nested_runs`), or a :class:`NullTracker` when ``tracking.mlflow`` is off. The config is logged
    as params; the run ends ``FINISHED``, or ``FAILED`` (``KILLED`` on Ctrl-C) when the block raises."""
    tags = {STAGE_TAG: stage, "leanml.version": __version__}
    nesting = _nesting.get()
    if nesting is not None:
        tracker = nesting[0].child(nesting[1], tags)
    elif config.tracking.mlflow is False:
        tracker = NullTracker()
    else:
        tracker = start_tracker(config, f"{stage} {config.name}", tags)
    try:
        tracker.log_params(config_params(config))
        yield tracker
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the stage's error is the one to report
            tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    tracker.end("FINISHED")


def start_tracker(config: Config, name: str, tags: Mapping[str, Any]) -> MlflowTracker:
    """Start a run in the experiment ``tracking.experiment`` (default: the config's name), creating the
    experiment (and the local store) when missing."""
    client, artifacts = _client(config)
    experiment = config.tracking.experiment or config.name
    found = client.get_experiment_by_name(experiment)
    if found is None:
        from mlflow.exceptions import MlflowException

        try:
            experiment_id = client.create_experiment(experiment, artifact_location=artifacts)
        except MlflowException:  # created meanwhile by another process
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
            experiment_id = found.experiment_id
    else:
        experiment_id = found.experiment_id
    return MlflowTracker.start(client, experiment_id, name, tags)


def tracking_uri(config: Config) -> tuple[str, Path | None]:
    """The MLflow tracking URI of ``config`` and, for a SQLite store, the folder of its database (where
    the artifacts of a new experiment go: MLflow's default is ``./mlruns`` under the working directory)."""
    setting = config.tracking.mlflow
    if setting is True:
        folder = config.stage_dir(LOCAL_FOLDER).resolve()
        return f"sqlite:///{folder / 'mlflow.db'}", folder
    uri = str(setting)
    if uri.startswith(SQLITE) and uri != f"{SQLITE}:memory:":
        return uri, Path(uri.removeprefix(SQLITE)).resolve().parent
    return uri, None


def _client(config: Config) -> tuple[Any, str | None]:
    """An ``MlflowClient`` for the config's store, and the artifact location of a new experiment in a
    SQLite store (``None``: the tracking server's choice)."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError(
            "tracking.mlflow: MLflow is not installed; install it with pip install 'leanml[mlflow]'"
        ) from None
    # MLflow's own info lines ("Creating initial MLflow database tables...") only when leanml's are shown.
    logging.getLogger("mlflow").setLevel(max(logging.INFO, logging.getLogger(LOGGER).getEffectiveLevel()))
    uri, folder = tracking_uri(config)
    lock = file_lock(folder / ".mlflow.lock") if folder else contextlib.nullcontext()
    with warnings.catch_warnings(), lock:  # two commands must not create one database at once
        # SQLAlchemy deprecations inside MLflow's store: nothing a leanml user can act on
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # a wrong URI fails here, before any work
        except Exception as exc:  # MLflow, SQLAlchemy and requests raise their own kinds
            raise ConfigError(f"tracking.mlflow: cannot open the MLflow store {uri}: {exc}") from None
    return client, (folder / "artifacts").as_uri() if folder else None


def config_params(config: Config) -> dict[str, str]:
    """The config as flat params: dotted keys, values as text (unset values left out)."""
    return {key: str(value) for key, value in _flatten(config.model_dump(mode="json")).items()}


def epoch_logger(tracker: Tracker) -> Callable[[dict[str, Any]], None]:
    """An ``on_epoch`` hook for :func:`leanml.training.train_model` that logs each epoch's record."""

    def log(record: dict[str, Any]) -> None:
        metrics = {"train_loss": record["train_loss"], "val_loss": record["val_loss"], "lr": record["lr"]}
        metrics.update({f"val_{name}": value for name, value in record["val_metrics"].items()})
        tracker.log_metrics(metrics, step=record["epoch"])

    return log


def log_trained(tracker: Tracker, result: TrainResult, report: Path | None, bundle: BundleRef) -> None:
    """The end of a training run: final metrics, the report and plots, and the bundle."""
    tracker.log_metrics(_prefixed("validation", result.validation) | _prefixed("test", result.test))
    tracker.log_files([*([report] if report else []), *result.plots], "report")
    log_bundle(tracker, bundle)


def log_bundle(tracker: Tracker, bundle: BundleRef) -> None:
    """The bundle folder as the artifacts ``bundle/``, and its name and version as tags."""
    tracker.set_tags({"leanml.bundle": f"{bundle.name}@{bundle.version}"})
    tracker.log_files(sorted(bundle.path.iterdir()), "bundle")


def trial_logger(
    tracker: Tracker, metric: str, decode: Callable[[Mapping[str, Any]], dict[str, Any]]
) -> Callable[[Any, Any], None]:
    """An Optuna callback logging each finished trial as a run nested in ``tracker``: its values, the
    reported ``metric`` per epoch (``val_METRIC``), its validation metrics and how it ended."""

    def log(study: Any, trial: Any) -> None:
        state = trial.state.name.lower()
        child = tracker.child(
            f"trial {trial.number}", {STAGE_TAG: "trial", "leanml.trial": trial.number, "leanml.state": state}
        )
        child.log_params(decode(trial.params))
        for epoch, value in sorted(trial.intermediate_values.items()):
            child.log_metrics({f"val_{metric}": value}, step=epoch)
        child.log_metrics(_prefixed("validation", trial.user_attrs.get("validation", {})))
        reason = trial.user_attrs.get("reason")
        if reason:
            child.set_tags({"leanml.reason": reason})
        child.end("FAILED" if state == "fail" else "FINISHED")

    return log


def log_tuned(tracker: Tracker, metric: str, best_number: int, best_value: float, files: list[Path]) -> None:
    """The end of a search: the best trial and value, the trial table, best.yaml, report and plots."""
    tracker.log_metrics({f"best/{metric}": best_value})
    tracker.set_tags({"leanml.best_trial": best_number})
    tracker.log_files(files, "report")


def log_shrunk(tracker: Tracker, result: ShrinkResult) -> None:
    """A shrink run: every step's figures (``STEP/FIGURE``, step = its row in the report), the final
    model's, the test metrics of parent and final, the reports and the new bundle."""
    for row, record in enumerate(result.steps):
        name = re.sub(r"\W+", "_", record.step).strip("_") or "step"
        tracker.log_metrics(_prefixed(name, _figures(record.measurement)), step=row)
    tracker.log_metrics(_prefixed("final", _figures(result.final.measurement)))
    for which, metrics in result.test.items():
        tracker.log_metrics(_prefixed(f"test/{which}", metrics))
    tracker.set_tags(
        {
            "leanml.parent": f"{result.parent.name}@{result.parent.version}",
            "leanml.outcome": result.reason or "written",
        }
    )
    tracker.log_files(result.files, "report")
    if result.bundle is not None:
        log_bundle(tracker, result.bundle)


def _figures(measurement: Any) -> dict[str, float]:
    figures = {k: v for k, v in measurement.as_dict().items() if k != "metrics"}
    return {**figures, **measurement.metrics}


def _prefixed(prefix: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in metrics.items() if _is_number(value)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {} if value is None or not prefix else {prefix: value}


def _key(name: str) -> str:
    """A key MLflow accepts: letters, digits, ``_ - . / `` and spaces; anything else becomes ``_``."""
    return _KEY_UNSAFE.sub("_", name)[:250]


def _text_values(tags: Mapping[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in tags.items()}
