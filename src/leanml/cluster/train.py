"""Training on a Ray cluster: Ray Train's ``TorchTrainer``, N CPU workers, gradients averaged over gloo.

Every worker runs the local training loop (:func:`leanml.training.loop.train_model`) on its own shard of
the training split (an equal share of its rows, so every worker takes the same number of steps) and its
share of the validation and test splits. Four things make the N loops one run:

* before every optimizer step the gradients are averaged across workers (one all-reduce of all of
  them, as DDP does), and every worker starts from the same seeded weights, so the weights stay equal;
* each worker scores its share of the validation (and at the end the test) rows, and the workers swap
  their scored rows, so every worker computes the whole split's metrics from the same rows in the
  split's order: all see the same scores and stop at the same epoch, and evaluation takes 1/N of the
  time it would take each worker to score the whole split;
* the target scaling (regression) and the run's identity use the whole training split, not the shard;
* after each epoch every worker reports to Ray Train, worker 0 with the loop's checkpoint, kept under
  the cluster's storage path; a lost worker restarts the run from the last checkpoint
  (``ray.max_failures`` times), and ``--resume`` continues the last run from its storage.

The model, its metrics and the bundle are then those of a local run (:func:`train_and_bundle`).
"""

from __future__ import annotations

import functools
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.distributed as dist
from rich.console import Console

from leanml.cluster.prepare import prepare_on_ray
from leanml.cluster.session import Cluster, ClusterError
from leanml.config import Config
from leanml.data.prepare import ensure_prepared
from leanml.data.prepared import SPLITS, PreparedData
from leanml.models import load_model
from leanml.training import loop, stage
from leanml.training.batching import split_rows, target_dtype
from leanml.training.loop import CHECKPOINT_PATH, METRICS_JSON, DataParallel, TrainResult

LAST_RUN = "last-train-run.txt"
EPOCH_FILE = "ray-epoch.json"
"""File in each Ray checkpoint naming the epoch it holds."""
"""File in the storage folder naming the last training run (what ``--resume`` continues)."""


def train_on_ray(
    config: Config, cluster: Cluster, resume: bool = False, console: Console | None = None
) -> stage.TrainOutcome:
    """Prepare when needed, train on the cluster, and bundle the model into the store as a local run."""

    def trainer(
        config: Config,
        prepared: Any,
        out_dir: Any,
        resume: bool = False,
        console: Console | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        **_: Any,
    ) -> TrainResult:
        result = train_model_on_ray(
            config, cluster, PreparedData.at(prepared), Path(out_dir), resume, console
        )
        for record in result.history if on_epoch is not None else []:
            on_epoch(record)  # the epochs as the local loop would have told them (tracking)
        return result

    ensure_prepared(config, console, stage=lambda cfg, console: prepare_on_ray(cfg, cluster, console=console))
    return stage.train_and_bundle(config, resume=resume, console=console, trainer=trainer)


def train_model_on_ray(
    config: Config,
    cluster: Cluster,
    prepared: PreparedData,
    out: Path,
    resume: bool = False,
    console: Console | None = None,
) -> TrainResult:
    """Run the training loop on ``cluster.workers`` Ray Train workers; write its outputs into ``out``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    name = _run_name(config, cluster, resume)
    events = _events_path(cluster, name)  # restarts after a lost worker, one JSON line each
    # --resume itself restores once, when the run has a checkpoint to restore
    earlier = len(read_restarts(events)) + (1 if resume and _has_checkpoint(cluster.storage / name) else 0)
    if console is not None:
        console.print(f"training on Ray: {cluster.workers} workers × {cluster.cpus:g} CPUs, run {name}")
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "prepared": str(prepared.folder.absolute()),
            "resume": resume,
            "threads": max(1, int(cluster.cpus)),
            "events": str(events),
        },
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=cluster.workers, use_gpu=False, resources_per_worker={"CPU": cluster.cpus}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(cluster.storage),
            failure_config=FailureConfig(max_failures=cluster.settings.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"training on Ray failed: {first}") from exc
    if result.checkpoint is None:
        raise ClusterError("training on Ray ended without a checkpoint (no epoch finished)")
    restarts = read_restarts(events)[earlier:]
    if console is not None and restarts:
        epochs = ", ".join(str(epoch) for epoch in restarts)
        console.print(
            f"[yellow]a worker was lost {len(restarts)} time(s); the run went on from the checkpoint "
            f"of epoch {epochs}[/yellow]"
        )
    out.mkdir(parents=True, exist_ok=True)
    with result.checkpoint.as_directory() as folder:
        shutil.copytree(folder, out, dirs_exist_ok=True)
    return _result_from(out)


def _run_name(config: Config, cluster: Cluster, resume: bool) -> str:
    """A new run name, or with ``resume`` the last run's (Ray Train resumes a run of the same name)."""
    pointer = cluster.storage / LAST_RUN
    if resume and pointer.exists():
        return pointer.read_text().strip()
    # The second alone would let two runs started within it share a run folder.
    name = f"{config.name}-train-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    pointer.write_text(name)
    return name


