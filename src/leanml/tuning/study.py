"""The study: Optuna's storage, samplers and pruners, trials run in parallel processes, and resume.

One study lives in one JSON-lines journal file (``study.log``, Optuna's ``JournalStorage``), which every
process reads and appends to, so parallel workers share it and a killed study is resumed from it.

How trials run: the tuning process asks Optuna for each trial's values (so sampling sees every finished
trial, and a grid hands out each point once) and checks the trial's config; the training happens in the
same process (``jobs: 1``) or in a pool of ``jobs`` worker processes, each attaching to the stored trial
to report its epochs to the pruner (or, given an ``executor``, in its tasks: the Ray cluster's, see
:mod:`leanml.cluster.tune`). Optuna's own thread pool keeps ``jobs`` trials in flight.

Resume (``--resume``): a trial left running by a killed process is marked failed (``interrupted``) and
its values are queued to run again; finished trials are never repeated; only the trials still missing
from ``tune.trials`` (or from the grid) run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from leanml.config import Config, TuneConfig
from leanml.errors import ConfigError, LeanMLError
from leanml.tuning.space import SearchSpace, override_text, trial_config
from leanml.tuning.trial import TrialOutcome, TrialTask, run_trial

STUDY_NAME = "leanml"
DEFAULT_TRIALS = 40
RESUME_MAY_CHANGE = ("trials", "jobs", "timeout_s")
"""Tune settings a resumed study may change: they say how long to search, not what the search is."""


class TuneError(LeanMLError):
    """The search cannot go on or cannot be resumed; the message says what to do."""


class TrialFailed(Exception):
    """A trial ended without a score; its reason is a user attribute of the trial."""


@dataclass(frozen=True)
class StudyFiles:
    """Where a study keeps its state, under ``WORKDIR/NAME/tune/``."""

    root: Path

    @property
    def storage(self) -> Path:
        """The Optuna journal: every trial, its values, reports and outcome."""
        return self.root / "study.log"

    @property
    def trials(self) -> Path:
        """``trials/N/``: each trial's trained model and metrics."""
        return self.root / "trials"

    @property
    def variants(self) -> Path:
        """``prepared/DIGEST/``: the prepared data of each preprocessing variant."""
        return self.root / "prepared"


@dataclass(frozen=True)
class StudyRun:
    """What :func:`run_study` did: the study, how many trials it ran now, and which were interrupted."""

    study: optuna.Study
    ran: int
    resumed: bool
    recovered: list[int]
    """Trials left running by a killed process, marked failed and queued again."""


def open_storage(path: str | Path) -> JournalStorage:
    """The study storage in the journal file at ``path`` (created when missing)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_sampler(tune: TuneConfig, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler ``tune.sampler`` names, seeded with ``seed``."""
    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # TPE models the space once its startup trials (queued by run_study, spread over the space) are
    # done. constant_liar: parallel trials see the running ones as bad guesses, so they spread out.
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=startup_trials(tune, space),
        multivariate=True,
        constant_liar=tune.jobs > 1,
    )


def startup_trials(tune: TuneConfig, space: SearchSpace) -> int:
    """How many trials TPE runs before it models the space: a quarter of the trials, 3 to 10 (Optuna's
    default is 10), so that a small budget still has most of its trials guided."""
    return min(10, max(3, target_trials(tune, space) // 4))


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    """The pruner ``tune.pruner`` names: median (of the other trials at the same epoch), Hyperband, none.

    Steps are epochs (1-based); a trial is first checked after epoch ``prune_warmup_epochs + 1``.
    """
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tune.prune_startup_trials, n_warmup_steps=tune.prune_warmup_epochs + 1
        )
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=tune.prune_warmup_epochs + 1)
    return optuna.pruners.NopPruner()


def target_trials(tune: TuneConfig, space: SearchSpace) -> int:
    """How many finished trials the study aims for: ``tune.trials``, never more than the grid holds."""
    if tune.sampler == "grid":
        size = len(space.grid_points())
        return min(tune.trials or size, size)
    return tune.trials or DEFAULT_TRIALS


