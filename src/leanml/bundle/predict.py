"""Batch prediction and evaluation over files of any size, with the bundle's own preprocessing.

The input is scanned lazily and processed in chunks of :data:`CHUNK_ROWS` rows; each chunk's predictions
are appended to the output (Parquet, CSV or JSON lines, by extension), so memory stays bounded. Every
input row appears in the output with its ``__row_id`` (its position in the input); a row the serving
rules reject keeps its place with a null prediction and its ``__reason``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from leanml.bundle.artifact import Bundle
from leanml.data.io import expand_paths, scan_table, table_format
from leanml.data.preprocessor import REASON
from leanml.data.split import ROW_ID
from leanml.data.target import target_exprs
from leanml.errors import DataError
from leanml.files import atomic_path
from leanml.metrics import evaluate

CHUNK_ROWS = 65_536
RowsDone = Callable[[int], None]
"""Called with the number of input rows of each chunk once it is done (to show progress)."""


@dataclass(frozen=True)
class PredictSummary:
    """What a batch prediction wrote."""

    output: Path
    rows: int
    rejected: int


def _chunks(source: str, keep: Sequence[str], chunk_rows: int) -> tuple[pl.Schema, Any]:
    frame = scan_table(expand_paths(source)).with_row_index(ROW_ID)
    schema = frame.collect_schema()
    missing = [c for c in keep if c not in schema]
    if missing:
        raise DataError(f"--keep names column(s) not in the data: {', '.join(missing)}")
    return schema, frame.collect_batches(chunk_size=chunk_rows)


def known_rows(source: str) -> int | None:
    """How many rows ``source`` has when that is known without reading it (Parquet keeps the count in its
    footer), else ``None``: CSV and JSON lines would have to be read through to count them."""
    paths = expand_paths(source)
    if table_format(paths[0]) != "parquet":
        return None
    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def predict_file(
    bundle: Bundle,
    source: str,
    output: str | Path,
    keep: Sequence[str] = (),
    chunk_rows: int = CHUNK_ROWS,
    on_rows: RowsDone | None = None,
) -> PredictSummary:
    """Predict every row of ``source`` into ``output``, chunk by chunk, atomically; ``on_rows`` hears of
    each chunk done."""
    output = Path(output)
    fmt = table_format(str(output))
    if fmt not in ("parquet", "csv", "jsonl"):
        raise DataError(f"'{output}': write predictions to .parquet, .csv or .jsonl")
    _, batches = _chunks(source, keep, chunk_rows)
    rows = rejected = 0
    with atomic_path(output) as tmp, open(tmp, "wb") as handle:
        writer: pq.ParquetWriter | None = None
        nulls = list(bundle.state.null_values)
        for chunk in batches:
            # Kept text columns read their null tokens as null, as the inputs do ("NA" is no value).
            texts = [c for c in keep if chunk.schema[c] == pl.String]
            if texts:
                chunk = chunk.with_columns(
                    pl.when(pl.col(c).is_in(nulls)).then(None).otherwise(pl.col(c)).alias(c) for c in texts
                )
            predicted = bundle.predict(chunk, keep=[ROW_ID, *keep])
            rows += predicted.height
            rejected += predicted[REASON].is_not_null().sum()
            if fmt == "parquet":
                table = predicted.to_arrow()
                writer = writer or pq.ParquetWriter(handle, table.schema, compression="zstd")
                writer.write_table(table)
            elif fmt == "csv":
                predicted.write_csv(handle, include_header=rows == predicted.height)
            else:
                predicted.write_ndjson(handle)
            if on_rows is not None:
                on_rows(predicted.height)
        if writer is not None:
            writer.close()
        elif fmt == "parquet":  # no rows at all: still write a valid, empty file with the columns
            empty = pl.DataFrame(
                schema={
                    ROW_ID: pl.UInt32,
                    **dict.fromkeys(keep, pl.String),
                    **{c.name: pl.String for c in bundle.state.columns},
                }
            )
            bundle.predict(empty, keep=[ROW_ID, *keep]).write_parquet(handle)
    return PredictSummary(output=output, rows=rows, rejected=int(rejected))


def evaluate_file(
    bundle: Bundle, source: str, chunk_rows: int = CHUNK_ROWS, on_rows: RowsDone | None = None
) -> dict[str, Any]:
    """Metrics of the bundle on a labelled file; rows without a usable target or rejected are counted;
    ``on_rows`` hears of each chunk done."""
    schema, batches = _chunks(source, (), chunk_rows)
    target = bundle.state.target
    if target.name not in schema:
        raise DataError(f"the data has no target column '{target.name}' to evaluate against")
    encoded, reason = target_exprs(target, schema[target.name], bundle.state.null_values)
    truths: list[np.ndarray] = []
    outputs: list[np.ndarray] = []
    skipped: dict[str, int] = {}
    rows = 0
    for chunk in batches:
        rows += chunk.height
        labelled = chunk.with_columns(encoded.alias("__y"), reason.alias("__why"))
        for why, n in labelled.filter(pl.col("__why").is_not_null()).group_by("__why").len().iter_rows():
            skipped[why] = skipped.get(why, 0) + n
        usable = labelled.filter(pl.col("__why").is_null())
        matrix, rules = bundle.features(usable)
        accepted = rules[REASON].is_null().to_numpy()
        for why, n in rules.filter(pl.col(REASON).is_not_null()).group_by(REASON).len().iter_rows():
            skipped[why] = skipped.get(why, 0) + n
        if accepted.any():
            scores = bundle.scores(matrix[accepted])
            outputs.append(scores)
            truths.append(usable["__y"].to_numpy()[accepted])
        if on_rows is not None:
            on_rows(chunk.height)
    if not truths:
        raise DataError("no row of the data could be evaluated (every target missing or every row rejected)")
    metrics = evaluate(bundle.task, np.concatenate(truths), np.concatenate(outputs))
    return {
        "rows": rows,
        "evaluated": int(sum(len(t) for t in truths)),
        "skipped": skipped,
        "metrics": metrics,
    }
