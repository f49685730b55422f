"""The training loop: prepared splits in, a trained model, metrics and plots out.

``train_model`` reads top to bottom: load the splits as batches, build the model and optimizer, maybe
resume from the last checkpoint, then for each epoch — set the learning rate, run the batches, evaluate
on validation, track the best epoch, checkpoint — and finally restore the best epoch's weights (early
stopping or ``train.restore_best``), score the test split and write the outputs. Everything happens here;
two hooks: ``on_epoch`` lets a caller watch each epoch's record (tuning reports it to its pruner) and stop
training by raising; ``parallel`` makes the loop one of several data-parallel replicas (Ray Train).

Outputs in ``out_dir``: ``model.json`` + ``model.safetensors`` (the trained model), ``metrics.json``
(validation and test metrics, the history per epoch), ``checkpoints/last.safetensors`` and ``plots/``.

Reproducibility: the initial weights come from ``train.seed``; every epoch reseeds torch (dropout) and
its shuffle from ``(seed, epoch)``. An epoch's randomness therefore does not depend on what ran before,
the same seed gives bitwise the same weights, and a resumed run replays exactly the epochs it missed.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from leanml.config import Config
from leanml.data.prepared import SPLITS, PreparedData
from leanml.data.state import DatetimeState, NumericState, PreprocessState, feature_names
from leanml.errors import ConfigError, DataError, LeanMLError
from leanml.files import write_json
from leanml.metrics import MAIN_METRIC, check_metric, evaluate
from leanml.models import TabularModel, build_model, model_spec, save_model
from leanml.models.predict import to_predictions
from leanml.training import checkpoint
from leanml.training.allocator import steady_allocator
from leanml.training.batching import (
    ParquetBatches,
    TensorBatches,
    open_split,
    split_rows,
    target_moments,
)
from leanml.training.early_stopping import BestEpoch
from leanml.training.optimizer import make_optimizer
from leanml.training.plots import write_plots
from leanml.training.progress import TrainingProgress
from leanml.training.schedule import LearningRateSchedule

GD_CHUNK_ROWS = 65_536  # full-batch GD accumulates the gradient over chunks of this many rows
EVAL_BATCH_ROWS = 8192
CHECKPOINT_PATH = Path("checkpoints") / "last.safetensors"
METRICS_JSON = "metrics.json"
PLOTS_DIR = "plots"
RESUME_MAY_CHANGE = ("epochs", "device", "memory_budget_mb")
"""Train settings a resumed run may change: they do not change what the finished epochs computed."""

Batches = TensorBatches | ParquetBatches
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TrainingError(LeanMLError):
    """Training cannot go on (e.g. the loss diverged); the message says what to change."""


@dataclass
class TrainResult:
    """What :func:`train_model` produced.

    ``history`` has one record per epoch: ``epoch`` (1-based), ``train_loss``, ``val_loss``,
    ``val_metrics`` (name → value), ``lr`` and ``seconds``. ``validation`` and ``test`` are the metrics
    of the returned ``model``: the best epoch's weights with early stopping or ``train.restore_best``, else
    the last epoch's.
    """

    model: TabularModel
    spec: dict[str, Any]
    task: str
    monitor: str
    history: list[dict[str, Any]]
    validation: dict[str, float]
    test: dict[str, float]
    best_epoch: int | None
    stopped_early: bool
    out_dir: Path
    plots: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class DataParallel:
    """What makes this loop one of several that train one model together, each on its own equal shard of
    the training split (:mod:`leanml.cluster.train`); every replica starts from the same seeded weights."""

    whole: PreparedData
    """The prepared data the shards were cut from: the target scaling and the run's identity (what a
    checkpoint must match to resume) come from it, so every replica scales alike and any replica can
    resume from another's checkpoint."""
    average_gradients: Callable[[torch.nn.Module], None]
    """Called before every optimizer step (an all-reduce over the replicas), so their weights stay equal."""
    gather: Gather | None = None
    """Set when each replica holds only its shard of the validation and test splits too: joins every
    replica's scored rows of a split (in replica order: the whole split's rows in their order) and sums
    their losses, so every replica computes the whole split's metrics from the same rows."""
    mean: Callable[[float], float] | None = None
    """The mean of a value over the replicas: each epoch's training loss, so the history holds the whole
    training split's mean loss (the shards are equal) and every replica judges it finite alike."""