def run_study(
    config: Config,
    space: SearchSpace,
    files: StudyFiles,
    metric: str,
    direction: str,
    resume: bool = False,
    console: Console | None = None,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    executor: Executor | None = None,
) -> StudyRun:
    """Create (or, with ``resume``, reload) the study and run its remaining trials; ``on_trial`` hears of
    each trial that finishes (in the tuning process, from Optuna's threads when ``jobs`` > 1).

    ``executor``, when given, runs the trials instead of this process or a pool of ``jobs`` processes;
    its workers must reach ``files`` (they attach to the study's journal and write the trials' models)."""
    tune = config.tune
    with quiet_optuna():
        study, resumed = _open_study(config, files, metric, direction, resume)
        recovered = _recover_interrupted(study)
        remaining = _queue_remaining(study, tune, space)
        if tune.sampler == "tpe" and not study.trials:
            _queue_startup(study, tune, space)
        finished_before = _finished(study)
        # Reseeded by the trials already run, so a resumed random search does not replay its first draws.
        study.sampler = _sampler_for(study, tune, space, seed=tune.seed + finished_before)
        if console is not None and resumed:
            done = sum(
                1 for t in study.trials if t.state.is_finished() and not t.user_attrs.get("interrupted")
            )
            again = f", {len(recovered)} interrupted (trials {_numbers(recovered)}) will run again"
            console.print(
                f"resuming the study in {files.storage}: {done} trials done"
                f"{again if recovered else ''}, {remaining} to run"
            )
        if remaining > 0:
            with (
                _worker_pool(tune.jobs, executor) as pool,
                _TrialProgress(console, remaining, metric, space) as progress,
            ):
                try:
                    study.optimize(
                        _Objective(config, space, metric, files, pool),
                        n_trials=remaining,
                        n_jobs=tune.jobs,
                        timeout=tune.timeout_s,
                        catch=(TrialFailed,),
                        callbacks=[progress, *([on_trial] if on_trial else [])],
                    )
                except BrokenProcessPool:
                    raise TuneError(
                        "a trial's worker process died: out of memory (try fewer jobs), or a script calling "
                        "leanml.tune with jobs > 1 lacks `if __name__ == '__main__':` (workers import it); "
                        "the finished trials are saved: run again with --resume"
                    ) from None
                except KeyboardInterrupt:
                    raise TuneError(
                        f"interrupted; the finished trials are saved in {files.storage}: "
                        f"run again with --resume to continue"
                    ) from None
    return StudyRun(study=study, ran=_finished(study) - finished_before, resumed=resumed, recovered=recovered)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial log lines and experimental-feature warnings; leanml reports trials."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _open_study(
    config: Config, files: StudyFiles, metric: str, direction: str, resume: bool
) -> tuple[optuna.Study, bool]:
    exists = files.storage.exists() and files.storage.stat().st_size > 0
    if exists and not resume:
        raise TuneError(
            f"a study already exists in {files.root}: pass --resume to continue it, "
            f"or delete {files.root} to start a new one"
        )
    study = optuna.create_study(
        storage=open_storage(files.storage),
        study_name=STUDY_NAME,
        direction=direction,
        # Until the study is set up (interrupted trials failed and re-queued) a sampler with no
        # bookkeeping of its own; the configured one replaces it before any trial is asked for.
        sampler=optuna.samplers.RandomSampler(),
        pruner=make_pruner(config.tune),
        load_if_exists=True,
    )
    identity = _identity(config, metric, direction)
    saved = study.user_attrs.get("identity")
    if saved is None:
        study.set_user_attr("identity", identity)
    elif saved != identity:
        changed = [
            key if key.startswith("tune.") or key in ("metric", "direction") else f"the {key} section"
            for key in sorted({*saved, *identity})
            if saved.get(key) != identity.get(key)
        ]
        raise TuneError(
            f"cannot resume the study in {files.root}: changed since it started: {', '.join(changed)}. "
            f"Restore them, or delete {files.root} to start a new study"
        )
    return study, exists


