"""The train stage: prepared data → a trained model → a new bundle version in the store.

``train_and_bundle`` makes sure the prepared data matches the config (re-preparing when the data, columns,
target or split changed), trains, and writes the model into the store as a new bundle version whose
reference rows are raw rows of the test split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.console import Console

from leanml.bundle import BundleInputs, BundleRef, ModelStore
from leanml.bundle.artifact import REFERENCE_ROWS
from leanml.bundle.drift import drift_reference
from leanml.config import Config
from leanml.data.io import expand_paths, scan_table
from leanml.data.prepare import ensure_prepared
from leanml.data.prepared import PreparedData
from leanml.data.split import ROW_ID
from leanml.data.state import PreprocessState
from leanml.tracking import Tracker, epoch_logger, log_trained, tracked_run
from leanml.training.loop import TrainResult, train_model
from leanml.training.report import write_train_report

DRIFT_ROWS = 200_000
"""Training rows summarized for drift monitoring."""

Trainer = Callable[..., TrainResult]
"""Trains as :func:`~leanml.training.loop.train_model` does, called as ``trainer(config, prepared, out_dir,
resume=, console=, on_epoch=)``: the local loop, or the cluster's (:mod:`leanml.cluster.train`)."""


@dataclass(frozen=True)
class TrainOutcome:
    """A trained model and where its bundle went."""

    bundle: BundleRef
    result: TrainResult
    report: Path | None = None
    """The run's HTML report."""


def train_and_bundle(
    config: Config,
    resume: bool = False,
    console: Console | None = None,
    trainer: Trainer = train_model,
) -> TrainOutcome:
    """Prepare when needed, train, and add the model to the store (moving its ``latest`` alias).

    With ``tracking.mlflow`` set, the run is tracked in MLflow (:mod:`leanml.tracking`). ``trainer`` trains
    the model (see :data:`Trainer`).
    """
    with tracked_run(config, "train") as tracker:
        outcome = _train_and_bundle(config, resume, console, tracker, trainer)
        log_trained(tracker, outcome.result, outcome.report, outcome.bundle)
    return outcome


def _train_and_bundle(
    config: Config, resume: bool, console: Console | None, tracker: Tracker, trainer: Trainer
) -> TrainOutcome:
    prepared = ensure_prepared(config, console)
    result = trainer(
        config,
        prepared,
        config.stage_dir("train"),
        resume=resume,
        console=console,
        on_epoch=epoch_logger(tracker),
    )
    page = write_train_report(config.name, result)
    state = prepared.state()
    report = prepared.quality()
    inputs = BundleInputs(
        name=config.name,
        state=state,
        model=result.model,
        spec=result.spec,
        metrics={
            "validation": result.validation,
            "test": result.test,
            "monitor": result.monitor,
            "best_epoch": result.best_epoch,
        },
        reference_rows=reference_rows(config, state, prepared),
        lineage={
            "stage": "train",
            "parent": None,
            "data_fingerprint": report.get("data_fingerprint"),
            "config_hash": config.digest(),
        },
        config=config.model_dump(mode="json"),
        drift=drift_reference(state, pl.scan_parquet(prepared.split("train")).head(DRIFT_ROWS).collect()),
    )
    ref = ModelStore(config.store).add(inputs)
    return TrainOutcome(bundle=ref, result=result, report=page)


def reference_rows(
    config: Config, state: PreprocessState, prepared: PreparedData, rows: int = REFERENCE_ROWS
) -> pl.DataFrame:
    """Raw input rows of the test split (validation when test is empty), as the source spells them."""
    ids = pl.Series(dtype=pl.UInt32)
    for split in ("test", "validation", "train"):
        ids = pl.scan_parquet(prepared.split(split)).select(ROW_ID).head(rows).collect()[ROW_ID]
        if len(ids):
            break
    columns = [c.name for c in state.columns]
    source = scan_table(expand_paths(config.data.train)).with_row_index(ROW_ID)
    return source.filter(pl.col(ROW_ID).is_in(ids.implode())).select(columns).collect()
