"""Batch prediction on a Ray cluster: Ray Data maps a pool of predictors over the input's pieces.

Each predictor loads the bundle once (the serving graph, ``pipeline.onnx``, with its checks) and scores
its pieces chunk by chunk with :meth:`Bundle.predict`, the path ``leanml predict`` takes; rows keep their
``__row_id`` (position in the input). The output is a folder of shards, ``part-00000.parquet`` … in input
order, which Polars and PyArrow read as one table.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import ray

from leanml.bundle.predict import CHUNK_ROWS
from leanml.cluster.pieces import Piece, plan_pieces, read_piece, task_options, with_row_ids
from leanml.cluster.session import Cluster
from leanml.data.io import expand_paths, scan_table, sniff_separator, table_format
from leanml.data.preprocessor import REASON
from leanml.data.split import ROW_ID
from leanml.errors import DataError

PIECES_PER_WORKER = 2


@dataclass(frozen=True)
class RaySummary:
    """What a prediction on the cluster wrote."""

    output: Path
    rows: int
    rejected: int
    shards: int


def predict_on_ray(
    bundle_path: str | Path, source: str, output: str | Path, cluster: Cluster, keep: list[str] | None = None
) -> RaySummary:
    """Predict every row of ``source`` into the folder ``output`` (Parquet or CSV shards by its suffix)."""
    keep = keep or []
    out = Path(output)
    fmt = "csv" if out.suffix == ".csv" else "parquet"
    paths = expand_paths(source)
    separator = sniff_separator(paths[0]) if table_format(paths[0]) == "csv" else None
    schema = scan_table(paths, separator).collect_schema()
    missing = [c for c in keep if c not in schema]
    if missing:
        raise DataError(f"--keep names column(s) not in the data: {', '.join(missing)}")
    options = task_options(cluster)
    pieces = plan_pieces(paths, separator, cluster.workers * PIECES_PER_WORKER, options)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    dataset = ray.data.from_items([asdict(p) for p in pieces], override_num_blocks=len(pieces))
    results = dataset.map_batches(
        PiecePredictor,
        fn_constructor_kwargs={
            "bundle_path": str(Path(bundle_path).absolute()),
            "separator": separator,
            "schema": dict(schema),
            "keep": keep,
            "folder": str(staging.absolute()),
            "fmt": fmt,
        },
        batch_size=1,
        concurrency=min(cluster.workers, len(pieces)),
        num_cpus=cluster.cpus,
        runtime_env=options["runtime_env"],
    ).take_all()
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    staging.rename(out)
    return RaySummary(
        output=out,
        rows=sum(int(r["rows"]) for r in results),
        rejected=sum(int(r["rejected"]) for r in results),
        shards=len(pieces),
    )


class PiecePredictor:
    """A Ray Data worker: the bundle, loaded once; called with one piece at a time."""

    def __init__(
        self,
        bundle_path: str,
        separator: str | None,
        schema: dict[str, pl.DataType],
        keep: list[str],
        folder: str,
        fmt: str,
    ) -> None:
        from leanml.bundle import load

        self.bundle = load(bundle_path)
        self.separator, self.schema, self.keep = separator, schema, keep
        self.folder, self.fmt = Path(folder), fmt

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """Predict the piece in ``batch`` (one row of piece fields) into its shard."""
        piece = Piece(**{k: v[0].item() if hasattr(v[0], "item") else v[0] for k, v in batch.items()})
        frame = with_row_ids(read_piece(piece, self.separator, self.schema), piece)
        nulls = list(self.bundle.state.null_values)
        parts: list[pl.DataFrame] = []
        for chunk in frame.collect_batches(chunk_size=CHUNK_ROWS):
            texts = [c for c in self.keep if chunk.schema[c] == pl.String]
            if texts:  # kept text columns read their null tokens as null, as `leanml predict` does
                chunk = chunk.with_columns(
                    pl.when(pl.col(c).is_in(nulls)).then(None).otherwise(pl.col(c)).alias(c) for c in texts
                )
            parts.append(self.bundle.predict(chunk, keep=[ROW_ID, *self.keep]))
        if not parts:
            empty = pl.DataFrame(schema={c: d for c, d in self.schema.items()}).with_row_index(ROW_ID)
            parts.append(self.bundle.predict(empty, keep=[ROW_ID, *self.keep]))
        predicted = pl.concat(parts)
        target = self.folder / f"part-{piece.index:05d}.{self.fmt}"
        if self.fmt == "csv":
            predicted.write_csv(target)
        else:
            predicted.write_parquet(target, compression="zstd")
        return {
            "rows": np.array([predicted.height]),
            "rejected": np.array([int(predicted[REASON].is_not_null().sum())]),
        }