def _identity(config: Config, metric: str, direction: str) -> dict[str, Any]:
    """What a resumed study must match: the search and every config section the trials start from."""
    search = config.tune.model_dump(mode="json", exclude=set(RESUME_MAY_CHANGE))
    sections = [name for name in Config.model_fields if name not in ("tune", "serve", "store", "tracking")]
    digests = {name: config.digest((name,))[:16] for name in sections}
    return {
        **{f"tune.{k}": v for k, v in search.items()},
        "metric": metric,
        "direction": direction,
        **digests,
    }


def _recover_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left running by a killed process as failed (interrupted); return their numbers."""
    recovered = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial = optuna.Trial(study, frozen._trial_id)
        trial.set_user_attr("interrupted", True)
        trial.set_user_attr("reason", "interrupted: the process running it stopped")
        study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
        recovered.append(frozen.number)
    return recovered


def _queue_remaining(study: optuna.Study, tune: TuneConfig, space: SearchSpace) -> int:
    """Queue what a resumed study must run again; return the number of trials left to run."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    remaining = max(0, target_trials(tune, space) - len(done))
    room = remaining - len(waiting)
    if room <= 0 or not trials:
        return remaining
    if tune.sampler == "grid":
        # The grid points no finished or queued trial holds, in a seeded random order.
        seen = {_point(t.params) for t in done} | {_point(t.user_attrs.get("queued", {})) for t in waiting}
        missing = [p for p in space.grid_points() if _point(p) not in seen]
        random.Random(tune.seed).shuffle(missing)
        for params in missing[:room]:
            study.enqueue_trial(params, user_attrs={"queued": params})
        return remaining
    retried = {t.user_attrs.get("retry_of") for t in trials}
    interrupted = [
        t for t in trials if t.user_attrs.get("interrupted") and t.number not in retried and t.params
    ]
    for frozen in interrupted[:room]:
        study.enqueue_trial(frozen.params, user_attrs={"queued": frozen.params, "retry_of": frozen.number})
    return remaining


def _queue_startup(study: optuna.Study, tune: TuneConfig, space: SearchSpace) -> None:
    """Queue TPE's startup trials of a new study: points spread over the space (a Latin hypercube)
    rather than random draws, so that every choice and every part of every range is tried before TPE
    models the space."""
    count = min(startup_trials(tune, space), target_trials(tune, space))
    for params in space.spread_points(count, seed=tune.seed):
        study.enqueue_trial(params, user_attrs={"queued": params})


def _sampler_for(
    study: optuna.Study, tune: TuneConfig, space: SearchSpace, seed: int
) -> optuna.samplers.BaseSampler:
    if tune.sampler == "grid" and study.trials:
        # A resumed grid runs only queued points (see _queue_remaining). GridSampler's bookkeeping
        # expects every trial to carry its own grid id, which queued trials do not.
        return optuna.samplers.RandomSampler(seed=seed)
    return make_sampler(tune, space, seed)


