"""One trial: train the trial's config on its prepared variant, reporting each epoch to the pruner.

:func:`run_trial` runs in the tuning process (one job) or in a worker process (several jobs); either way
it gets an Optuna trial to report to and returns a :class:`TrialOutcome` instead of raising, so that a
diverging loss, an invalid combination of values or a pruned trial is recorded and the study goes on.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna

from leanml.config import parse_config
from leanml.errors import LeanMLError
from leanml.metrics import metric_problem
from leanml.training import train_model
from leanml.tuning.variants import prepared_variant, variant_id


@dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs to run one trial (plain values: it crosses a process boundary)."""

    number: int
    trial_id: int
    config: dict[str, Any]
    """The trial's config (the base with the trial's values), already validated once."""
    metric: str
    out_dir: str
    variants_dir: str


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended: ``complete`` with its ``value``, ``pruned`` or ``failed`` with the ``reason``."""

    state: Literal["complete", "pruned", "failed"]
    value: float | None = None
    reason: str | None = None
    epochs: int = 0
    variant: str | None = None
    validation: dict[str, float] = field(default_factory=dict)


def run_trial(task: TrialTask, trial: optuna.Trial) -> TrialOutcome:
    """Train ``task``'s config into ``task.out_dir``; report each epoch's validation metric to ``trial``."""
    config = parse_config(task.config)
    variant = variant_id(config)
    epochs = 0

    def report(record: dict[str, Any]) -> None:
        nonlocal epochs
        epochs = record["epoch"]
        value = record["val_metrics"].get(task.metric)
        if value is None:
            return
        trial.report(value, epochs)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epochs} ({task.metric} {value:.4f})")

    out = Path(task.out_dir)
    try:
        prepared = prepared_variant(config, task.variants_dir)
        result = train_model(config, prepared, out, plots=False, on_epoch=report)
    except optuna.TrialPruned as exc:
        return TrialOutcome("pruned", reason=str(exc), epochs=epochs, variant=variant)
    except LeanMLError as exc:
        return TrialOutcome("failed", reason=str(exc), epochs=epochs, variant=variant)
    except Exception as exc:  # a trial must not take the study down; its reason is recorded
        return TrialOutcome("failed", reason=f"{type(exc).__name__}: {exc}", epochs=epochs, variant=variant)
    finally:
        # A trial is never resumed (an interrupted one runs again), so its checkpoints are dead weight.
        shutil.rmtree(out / "checkpoints", ignore_errors=True)

    value = result.validation.get(task.metric)
    if value is None:
        return TrialOutcome(
            "failed",
            reason=metric_problem(result.task, task.metric, "tune.metric")
            or f"tune.metric: no validation {task.metric} (the validation split is empty)",
            epochs=epochs,
            variant=variant,
        )
    if not math.isfinite(value):
        return TrialOutcome("failed", reason=f"the validation {task.metric} is {value}", epochs=epochs)
    return TrialOutcome(
        "complete", value=float(value), epochs=epochs, variant=variant, validation=dict(result.validation)
    )
