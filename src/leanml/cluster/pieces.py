"""Cutting the input into pieces that Ray tasks read in parallel, each knowing its rows' source positions.

A piece is a range of rows of one file (a file of a glob, or a part of a large file). Its first row's
global position is known before any task runs, so every row gets the ``__row_id`` the local stages give
it (its position in the input), whichever task reads it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import ray

from leanml.cluster.session import Cluster, ClusterError
from leanml.data.io import scan_table, table_format
from leanml.data.split import ROW_ID


@dataclass(frozen=True)
class Piece:
    """Rows ``start .. start + rows`` of one input file, whose first row has global row id ``offset``."""

    path: str
    start: int
    rows: int
    offset: int
    index: int = 0


def task_options(cluster: Cluster) -> dict[str, Any]:
    """Ray options of a data task: its CPUs, and Polars held to as many threads."""
    # Polars sizes its thread pool to the machine; a task gets the CPUs it reserved, no more.
    threads = str(max(1, int(cluster.cpus)))
    return {"num_cpus": cluster.cpus, "runtime_env": {"env_vars": {"POLARS_MAX_THREADS": threads}}}


def check_shard_schemas(paths: Sequence[str], schema: pl.Schema) -> None:
    """One clear line when Parquet shards give a column different types (a missing column is allowed:
    it reads as nulls, as locally)."""
    if table_format(paths[0]) != "parquet":
        return
    for path in paths:
        for name, dtype in pl.read_parquet_schema(path).items():
            if name in schema and schema[name] != dtype:
                raise ClusterError(
                    f"shards with different schemas: column '{name}' is {dtype} in '{path}' but "
                    f"{schema[name]} in '{paths[0]}'; write every shard with the same column types"
                )


def plan_pieces(
    paths: Sequence[str], separator: str | None, wanted: int, options: dict[str, Any]
) -> list[Piece]:
    """Count each file's rows (in parallel) and cut the files into about ``wanted`` pieces of similar
    row counts; a piece never spans two files."""
    counts = ray.get([_count_rows.options(**options).remote(p, separator) for p in paths])
    return cut_pieces(paths, counts, wanted)


def cut_pieces(paths: Sequence[str], counts: Sequence[int], wanted: int) -> list[Piece]:
    """The pieces of files of ``counts`` rows: about ``wanted`` in all, in input order."""
    total = sum(counts)
    pieces: list[Piece] = []
    offset = 0
    for path, rows in zip(paths, counts, strict=True):
        parts = max(1, round(wanted * rows / total)) if total else 1
        bounds = np.linspace(0, rows, min(parts, max(rows, 1)) + 1).round().astype(int)
        for lo, hi in itertools.pairwise(bounds):
            pieces.append(
                Piece(path, start=int(lo), rows=int(hi - lo), offset=offset + int(lo), index=len(pieces))
            )
        offset += rows
    return pieces


def read_piece(
    piece: Piece, separator: str | None, schema: dict[str, pl.DataType] | None = None
) -> pl.LazyFrame:
    """The piece's rows, read as the local stages read them; with ``schema``, a column its file lacks
    reads as nulls and the columns come in the schema's order (as a local scan of all shards)."""
    frame = scan_table([piece.path], separator).slice(piece.start, piece.rows)
    if schema is None:
        return frame
    present = frame.collect_schema()
    missing = [pl.lit(None, dtype=d).alias(n) for n, d in schema.items() if n not in present]
    return frame.with_columns(missing).select(list(schema)) if missing else frame


def with_row_ids(frame: pl.LazyFrame, piece: Piece) -> pl.LazyFrame:
    """``frame`` (the piece's rows, or rows derived one to one from them) with ``__row_id`` set to the
    rows' source positions, in the dtype a local scan's row index has."""
    if ROW_ID not in frame.collect_schema():
        frame = frame.with_row_index(ROW_ID)
    dtype = frame.collect_schema()[ROW_ID]
    return frame.with_columns((pl.col(ROW_ID).cast(pl.Int64) + piece.offset).cast(dtype))


@ray.remote
def _count_rows(path: str, separator: str | None) -> int:
    return int(scan_table([path], separator).select(pl.len()).collect(engine="streaming").item())
