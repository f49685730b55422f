"""The tune stage: search the config's ``tune.space``, report, and bundle the best model.

:func:`run_tune` reads top to bottom: check the space against the config, prepare the base data (which
also tells the task, hence the default metric and its direction), run the study, write the reports,
write ``best.yaml`` and train the best config into the model store.

Outputs in ``WORKDIR/NAME/tune/``: ``study.log`` (the Optuna journal: resume from it), ``trials.csv``,
``best.yaml`` (a config ``leanml train`` accepts), ``report.html``, ``plots/history.png`` and
``plots/importance.png``, ``trials/N/`` (each trial's model and metrics) and ``prepared/DIGEST/`` (the
prepared data of each preprocessing variant).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from leanml.bundle import BundleError, BundleRef, ModelStore
from leanml.bundle.artifact import CONFIG as BUNDLED_CONFIG
from leanml.bundle.artifact import read_manifest
from leanml.config import Config, with_section
from leanml.metrics import HIGHER_IS_BETTER, MAIN_METRIC, check_metric
from leanml.tracking import Tracker, log_bundle, log_tuned, nested_runs, tracked_run, trial_logger
from leanml.training.stage import train_and_bundle
from leanml.tuning.report import (
    TrialRow,
    best_row,
    param_importances,
    plot_history,
    plot_importance,
    render_trials,
    trial_rows,
    write_best_config,
    write_html,
    write_trials_csv,
)
from leanml.tuning.space import override_text, search_space, trial_config
from leanml.tuning.study import StudyFiles, TuneError, quiet_optuna, run_study
from leanml.tuning.variants import prepared_variant, prepared_variants


@dataclass(frozen=True)
class TuneResult:
    """What :func:`run_tune` produced. ``bundle`` is the best config trained into the store."""

    folder: Path
    metric: str
    direction: str
    keys: list[str]
    trials: list[TrialRow]
    best: TrialRow
    best_config: Path
    ran: int
    """Trials run by this call (the others were run before a resume)."""
    recovered: list[int]
    """Trials a killed run left unfinished, marked failed and run again."""
    variants: list[str]
    """The preprocessing variants prepared for the trials."""
    files: list[Path] = field(default_factory=list)
    bundle: BundleRef | None = None
    bundle_validation: dict[str, float] = field(default_factory=dict)


def tune_options(
    config: Config,
    sampler: str | None = None,
    trials: int | None = None,
    jobs: int | None = None,
    timeout_s: float | None = None,
) -> Config:
    """``config`` with the given ``tune`` settings replaced (validated; errors name ``tune.KEY``)."""
    updates = {"sampler": sampler, "trials": trials, "jobs": jobs, "timeout_s": timeout_s}
    return with_section(config, "tune", updates)


def run_tune(
    config: Config,
    resume: bool = False,
    console: Console | None = None,
    bundle: bool = True,
    executor: Executor | None = None,
    folder: Path | None = None,
    prepare_stage: Callable[..., Any] | None = None,
) -> TuneResult:
    """Run the search ``config.tune`` describes; write the reports and ``best.yaml``; bundle the best.

    With a ``console``, progress, a line per trial and the trial table are shown there.

    With ``resume``, the study stored in ``WORKDIR/NAME/tune/`` continues: finished trials are kept,
    interrupted ones run again, and only the missing trials run. ``bundle=False`` skips training the
    best config into the store.

    With ``tracking.mlflow`` set, the search is one tracked run, parent of a run per trial and of the run
    that trains the best config.

    ``executor`` runs the trials (see :func:`run_study`; the Ray cluster's tasks), and ``folder`` replaces
    ``WORKDIR/NAME/tune/`` (a folder the executor's workers reach); ``prepare_stage`` prepares the base
    data (called like :func:`~leanml.data.prepare.prepare`; the cluster's stage on Ray).
    """
    with tracked_run(config, "tune") as tracker:
        return _run_tune(config, resume, console, bundle, tracker, executor, folder, prepare_stage)


def _run_tune(
    config: Config,
    resume: bool,
    console: Console | None,
    bundle: bool,
    tracker: Tracker,
    executor: Executor | None,
    folder: Path | None,
    prepare_stage: Callable[..., Any] | None = None,
) -> TuneResult:
    space = search_space(config.tune)
    space.check(config)
    files = StudyFiles(folder if folder is not None else config.stage_dir("tune"))

    base = prepared_variant(config, files.variants, console=console, stage=prepare_stage)
    task = base.state().target.task
    metric = config.tune.metric or MAIN_METRIC[task]
    check_metric(task, metric, "tune.metric")
    direction = "maximize" if HIGHER_IS_BETTER[metric] else "minimize"

    on_trial = trial_logger(tracker, metric, space.decode)
    run = run_study(
        config,
        space,
        files,
        metric,
        direction,
        resume=resume,
        console=console,
        on_trial=on_trial,
        executor=executor,
    )
    rows = trial_rows(run.study, space)
    best = best_row(rows, direction)
    written = [write_trials_csv(rows, space.keys, metric, files.root / "trials.csv")]
    images = [plot_history(rows, metric, direction, files.root / "plots" / "history.png")]
    with quiet_optuna():
        importances = param_importances(run.study)
    if importances:
        images.append(plot_importance(importances, files.root / "plots" / "importance.png"))
    title = f"leanml tune: {config.name} ({config.tune.sampler}, {len(rows)} trials)"
    html = write_html(files.root / "report.html", title, rows, space.keys, metric, best, images)
    written += [*images, html]
    if console is not None:
        render_trials(rows, space.keys, metric, best, console)
    if best is None:
        raise TuneError(f"no trial completed ({_outcomes(rows)}); see {files.root / 'report.html'}")

    best_config = trial_config(config, best.values)
    comments = [
        f"leanml tune: the best of {len(rows)} trials of {config.name} ({config.tune.sampler} search)",
        f"trial {best.number}: {metric} {best.value:.6f} on the validation split",
        "values: " + "  ".join(override_text(k, v) for k, v in best.values.items()),
    ]
    best_path = write_best_config(best_config, files.root / "best.yaml", comments)
    result = TuneResult(
        folder=files.root,
        metric=metric,
        direction=direction,
        keys=space.keys,
        trials=rows,
        best=best,
        best_config=best_path,
        ran=run.ran,
        recovered=run.recovered,
        variants=prepared_variants(files.variants),
        files=[best_path, *written],
    )
    log_tuned(tracker, metric, best.number, best.value, result.files)
    if not bundle:
        return result
    existing = bundled_from(best_config)
    if existing is not None:  # e.g. a resume with nothing left to run: no duplicate version
        if console is not None:
            console.print(f"the best config is already bundled as {existing[0].name} {existing[0].version}")
        log_bundle(tracker, existing[0])
        return replace(result, bundle=existing[0], bundle_validation=existing[1])
    if console is not None:
        console.print(f"training the best config (trial {best.number}) into the model store")
    try:
        with nested_runs(tracker, f"best: trial {best.number}"):  # tracked under the search's run
            outcome = train_and_bundle(best_config, console=console)  # the train stage: one way to a bundle
    except Exception as exc:  # the study and best.yaml are on disk already: say how to finish
        raise TuneError(
            f"bundling the best trial ({best.number}) failed: {exc}. The study is kept in {files.root}; "
            f"`leanml tune --resume` bundles it without running any trial again"
        ) from exc
    return replace(result, bundle=outcome.bundle, bundle_validation=dict(outcome.result.validation))


def bundled_from(config: Config) -> tuple[BundleRef, dict[str, float]] | None:
    """The store's latest bundle of ``config.name`` and its validation metrics, when the train stage made
    it from ``config`` (``tune`` and ``shrink`` settings aside); else ``None`` (a shrunk version is not the
    trained config, even though it carries the same config)."""
    store = ModelStore(config.store)
    if not store.versions(config.name):
        return None
    try:
        ref = store.resolve(config.name, "latest")
        manifest = read_manifest(ref.path)
        bundled = json.loads((ref.path / BUNDLED_CONFIG).read_text())
    except (BundleError, OSError, ValueError):
        return None
    if manifest.get("lineage", {}).get("stage") != "train":
        return None
    ours = config.model_dump(mode="json")
    ignored = ("tune", "shrink", "tracking")
    if {k: v for k, v in bundled.items() if k not in ignored} != {
        k: v for k, v in ours.items() if k not in ignored
    }:
        return None
    return ref, dict(manifest.get("metrics", {}).get("validation", {}))


def _outcomes(rows: list[TrialRow]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    reasons = sorted({row.reason for row in rows if row.state == "failed" and row.reason})
    text = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no trials ran"
    return text + (f"; e.g. {reasons[0]}" if reasons else "")