def _has_checkpoint(run: Path) -> bool:
    """Whether Ray Train holds a checkpoint of the run stored in ``run`` (what a resumed run restores)."""
    from ray.train import Result

    if not run.is_dir():
        return False
    try:
        return Result.from_path(str(run)).checkpoint is not None
    except (RuntimeError, OSError, ValueError):  # no snapshot yet: the run never registered a checkpoint
        return False


def _events_path(cluster: Cluster, name: str) -> Path:
    """Where worker 0 records restarts of the run ``name`` (a JSON line per restart)."""
    return cluster.storage / name / "leanml-events.jsonl"


def read_restarts(events: Path) -> list[int]:
    """The epochs whose checkpoint the run restarted from after a lost worker, in order."""
    if not events.exists():
        return []
    lines = events.read_text().splitlines()
    return [json.loads(line)["epoch"] for line in lines if line.strip()]


def _result_from(out: Path) -> TrainResult:
    """The :class:`TrainResult` of a finished run from the files worker 0 wrote."""
    model, spec = load_model(out)
    metrics = json.loads((out / METRICS_JSON).read_text())
    return TrainResult(
        model=model,
        spec=spec,
        task=metrics["task"],
        monitor=metrics["monitor"],
        history=metrics["history"],
        validation=metrics["validation"],
        test=metrics["test"],
        best_epoch=metrics["best_epoch"],
        stopped_early=metrics["stopped_early"],
        out_dir=out,
    )


# --------------------------------------------------------------------------------------------------
# On each worker
# --------------------------------------------------------------------------------------------------
def _worker_loop(settings: dict[str, Any]) -> None:
    """One Ray Train worker: the local loop on its shard, reporting every epoch."""
    import ray.train
    from ray.train import Checkpoint

    torch.set_num_threads(int(settings["threads"]))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    config = Config.model_validate(settings["config"])
    whole = PreparedData(Path(settings["prepared"]))
    local = Path(tempfile.mkdtemp(prefix=f"leanml-train-{rank}-"))
    shard = shard_split(whole, rank, world, local / "data")
    out = local / "train"
    resume = bool(settings["resume"])
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            shutil.copytree(folder, out, dirs_exist_ok=True)
        resume = True
        held = out / EPOCH_FILE
        epoch = json.loads(held.read_text())["epoch"] if held.exists() else None
        held.unlink(missing_ok=True)  # not part of the run's outputs
        if rank == 0 and epoch is not None:
            events = Path(settings["events"])
            events.parent.mkdir(parents=True, exist_ok=True)
            with events.open("a") as sink:  # one short line per restart: appending is enough
                sink.write(json.dumps({"event": "restored", "epoch": epoch}) + "\n")

    def report(record: dict[str, Any]) -> None:
        metrics = {"epoch": record["epoch"], "train_loss": record["train_loss"]}
        metrics.update({f"val_{k}": v for k, v in record["val_metrics"].items()})
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                shutil.copytree(out / CHECKPOINT_PATH.parent, Path(folder) / CHECKPOINT_PATH.parent)
                (Path(folder) / EPOCH_FILE).write_text(json.dumps({"epoch": record["epoch"]}))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
            else:
                ray.train.report(metrics)

    parallel = DataParallel(
        whole=whole,
        average_gradients=lambda model: _average_gradients(model, world),
        gather=functools.partial(gather_scored, world=world),
        mean=functools.partial(mean_over_workers, world=world),
    )
    result = loop.train_model(
        config, shard, out, resume=resume, plots=False, on_epoch=report, parallel=parallel
    )
    # The final report carries the finished model (the loop's outputs) from worker 0.
    final = {"epoch": len(result.history) + 1, "done": 1}
    if rank == 0:
        ray.train.report(final, checkpoint=Checkpoint.from_directory(str(out)))
    else:
        ray.train.report(final)
    shutil.rmtree(local, ignore_errors=True)