Scored = tuple[float, np.ndarray, np.ndarray]
"""A split's summed loss, targets and predictions (one row each)."""
Gather = Callable[[str, float, np.ndarray, np.ndarray], Scored]
"""``(task, loss_sum, targets, predictions)`` → the whole split's :data:`Scored`."""


def train_model(
    config: Config,
    prepared_dir: PreparedData | str | Path | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    console: Console | None = None,
    plots: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    parallel: DataParallel | None = None,
) -> TrainResult:
    """Train the model ``config`` describes on the prepared splits; write and return the results.

    ``prepared_dir`` and ``out_dir`` default to the prepare and train stage folders of ``config``.
    With ``resume``, training continues after the last completed epoch of the checkpoint in ``out_dir``
    (and starts afresh when there is none); the run ends as an uninterrupted one would. ``plots=False``
    skips the plots (e.g. for tuning trials). ``on_epoch``, when given, is called with each epoch's
    history record once the epoch is validated and checkpointed; an exception it raises stops training
    and propagates to the caller. ``parallel``, when given, makes this run one replica of a data-parallel
    run (see :class:`DataParallel`); ``prepared_dir`` then holds this replica's shard.
    """
    steady_allocator()  # a step's freed tensors stay in the heap for the next step (see allocator.py)
    prepared = PreparedData.at(prepared_dir if prepared_dir is not None else config.stage_dir("prepare"))
    whole = parallel.whole if parallel is not None else prepared  # what the run's statistics describe
    out = Path(out_dir) if out_dir is not None else config.stage_dir("train")
    tc = config.train
    state = prepared.state()
    task = state.target.task
    features = state.feature_names
    device = _device(tc.device)

    # The data, as batches of contiguous tensors (streamed from Parquet when larger than the budget).
    batch_size = GD_CHUNK_ROWS if tc.optimizer == "gd" else tc.batch_size
    budget = tc.memory_budget_mb
    train = open_split(prepared.split("train"), features, task, batch_size, budget, device)
    splits = {
        name: open_split(prepared.split(name), features, task, EVAL_BATCH_ROWS, budget, device)
        for name in ("validation", "test")
    }
    # the whole split's rows: a data-parallel replica may hold a share of validation, or none of it
    monitor = _check_config(config, task, train.rows, split_rows(whole.split("validation")))
    gather = parallel.gather if parallel is not None else None

    # The model (regression learns the standardized target; the scaling is folded into the model).
    spec = model_spec(config.model, len(features), task, len(state.target.classes), numeric_features(state))
    torch.manual_seed(tc.seed)
    model = build_model(spec)
    target_std = 1.0
    if task == "regression":
        target_mean, target_std = target_moments(whole.split("train"))
        model.set_target_scaling(target_mean, target_std)
    model.to(device)
    loss_fn = make_loss(task, target_std)  # validation scores the plain loss
    train_loss_fn = smooth_labels(loss_fn, task, tc.label_smoothing, spec["n_outputs"])
    optimizer = make_optimizer(tc, model)
    schedule = LearningRateSchedule(tc)
    stopping = tc.early_stopping
    best = BestEpoch(
        monitor,
        patience=stopping.patience if stopping else None,
        min_delta=stopping.min_delta if stopping else 0.0,
        keep_weights=tc.restore_best or stopping is not None,
    )
    history: list[dict[str, Any]] = []
    run = _run_identity(config, whole, spec)
    checkpoint_path = out / CHECKPOINT_PATH
    start_epoch = 0
    if resume:
        start_epoch = _resume(checkpoint_path, run, model, optimizer, schedule, best, history, device)
        if console is not None:
            where = (
                f"after epoch {start_epoch}" if start_epoch else "from the first epoch (no checkpoint yet)"
            )
            console.print(f"resuming {where}: {checkpoint_path}")

    full_batch = tc.optimizer == "gd"
    with TrainingProgress(console, tc.epochs, train.batches_per_epoch(), monitor) as progress:
        for epoch in range(start_epoch, tc.epochs):
            if best.should_stop:  # a resumed run that had already stopped early
                break
            started = time.perf_counter()
            lr = schedule.lr(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            seed = epoch_seed(tc.seed, epoch)
            _seed_torch(seed, device)
            shuffle = None if full_batch else torch.Generator().manual_seed(seed)
            progress.start_epoch(epoch, history[-1]["val_metrics"].get(monitor) if history else None)

            model.train()
            loss_sum = torch.zeros((), device=device)
            if full_batch:
                optimizer.zero_grad(set_to_none=True)
            for x, y in train.epoch(shuffle):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = train_loss_fn(model.member_outputs(x), y)  # an ensemble: its members' mean loss
                if full_batch:  # accumulate the whole training set's mean gradient, step once below
                    (loss * (len(x) / train.rows)).backward()
                else:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    _step(optimizer, model, tc.grad_clip, parallel)
                loss_sum.add_(loss.detach(), alpha=len(x))
                progress.advance(loss)
            if full_batch:
                _step(optimizer, model, tc.grad_clip, parallel)
            train_loss = loss_sum.item() / train.rows
            if parallel is not None and parallel.mean is not None:
                train_loss = parallel.mean(train_loss)
            if not math.isfinite(train_loss):
                raise TrainingError(
                    f"the training loss became {train_loss} in epoch {epoch + 1}; "
                    f"lower train.lr (now {lr:g}) or set train.grad_clip"
                )

            val_loss, val_metrics, _, _ = evaluate_split(
                model, splits["validation"], task, loss_fn, device, gather
            )
            record = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_metrics": val_metrics,
                "lr": lr,
                "seconds": time.perf_counter() - started,
            }
            history.append(record)
            improved = False
            if val_loss is not None:
                score = val_loss if monitor == "loss" else val_metrics[monitor]
                improved = best.update(epoch + 1, score, model)
                schedule.observe(monitor, score)
            checkpoint.save_checkpoint(
                checkpoint_path,
                _checkpoint_tensors(model, optimizer, best),
                _checkpoint_state(epoch + 1, history, optimizer, schedule, best, run),
            )
            progress.end_epoch(record, improved)
            if on_epoch is not None:
                on_epoch(record)

    # The result: the best epoch's weights (early stopping, restore_best), final scores, files.
    stopped_early = best.should_stop
    if best.weights is not None:
        model.load_state_dict(best.weights)
    _, validation, _, _ = evaluate_split(model, splits["validation"], task, loss_fn, device, gather)
    _, test, y_test, test_output = evaluate_split(model, splits["test"], task, loss_fn, device, gather)
    model.eval()
    save_model(model, spec, out)
    summary = {"task": task, "monitor": monitor, "best_epoch": best.epoch, "stopped_early": stopped_early}
    write_json(
        out / METRICS_JSON,
        _json_safe({**summary, "validation": validation, "test": test, "history": history}),
    )
    written: list[Path] = []
    if plots:
        plot_split = "test"
        if len(y_test) == 0:  # no test rows: show the validation split instead
            plot_split = "validation"
            _, _, y_test, test_output = evaluate_split(
                model, splits["validation"], task, loss_fn, device, gather
            )
        classes = state.target.classes
        written = write_plots(task, history, y_test, test_output, classes, out / PLOTS_DIR, plot_split)
    if console is not None:
        console.print(f"[green]✓[/green] trained: test {_format_metrics(test)}  →  {out}")
    return TrainResult(
        model=model,
        spec=spec,
        task=task,
        monitor=monitor,
        history=history,
        validation=validation,
        test=test,
        best_epoch=best.epoch,
        stopped_early=stopped_early,
        out_dir=out,
        plots=written,
    )


