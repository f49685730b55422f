"""Progress display for long work: a Rich spinner per step with its elapsed time."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console


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
