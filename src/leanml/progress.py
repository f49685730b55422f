"""Progress display for long work: a Rich spinner per step with its elapsed time, and a bar of rows done."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Steps:
    """Show each step of a stage as it runs, then a check mark and how long it took.

    With ``console=None`` nothing is printed, so library calls stay quiet.
    """

    def __init__(self, console: Console | None) -> None:
        self.console = console

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        """Run the body as one named step."""
        if self.console is None:
            yield
            return
        start = time.perf_counter()
        with self.console.status(f"{description}…"):
            yield
        elapsed = time.perf_counter() - start
        self.console.print(f"[green]✓[/green] {description} [dim]({elapsed:.1f}s)[/dim]")


class RowProgress:
    """A bar of rows done out of ``total`` (a running count and the rate when the total is unknown).

    Use it as a context manager and pass :meth:`advance` as the callback of the work; with
    ``console=None`` it shows nothing. The bar goes away when done: the command prints its summary.
    """

    def __init__(self, console: Console | None, description: str, total: int | None = None) -> None:
        self.console = console
        self.description = description
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> RowProgress:
        self.start = time.perf_counter()
        if self.console is not None:
            if self.total is not None:
                columns: list[ProgressColumn] = [
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("rows {task.fields[rate]}"),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                ]
            else:
                columns = [
                    SpinnerColumn(),
                    TextColumn("{task.description} {task.completed:,.0f} rows {task.fields[rate]}"),
                    TimeElapsedColumn(),
                ]
            self.progress = Progress(*columns, console=self.console, transient=True)
            self.task = self.progress.add_task(self.description, total=self.total, rate="")
            self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, rows: int) -> None:
        """``rows`` more rows are done."""
        self.done += rows
        if self.progress is None or self.task is None:
            return
        elapsed = time.perf_counter() - self.start
        rate = f"({self.done / elapsed:,.0f}/s)" if elapsed > 0 else ""
        self.progress.update(self.task, advance=rows, rate=rate)