def make_loss(task: str, target_std: float = 1.0) -> LossFn:
    """The training loss of ``task`` on raw network outputs ``[batch, n_outputs]``.

    Binary: cross-entropy on the logit; multiclass: cross-entropy on the logits (targets are class indices,
    or ``[batch, K]`` probabilities); regression: mean squared error of the *standardized* target — the
    model outputs original units, so the error is divided by the target's variance, which gives exactly the
    gradients of training on the standardized target. Outputs ``[batch, k, n_outputs]`` (an ensemble's
    members) give the mean of the k members' losses against the same targets.
    """
    if task == "binary":

        def single(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(output[:, 0], y)

    elif task == "multiclass":

        def single(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(output, y)

    else:
        inverse_variance = 1.0 / (target_std * target_std)

        def single(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(output[:, 0], y) * inverse_variance

    def loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if output.ndim == 3:
            members = output.shape[1]
            return single(output.flatten(0, 1), y.repeat_interleave(members, dim=0))
        return single(output, y)

    return loss


def smooth_labels(loss_fn: LossFn, task: str, epsilon: float, n_classes: int) -> LossFn:
    """``loss_fn`` on targets moved ``epsilon`` towards uniform: ``(1 − ε) · y + ε / K`` (classification)."""
    if not epsilon:
        return loss_fn
    if task == "binary":
        return lambda output, y: loss_fn(output, y * (1.0 - epsilon) + 0.5 * epsilon)
    if task == "multiclass":
        return lambda output, y: loss_fn(
            output, F.one_hot(y, n_classes).to(output.dtype) * (1.0 - epsilon) + epsilon / n_classes
        )
    raise ValueError(f"label smoothing applies to classification, not {task!r}")


def numeric_features(state: PreprocessState) -> list[int]:
    """Indices of the model inputs that carry numbers: numeric columns and datetime parts.

    One-hot categories, ``__missing`` indicators and the bins of a piecewise-linear encoding (already an
    embedding of their column) are left out: what ``model.embedding`` embeds.
    """
    indices: list[int] = []
    position = 0
    for column in state.columns:
        names = feature_names(column)
        if isinstance(column, NumericState):
            indices.append(position)  # the scaled value comes first, then its PLE bins
        elif isinstance(column, DatetimeState):
            indices.extend(range(position, position + len(column.outputs)))
        position += len(names)
    return indices


def evaluate_split(
    model: torch.nn.Module,
    batches: Batches,
    task: str,
    loss_fn: LossFn,
    device: torch.device,
    gather: Gather | None = None,
) -> tuple[float | None, dict[str, float], np.ndarray, np.ndarray]:
    """Mean loss, metrics, targets and predictions of ``model`` on a split (``None``, ``{}`` when empty).

    ``gather``: ``batches`` is this replica's shard of the split; the metrics are the whole split's
    (see :attr:`DataParallel.gather`).
    """
    loss_sum, y_true, predictions = score_split(model, batches, task, loss_fn, device)
    if gather is not None:
        loss_sum, y_true, predictions = gather(task, loss_sum, y_true, predictions)
    if len(y_true) == 0:
        return None, {}, np.zeros(0), np.zeros(0)
    return loss_sum / len(y_true), evaluate(task, y_true, predictions), y_true, predictions


def score_split(
    model: torch.nn.Module, batches: Batches, task: str, loss_fn: LossFn, device: torch.device
) -> Scored:
    """The summed loss, targets and predictions of ``model`` on every row of a split (empty arrays and
    0.0 when it has none)."""
    if batches.rows == 0:
        return 0.0, np.zeros(0), np.zeros(0)
    model.eval()
    loss_sum = 0.0
    outputs, targets = [], []
    with torch.inference_mode():
        for x, y in batches.epoch():
            x, y = x.to(device), y.to(device)
            output = model(x)
            loss_sum += float(loss_fn(output, y)) * len(x)
            outputs.append(to_predictions(task, output).cpu())
            targets.append(y.cpu())
    return loss_sum, torch.cat(targets).numpy(), torch.cat(outputs).numpy()


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's randomness (shuffle, dropout), from the run's seed and the epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)


def _seed_torch(seed: int, device: torch.device) -> None:
    # torch.manual_seed would also queue seeds for every uninitialised accelerator type, which costs a
    # stack trace each; seed only the generators this run uses.
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def _step(
    optimizer: torch.optim.Optimizer,
    model: torch.nn.Module,
    grad_clip: float | None,
    parallel: DataParallel | None,
) -> None:
    if parallel is not None:
        parallel.average_gradients(model)  # before clipping: the clip sees the whole batch's gradient
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device: 'cuda' was asked for but no CUDA device is available (use cpu or auto)"
        )
    return torch.device(name)


def _check_config(config: Config, task: str, train_rows: int, validation_rows: int) -> str:
    """Checks that need the data's task and sizes; return the monitored metric."""
    tc = config.train
    monitor = (tc.early_stopping.metric if tc.early_stopping else None) or MAIN_METRIC[task]
    check_metric(task, monitor, "train.early_stopping.metric", also=("loss",))
    if train_rows == 0:
        raise DataError("the training split is empty: check data.split and the data-quality report")
    if validation_rows == 0 and (tc.early_stopping or tc.schedule == "plateau"):
        key = "train.early_stopping" if tc.early_stopping else "train.schedule"
        raise ConfigError(f"{key}: needs validation rows, but the validation split is empty (see data.split)")
    if tc.label_smoothing and task == "regression":
        raise ConfigError("train.label_smoothing: applies to classification only; set it to 0 for regression")
    if tc.label_smoothing and monitor in ("roc_auc", "log_loss"):
        raise ConfigError(
            f"train.label_smoothing: distorts the predicted probabilities that the monitored metric "
            f"'{monitor}' scores; set train.early_stopping.metric to accuracy, f1 or loss, "
            f"or train.label_smoothing to 0"
        )
    uses_batch_norm = config.model.norm == "batch" and config.model.arch not in ("linear", "tabm")
    if uses_batch_norm and tc.optimizer != "gd" and tc.batch_size < 2:
        raise ConfigError("model.norm: 'batch' needs train.batch_size of at least 2")
    return monitor


def _run_identity(config: Config, prepared: PreparedData, spec: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the model, the train settings, the prepared data."""
    digest = hashlib.sha256(prepared.state_path.read_bytes())
    for split in SPLITS:
        files = prepared.split(split)
        digest.update(f"{len(files)} {sum(f.stat().st_size for f in files)}".encode())
    return {
        "spec": spec,
        "train": config.train.model_dump(mode="json", exclude=set(RESUME_MAY_CHANGE)),
        "data": digest.hexdigest(),
    }


def _resume(
    path: Path,
    run: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: LearningRateSchedule,
    best: BestEpoch,
    history: list[dict[str, Any]],
    device: torch.device,
) -> int:
    """Load the checkpoint at ``path`` into the run's objects; return the number of epochs it completed.

    Without a checkpoint (the run died before its first epoch ended) training starts from epoch 0.
    """
    saved = checkpoint.load_checkpoint(path)
    if saved is None:
        return 0
    _check_resumable(saved.state["run"], run)
    model.load_state_dict(saved.group("model."))
    checkpoint.restore_optimizer(optimizer, saved.group("optimizer."), saved.state["optimizer"])
    schedule.load_state_dict(saved.state["schedule"])
    best.load_state_dict(saved.state["best"], {k: t.to(device) for k, t in saved.group("best.").items()})
    history.extend(saved.state["history"])
    return int(saved.state["epochs_done"])


def _check_resumable(saved: dict[str, Any], run: dict[str, Any]) -> None:
    changes = [
        f"train.{key} ({saved['train'].get(key)!r} → {value!r})"
        for key, value in run["train"].items()
        if saved["train"].get(key) != value
    ]
    if saved["spec"] != run["spec"]:
        changes.append("the model (model section or the number of features)")
    if saved["data"] != run["data"]:
        changes.append("the prepared data")
    if changes:
        raise ConfigError(
            "cannot resume: changed since the checkpoint: " + "; ".join(changes) + ". Train without resume."
        )


def _checkpoint_tensors(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, best: BestEpoch
) -> dict[str, torch.Tensor]:
    optimizer_tensors, _ = checkpoint.flatten_optimizer(optimizer)
    return {
        **checkpoint.prefixed("model.", model.state_dict()),
        **checkpoint.prefixed("optimizer.", optimizer_tensors),
        **checkpoint.prefixed("best.", best.weights or {}),
    }


def _checkpoint_state(
    epochs_done: int,
    history: list[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    schedule: LearningRateSchedule,
    best: BestEpoch,
    run: dict[str, Any],
) -> dict[str, Any]:
    _, optimizer_meta = checkpoint.flatten_optimizer(optimizer)
    return {
        "epochs_done": epochs_done,
        "history": history,
        "optimizer": optimizer_meta,
        "schedule": schedule.state_dict(),
        "best": best.state_dict(),
        "run": run,
    }


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4f}" for name, value in metrics.items()) or "(no test rows)"