def shard_split(whole: PreparedData, rank: int, world: int, folder: Path) -> PreparedData:
    """A prepared folder holding worker ``rank``'s equal share of the training rows (contiguous; the
    ``rows mod world`` last rows are left out so every worker takes the same number of steps), and its
    contiguous share of the validation and test rows (all of them: shares differ by a row at most, and
    a split with fewer rows than workers leaves some workers none)."""
    folder.mkdir(parents=True, exist_ok=True)
    shard = PreparedData(folder)
    shutil.copy(whole.state_path, shard.state_path)
    train = pl.scan_parquet(whole.split("train"))
    per_worker = int(train.select(pl.len()).collect().item()) // world
    if per_worker == 0:
        raise ClusterError(f"the training split has fewer rows than the {world} workers")
    train.slice(rank * per_worker, per_worker).sink_parquet(shard.split_file("train"))
    for split in SPLITS[1:]:
        files = whole.split(split)
        rows = split_rows(files)
        start, end = rank * rows // world, (rank + 1) * rows // world
        pl.scan_parquet(files).slice(start, end - start).sink_parquet(shard.split_file(split))
    return shard


def mean_over_workers(value: float, world: int) -> float:
    """The mean of every worker's ``value`` (the same on every worker)."""
    if world == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total.item()) / world


def gather_scored(
    task: str, loss_sum: float, y_true: np.ndarray, predictions: np.ndarray, world: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """Every worker's scored rows of its share of a split, joined in rank order (the split's rows in
    their order, as :func:`shard_split` cut them), and their summed loss: the same on every worker.

    Each worker sends its row count and its predictions' width (a worker with no rows knows neither a
    class count), then its rows as float64 (exact for float32 predictions and for class indices), padded
    to the longest share; the dtypes and shapes come back from ``task``, as the loop makes them.
    """
    if world == 1:
        return loss_sum, y_true, predictions
    rows = len(y_true)
    flat = predictions.reshape(rows, -1) if rows else np.zeros((0, 0))
    header = torch.tensor([rows, flat.shape[1]])
    headers = [torch.zeros_like(header) for _ in range(world)]
    dist.all_gather(headers, header)
    counts = [int(h[0]) for h in headers]
    payload = torch.zeros(max(counts), 1 + max(int(h[1]) for h in headers), dtype=torch.float64)
    joined = payload  # an empty split (data.split.test: 0): nothing to swap, on every worker alike
    if any(counts):
        if rows:
            payload[:rows, 0] = torch.from_numpy(y_true.astype(np.float64))
            payload[:rows, 1:] = torch.from_numpy(flat.astype(np.float64))
        payloads = [torch.empty_like(payload) for _ in range(world)]
        dist.all_gather(payloads, payload)
        joined = torch.cat([part[:count] for part, count in zip(payloads, counts, strict=True)])
        total = torch.tensor([loss_sum], dtype=torch.float64)
        dist.all_reduce(total)
        loss_sum = float(total.item())
    targets = joined[:, 0].to(target_dtype(task)).numpy()
    scores = joined[:, 1:].float()  # to_predictions: [rows, classes] for multiclass, else [rows]
    return loss_sum, targets, (scores if task == "multiclass" else scores.reshape(-1)).numpy()


def _average_gradients(model: torch.nn.Module, world: int) -> None:
    """Replace every gradient by its mean over the ``world`` workers: one all-reduce of all of them."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads or world == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