def _point(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _finished(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())


def _numbers(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


class _Objective:
    """Optuna's objective: draw the trial's values, check its config, run it here or in a worker."""

    def __init__(
        self, base: Config, space: SearchSpace, metric: str, files: StudyFiles, pool: Executor | None
    ) -> None:
        self.base = base
        self.space = space
        self.metric = metric
        self.files = files
        self.pool = pool

    def __call__(self, trial: optuna.Trial) -> float:
        values = self.space.suggest(trial)
        try:
            config = trial_config(self.base, values)
        except ConfigError as exc:
            problem = str(exc).removeprefix("invalid config:").strip().replace("\n  ", "; ")
            trial.set_user_attr("reason", f"invalid combination: {problem}")
            raise TrialFailed(problem) from None
        task = TrialTask(
            number=trial.number,
            trial_id=trial._trial_id,
            config=config.model_dump(mode="json"),
            metric=self.metric,
            out_dir=str(self.files.trials / str(trial.number)),
            variants_dir=str(self.files.variants),
        )
        try:
            if self.pool is None:
                outcome = run_trial(task, trial)
            else:
                outcome = self.pool.submit(
                    _run_in_worker, task, str(self.files.storage), self.base.tune
                ).result()
        except (KeyboardInterrupt, BrokenProcessPool):
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("reason", "interrupted: the process running it stopped")
            raise
        _record(trial, outcome)
        if outcome.state == "pruned":
            raise optuna.TrialPruned(outcome.reason)
        if outcome.state == "failed":
            raise TrialFailed(outcome.reason)
        assert outcome.value is not None
        return outcome.value


def _record(trial: optuna.Trial, outcome: TrialOutcome) -> None:
    trial.set_user_attr("epochs", outcome.epochs)
    if outcome.variant is not None:
        trial.set_user_attr("variant", outcome.variant)
    if outcome.reason is not None:
        trial.set_user_attr("reason", outcome.reason)
    if outcome.validation:
        trial.set_user_attr("validation", outcome.validation)


@contextlib.contextmanager
def _worker_pool(jobs: int, given: Executor | None = None) -> Iterator[Executor | None]:
    """The ``given`` executor, else ``jobs`` worker processes (spawned: no forked copies of threads), or
    none for one job."""
    if given is not None or jobs == 1:
        yield given
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(threads,),
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(threads: int) -> None:
    import torch

    # Each worker trains a small model; more threads than cores per worker only adds contention.
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)


def _run_in_worker(task: TrialTask, storage: str, tune: TuneConfig) -> TrialOutcome:  # also a Ray task
    """Run one trial in a worker process, attached to its trial in the shared storage."""
    study = optuna.load_study(
        study_name=STUDY_NAME,
        storage=open_storage(storage),
        sampler=optuna.samplers.RandomSampler(),  # workers never sample: the tuning process does
        pruner=make_pruner(tune),
    )
    return run_trial(task, optuna.Trial(study, task.trial_id))


class _TrialProgress:
    """A progress bar over the trials and one line per finished trial (an Optuna callback)."""

    def __init__(self, console: Console | None, total: int, metric: str, space: SearchSpace) -> None:
        self.console = console
        self.total = total
        self.metric = metric
        self.space = space
        self.lock = threading.Lock()
        self.progress: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> _TrialProgress:
        if self.console is not None:
            self.progress = Progress(
                TextColumn("trials"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[best]}"),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("tune", total=self.total, best="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, study: optuna.Study, frozen: FrozenTrial) -> None:
        if self.progress is None or self.console is None:
            return
        with self.lock:
            self.console.print(trial_line(frozen, self.metric, self.space), highlight=False)
            best = ""
            with contextlib.suppress(ValueError):  # no completed trial yet
                best = f"best {self.metric} {study.best_value:.4f} (trial {study.best_trial.number})"
            self.progress.update(self.task, advance=1, best=best)


def trial_line(frozen: FrozenTrial, metric: str, space: SearchSpace) -> str:
    """A line (Rich markup) about a finished trial: number, outcome, score, time and values; then why it
    was pruned or failed."""
    seconds = frozen.duration.total_seconds() if frozen.duration is not None else 0.0
    values = " ".join(override_text(k, v) for k, v in space.decode(frozen.params).items())
    reason = frozen.user_attrs.get("reason")
    if frozen.state == TrialState.COMPLETE:
        outcome = f"[green]complete[/green] {metric} {frozen.value:.4f}"
    elif frozen.state == TrialState.PRUNED:
        outcome = "[yellow]pruned[/yellow]"
    else:
        outcome = "[red]failed[/red]"
    line = f"trial {frozen.number:>3} {outcome} [dim]{seconds:.1f}s[/dim]  {escape(values)}"
    if reason and frozen.state != TrialState.COMPLETE:
        line += f"\n      [dim]{escape(str(reason))}[/dim]"
    return line
