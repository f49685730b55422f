"""The prepare stage: raw table → split → fitted preprocessing → prepared Parquet splits + quality report.

Outputs, in ``WORKDIR/NAME/prepare/`` (or the folder given):

* ``train.parquet``, ``validation.parquet``, ``test.parquet``: ``__row_id`` (the row's position in the
  source), the features as float32, and ``__target`` (class index, or the number for regression); on
  a Ray cluster each split is a folder of shards instead (:mod:`leanml.data.prepared`);
* ``preprocess.json``: the frozen :class:`~leanml.data.state.PreprocessState`;
* ``quality.json``: the data-quality report (see :mod:`leanml.data.quality`);
* optionally a rejects file holding every dropped row with ``__reason`` and ``__stage``.

Every row read is accounted for: it lands in one split's output or is counted under a drop reason.
Validation and test rows are transformed under the serving rules, so their metrics reflect what the
server will do. The whole stage streams: the source is scanned lazily and outputs are sunk, never loaded;
each query scans the source on its own rather than sharing a cached copy (see ``collect_each``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from leanml.config import PREPARE_SECTIONS, Config
from leanml.data import convert
from leanml.data.io import collect_each, expand_paths, fingerprint, scan_table
from leanml.data.prepared import PreparedData
from leanml.data.preprocessor import (
    REASON,
    annotate,
    check_columns,
    check_reserved,
    feature_column,
    fit_preprocessor,
    quality_exprs,
)
from leanml.data.quality import build_report
from leanml.data.report import write_prepare_report
from leanml.data.split import GROUP, ROW_ID, SPLITS, TIME, plan_split
from leanml.data.state import PreprocessState
from leanml.data.target import infer_target, target_exprs
from leanml.errors import DataError
from leanml.files import atomic_path, write_json
from leanml.progress import Steps

TARGET = "__target"
PRE_REASON = "__pre_reason"
SPLIT = "__split"
STAGE = "__stage"
DUPLICATE = "duplicate"
MISSING_SPLIT_TIME = "missing_split_time"


@dataclass(frozen=True)
class PrepareResult:
    """What the prepare stage wrote, and the report it computed."""

    out_dir: Path
    state: PreprocessState
    report: dict[str, Any]
    rejects_path: Path | None

    @property
    def prepared(self) -> PreparedData:
        """The output folder as :class:`PreparedData`."""
        return PreparedData(self.out_dir)


def prepare(
    config: Config,
    out_dir: str | Path | None = None,
    rejects: str | Path | None = None,
    console: Console | None = None,
) -> PrepareResult:
    """Run the prepare stage for ``config``; return where the outputs are and the quality report."""
    steps = Steps(console)
    out = Path(out_dir) if out_dir is not None else config.stage_dir("prepare")
    rejects_path = rejects_target(config, rejects)
    nulls = list(config.data.null_values)

    with steps.step("Scanning the data"):
        paths = expand_paths(config.data.train)
        raw = scan_table(paths, config.data.separator, config.data.encoding)
        schema = raw.collect_schema()
        check_reserved(schema)
        check_columns(schema, config.columns, config.target)
        unlisted = [c for c in schema.names() if c not in config.columns and c != config.target]
        target = infer_target(raw, config.target, config.task, nulls)

    with steps.step("Splitting rows"):
        labeled = _label_rows(raw, schema, config, target_state=target)
        plan = plan_split(labeled.filter(pl.col(PRE_REASON).is_null()), config.data.split)
        labeled = labeled.with_columns(
            pl.when(pl.col(PRE_REASON).is_null()).then(plan.expr()).otherwise(None).alias(SPLIT)
        )

    with steps.step("Analyzing the training split"):
        train_rows = labeled.filter(pl.col(SPLIT) == 0)
        try:
            state = fit_preprocessor(train_rows, config.columns, target, nulls)
        except DataError:
            # A column with no usable training value is most often one of unreadable values: say so.
            active = {n: c for n, c in config.columns.items() if c.type != "ignore"}
            check_invalid_shares(labeled, schema, active, nulls, config.data.max_invalid)
            raise

    with steps.step("Transforming and writing the splits"), staging_folder(out) as staging:
        counts = _write_outputs(labeled, state, schema.names(), staging, rejects_path)
        counts["duplicates"] = _count_duplicates(labeled, config, counts)
        report = publish_prepared(
            staging, out, config, state, counts, labeled, schema, paths, plan.method, unlisted
        )
    with steps.step("Writing the report"):
        write_prepare_report(PreparedData(out), report, state)
    return PrepareResult(out_dir=out, state=state, report=report, rejects_path=rejects_path)


def rejects_target(config: Config, rejects: str | Path | None) -> Path | None:
    """Where the dropped rows go: ``rejects`` (the command line), else ``data.rejects``, else nowhere."""
    if rejects:
        return Path(rejects)
    return Path(config.data.rejects) if config.data.rejects else None


@contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A new folder beside ``out`` to write the outputs into (then :func:`publish_prepared`); removed
    when anything fails, so ``out`` keeps its last complete outputs."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=_ensure_parent(out)))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_prepared(
    staging: Path,
    out: Path,
    config: Config,
    state: PreprocessState,
    counts: dict[str, Any],
    labeled: pl.LazyFrame,
    schema: pl.Schema,
    sources: list[str],
    split_method: str,
    unlisted: list[str],
) -> dict[str, Any]:
    """The last steps of prepare, once the splits are written into ``staging``: check the shares of
    invalid values (``labeled``: the source's labeled rows), build the quality report, save the state and
    the report beside the splits, and swap ``staging`` in for ``out``. Returns the report."""
    columns = {c.name: c for c in state.columns}
    nulls = list(config.data.null_values)
    check_invalid_shares(labeled, schema, columns, nulls, config.data.max_invalid, counts)
    report = build_report(
        config=config,
        state=state,
        counts=counts,
        sources=sources,
        fingerprint=fingerprint(sources),
        split_method=split_method,
        unlisted=unlisted,
    )
    staged = PreparedData(staging)
    state.save(staged.state_path)
    write_json(staged.quality_path, report)
    _swap_in(staging, out)
    return report


def _ensure_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _swap_in(staging: Path, out: Path) -> None:
    """Replace ``out`` by the fully written ``staging`` folder; readers never see a half-written one."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def row_key(config: Config) -> pl.Expr:
    """A 64-bit hash of what makes two rows duplicates: the target and every column the model uses.

    Columns of ``type: ignore`` are left out: an index or id column would make every row unique and hide
    rows the model cannot tell apart (and which leak from training into validation and test).
    """
    used = [name for name, spec in config.columns.items() if spec.type != "ignore"]
    return pl.struct([pl.col(c) for c in [*used, config.target]]).hash(seed=0)


def _label_rows(
    raw: pl.LazyFrame, schema: pl.Schema, config: Config, target_state: Any, seen: pl.Series | None = None
) -> pl.LazyFrame:
    """Add row ids, the encoded target, the split key, and the reason a row is unusable before the split.

    ``seen``: the row keys that occur before ``raw``'s first row (on Ray: in earlier pieces of the input);
    with ``data.dedupe``, a row with such a key is a duplicate too.
    """
    nulls = list(config.data.null_values)
    target, target_reason = target_exprs(target_state, schema[config.target], nulls)
    reasons = [target_reason]
    if config.data.dedupe:
        key = row_key(config)
        repeated = key.is_first_distinct().not_()
        if seen is not None:
            repeated = repeated | key.is_in(seen)
        reasons.insert(0, pl.when(repeated).then(pl.lit(DUPLICATE)))
    extra: list[pl.Expr] = []
    by = config.data.split.by
    if by is not None:
        spec = config.columns[by]
        parsed = convert.convert_column(by, spec, schema[by], nulls).value
        extra.append(convert.epoch_seconds(parsed).alias(TIME))
        reasons.append(pl.when(pl.col(TIME).is_null()).then(pl.lit(MISSING_SPLIT_TIME)))
    if target_state.task != "regression" and config.data.split.stratify:
        group = pl.col(TARGET).fill_null(0)
    else:
        group = pl.lit(0, dtype=pl.Int64)
    return (
        raw.with_row_index(ROW_ID)
        .with_columns(target.alias(TARGET), *extra)
        .with_columns(pl.coalesce(reasons).alias(PRE_REASON), group.alias(GROUP))
    )


def _write_outputs(
    labeled: pl.LazyFrame,
    state: PreprocessState,
    raw_columns: list[str],
    staging: Path,
    rejects_path: Path | Sequence[Path] | None,
) -> dict[str, Any]:
    """Sink the three splits (and rejects) and count everything the report needs, in one streaming run.

    ``rejects_path``: one file for every dropped row, written atomically; or one file per stage (before
    split, train, validation, test), the shards of a folder the caller publishes (the Ray stage)."""
    features = [pl.col(feature_column(name)).cast(pl.Float32).alias(name) for name in state.feature_names]
    queries: list[pl.LazyFrame] = []
    rejected_parts: list[pl.LazyFrame] = []
    pre_dropped = labeled.filter(pl.col(PRE_REASON).is_not_null())
    queries.append(pre_dropped.group_by(PRE_REASON).agg(pl.len().alias("n")))
    rejected_parts.append(
        pre_dropped.select(
            ROW_ID, *raw_columns, pl.col(PRE_REASON).alias(REASON), pl.lit("before split").alias(STAGE)
        )
    )
    for index, split in enumerate(SPLITS):
        mode = "train" if split == "train" else "serve"
        part = annotate(labeled.filter(pl.col(SPLIT) == index), state, mode)
        kept = part.filter(pl.col(REASON).is_null()).select(ROW_ID, *features, TARGET)
        queries.append(kept.sink_parquet(PreparedData(staging).split_file(split), lazy=True))
        queries.append(part.select(pl.len().cast(pl.Int64).alias("__rows"), *quality_exprs(state, mode)))
        dropped = part.filter(pl.col(REASON).is_not_null())
        queries.append(dropped.group_by(REASON).agg(pl.len().alias("n")))
        rejected_parts.append(dropped.select(ROW_ID, *raw_columns, REASON, pl.lit(split).alias(STAGE)))
    results = _run_with_rejects(queries, rejected_parts, rejects_path)

    counts: dict[str, Any] = {"before_split": _reason_counts(results[0]), "splits": {}}
    for index, split in enumerate(SPLITS):
        base = 1 + index * 3
        quality = results[base + 1].row(0, named=True)
        counts["splits"][split] = {
            "rows": int(quality.pop("__rows")),
            "columns": quality,
            "dropped": _reason_counts(results[base + 2]),
        }
    return counts


def _run_with_rejects(
    queries: list[pl.LazyFrame],
    rejected_parts: list[pl.LazyFrame],
    rejects_path: Path | Sequence[Path] | None,
) -> list[pl.DataFrame]:
    if rejects_path is None:
        return collect_each(queries)
    if not isinstance(rejects_path, Path):
        parts = zip(rejected_parts, rejects_path, strict=True)
        sinks = [part.sink_parquet(path, lazy=True) for part, path in parts]
        return collect_each([*queries, *sinks])[: len(queries)]
    with atomic_path(rejects_path) as tmp:
        rejects = pl.concat(rejected_parts, how="vertical_relaxed").sink_parquet(tmp, lazy=True)
        return collect_each([*queries, rejects])[:-1]


def _count_duplicates(labeled: pl.LazyFrame, config: Config, counts: dict[str, Any]) -> int:
    """Rows that repeat an earlier row (see :func:`row_key`); dropped already when ``dedupe`` is on.

    Counting keeps one 64-bit hash per distinct row in memory (like ``dedupe``).
    """
    if config.data.dedupe:
        return int(counts["before_split"].get(DUPLICATE, 0))
    return int(labeled.select(pl.len() - row_key(config).n_unique()).collect(engine="streaming").item())


MAX_INVALID_SAMPLES = 5


def check_invalid_shares(
    labeled: pl.LazyFrame,
    schema: pl.Schema,
    columns: Mapping[str, Any],
    null_values: list[str],
    max_invalid: float,
    counts: dict[str, Any] | None = None,
) -> None:
    """Raise a :class:`DataError` naming the first column whose share of unreadable values (over the rows
    with a target) is above ``max_invalid``: the count, five of the values, and the fix.

    ``columns`` maps names to column states or specs (what :func:`convert.convert_column` takes). The
    invalid counts come from ``counts`` (the quality pass) when given, else from one streaming pass.
    """
    rows = labeled.filter(pl.col(SPLIT).is_not_null())
    converted = {n: convert.convert_column(n, c, schema[n], null_values) for n, c in columns.items()}
    if counts is not None:
        total = sum(counts["splits"][s]["rows"] for s in SPLITS)
        invalid = {
            name: sum(int(counts["splits"][s]["columns"][f"{name}|invalid"]) for s in SPLITS)
            for name in converted
        }
    else:
        result = rows.select(
            pl.len().alias("__rows"),
            *[conv.invalid.fill_null(False).sum().alias(name) for name, conv in converted.items()],
        ).collect(engine="streaming")
        total = int(result["__rows"][0])
        invalid = {name: int(result[name][0]) for name in converted}
    for name, column in columns.items():
        n = invalid[name]
        if total == 0 or n / total <= max_invalid:
            continue
        sample = (
            rows.filter(converted[name].invalid.fill_null(False))
            .select(pl.col(name).cast(pl.String))
            .head(MAX_INVALID_SAMPLES)
            .collect(engine="streaming")[name]
            .to_list()
        )
        raise DataError(invalid_message(name, column, n, total, sample, max_invalid))


def invalid_message(name: str, column: Any, n: int, total: int, sample: list[str], max_invalid: float) -> str:
    """The message of :func:`check_invalid_shares`, with the fix that fits the values seen."""
    if column.type == "numeric":
        expected = f"numbers{convert.NumberOptions.of(column).describe()}"
    elif column.type == "datetime":
        expected = convert.describe_formats(convert.datetime_formats(column))
    else:
        expected = "booleans (true/false, yes/no, 1/0)"
    fixes = []
    values = pl.Series(sample, dtype=pl.String)
    if column.type == "numeric":
        options = convert.detect_number_options(values)
        if options is not None:
            keys = ", ".join(
                f"{key}: {value!r}"
                for key, value in (("thousands", options.thousands), ("decimal", options.decimal))
                if value not in (None, ".")
            )
            fixes.append(f"they look like numbers written with {keys}: set them in columns.{name}")
    if column.type == "datetime":
        formats, _ = convert.infer_datetime_formats(values.str.strip_chars(convert.WHITESPACE))
        if formats:
            fixes.append(f"list their formats: columns.{name}.formats: [{', '.join(map(repr, formats))}]")
    fixes += [
        f"change columns.{name}.type",
        "raise data.max_invalid to accept them"
        + (" (imputed, as invalid: null says)" if column.invalid == "null" else " (their rows rejected)"),
    ]
    shown = ", ".join(repr(v) for v in sample)
    return (
        f"column '{name}': {n:,} of {total:,} values ({n / total:.1%}) cannot be read as {expected}, "
        f"e.g. {shown} — more than data.max_invalid ({max_invalid:.1%}). Fix: " + "; or ".join(fixes)
    )


def _reason_counts(frame: pl.DataFrame) -> dict[str, int]:
    return {str(reason): int(n) for reason, n in sorted(frame.iter_rows())}


def ensure_prepared(
    config: Config,
    console: Console | None = None,
    force: bool = False,
    stage: Callable[..., PrepareResult] | None = None,
) -> PreparedData:
    """The prepared data for ``config``, (re)running the stage when it is missing or stale.

    The quality report records a digest of the config's data sections; when they changed since the
    folder was prepared (other data, columns, target or split), the stage runs again: ``stage`` (called
    like :func:`prepare`; default :func:`prepare` itself, e.g. the Ray stage on a cluster).
    """
    prepared = PreparedData(config.stage_dir("prepare"))
    if not force and prepared.exists():
        if prepared.quality().get("config_hash") == config.digest(PREPARE_SECTIONS):
            return prepared
        if console is not None:
            console.print(
                "[yellow]the data sections of the config changed since preparing: preparing again[/yellow]"
            )
    return (stage or prepare)(config, console=console).prepared
