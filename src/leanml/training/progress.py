"""The training progress display: a Rich bar per epoch with the running loss, and a line per epoch."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

REFRESH_SECONDS = 0.2


class TrainingProgress:
    """Shows training on ``console``; with ``console=None`` every method does nothing.

    The running loss is read from the device at most every ``REFRESH_SECONDS``, so the display does not
    slow the loop down.
    """

    def __init__(self, console: Console | None, epochs: int, batches: int, metric: str) -> None:
        self.console = console
        self.epochs = epochs
        self.batches = batches
        self.metric = metric
        self.last_refresh = 0.0
        self.progress: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> TrainingProgress:
        if self.console is not None:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[score]}"),
                console=self.console,
                transient=True,
            )
            self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start_epoch(self, epoch: int, last_score: float | None) -> None:
        """Begin the bar of 0-based ``epoch``; show the monitored metric of the epoch before."""
        if self.progress is None:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        score = "" if last_score is None else f"val {self.metric} {last_score:.4f}"
        self.task = self.progress.add_task(
            "train", total=self.batches, epoch=f"{epoch + 1}/{self.epochs}", loss="…", score=score
        )

    def advance(self, loss: torch.Tensor) -> None:
        """One batch done with ``loss``."""
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self.last_refresh >= REFRESH_SECONDS:
            self.last_refresh = now
            self.progress.update(self.task, advance=1, loss=f"{loss.item():.4f}")
        else:
            self.progress.advance(self.task)

    def end_epoch(self, record: dict[str, Any], improved: bool) -> None:
        """Print the epoch's summary line."""
        if self.console is None:
            return
        scores = "  ".join(f"{name} {value:.4f}" for name, value in record["val_metrics"].items())
        val_loss = "" if record["val_loss"] is None else f"  val_loss {record['val_loss']:.4f}"
        mark = " [green]*[/green]" if improved else ""
        self.console.print(
            f"epoch {record['epoch']:>3}/{self.epochs}  loss {record['train_loss']:.4f}{val_loss}  {scores}"
            f"  lr {record['lr']:.2e}  [dim]{record['seconds']:.1f}s[/dim]{mark}"
        )
