"""Reading and writing tables as lazy Polars scans and streaming sinks.

Supported inputs: CSV (``.csv``, ``.tsv``, ``.csv.gz``, ``.zip`` holding one CSV), Parquet and JSON lines
(``.jsonl``, ``.ndjson``), or a glob of shards of one format. Text formats are read with every column as
text so that a stray string deep in a numeric column cannot abort the scan: converting values to numbers
and dates is the job of :mod:`leanml.data.convert`, which counts what it cannot convert.

Compressed CSV is decompressed once, by streaming, into a cache folder (``$LEANML_CACHE`` or
``~/.cache/leanml``) and scanned from there, so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import gzip
import hashlib
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from leanml.errors import DataError
from leanml.files import atomic_path

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def table_format(path: str) -> str:
    """The format of a path by its name: ``csv``, ``csv.gz``, ``zip``, ``parquet`` or ``jsonl``."""
    name = path.lower()
    if name.endswith(tuple(s + ".gz" for s in CSV_SUFFIXES)):
        return "csv.gz"
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise DataError(
        f"'{path}': unknown table format; use .csv, .tsv, .csv.gz, .zip, .parquet, .jsonl or .ndjson"
    )


def expand_paths(source: str) -> list[str]:
    """The files a path or glob names, sorted; a clear error when there are none."""
    if globlib.has_magic(source):
        paths = sorted(p for p in globlib.glob(source, recursive=True) if os.path.isfile(p))
        if not paths:
            raise DataError(f"'{source}': the glob matches no files")
        formats = {table_format(p) for p in paths}
        if len(formats) > 1:
            raise DataError(f"'{source}': shards must share one format, found {', '.join(sorted(formats))}")
        return paths
    if not os.path.isfile(source):
        raise DataError(f"'{source}': no such file")
    return [source]


def scan_table(source: str | list[str]) -> pl.LazyFrame:
    """A lazy scan over a file, a glob of shards, or a list of files (all of one format)."""
    paths = source if isinstance(source, list) else expand_paths(source)
    fmt = table_format(paths[0])
    for path in paths:
        if os.path.getsize(path) == 0:
            raise DataError(f"'{path}': the file is empty")
    if fmt in ("csv.gz", "zip"):
        paths = [_decompressed_copy(p, fmt) for p in paths]
        fmt = "csv"
    if fmt == "csv":
        separator = "\t" if paths[0].lower().endswith(".tsv") else ","
        _check_csv_headers(paths, separator)
        return pl.scan_csv(paths, infer_schema=False, separator=separator, missing_columns="insert")
    if fmt == "parquet":
        return pl.scan_parquet(paths, missing_columns="insert")
    return pl.concat([pl.scan_ndjson(p, infer_schema_length=10_000) for p in paths], how="diagonal_relaxed")


def _check_csv_headers(paths: list[str], separator: str) -> None:
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            header = handle.readline().strip()
        if not header:
            raise DataError(f"'{path}': the file has no header row")
        names = header.split(separator)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"'{path}': duplicate column names in the header: {', '.join(dupes)}")


def cache_dir() -> Path:
    """Folder for decompressed copies of compressed inputs."""
    root = os.environ.get("LEANML_CACHE") or os.path.join(Path.home(), ".cache", "leanml")
    path = Path(root) / "decompressed"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _decompressed_copy(path: str, fmt: str) -> str:
    stat = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_dir() / f"{key[:24]}.csv"
    if target.exists():
        return str(target)
    with _open_compressed(path, fmt) as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, length=4 << 20)
    return str(target)


@contextlib.contextmanager
def _open_compressed(path: str, fmt: str) -> Iterator[Any]:
    if fmt == "csv.gz":
        with gzip.open(path, "rb") as handle:
            yield handle
        return
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"'{path}': not a valid zip archive") from None
    with archive:
        members = [m for m in archive.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
        if len(members) != 1:
            raise DataError(f"'{path}': a zip must hold exactly one CSV file, found {len(members)}")
        with archive.open(members[0]) as handle:
            yield handle


def fingerprint(paths: list[str]) -> str:
    """Identity of the input data: sha256 over each file's name and content, read in chunks."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(8 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def collect_each(queries: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    """Run queries over a scan one after the other on the streaming engine, with bounded memory.

    ``pl.collect_all`` shares the common part of several queries by caching it, which for a scan of a
    file means holding the file's rows in memory; here each query streams the source on its own.
    """
    return [query.collect(engine="streaming") for query in queries]
