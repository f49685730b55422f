"""Reading and writing tables as lazy Polars scans and streaming sinks.

Supported inputs: CSV (``.csv``, ``.tsv``, ``.csv.gz``, ``.zip`` holding one CSV), Parquet and JSON lines
(``.jsonl``, ``.ndjson``), or a glob of shards of one format. Text formats are read with every column as
text so that a stray string deep in a numeric column cannot abort the scan: converting values to numbers
and dates is the job of :mod:`leanml.data.convert`, which counts what it cannot convert.

CSV details: the field separator is sniffed from the first lines (``,`` ``;`` tab ``|``) unless
``data.separator`` says; text in another encoding than UTF-8 (``data.encoding``: ``latin-1``, ``cp1252``,
...) and compressed CSV are converted once, by streaming, into a UTF-8 copy in a cache folder
(``$LEANML_CACHE`` or ``~/.cache/leanml``) and scanned from there, so memory stays bounded whatever the
file size.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import difflib
import glob as globlib
import gzip
import hashlib
import io
import math
import os
import re
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


SEPARATORS = (",", ";", "\t", "|")
SNIFF_BYTES = 1 << 16
UTF8_CHECK_BYTES = 1 << 20


def scan_table(
    source: str | list[str], separator: str | None = None, encoding: str | None = None
) -> pl.LazyFrame:
    """A lazy scan over a file, a glob of shards, or a list of files (all of one format).

    CSV only: ``separator`` (``None``: sniffed from the first file) and ``encoding`` (``None``: UTF-8).
    """
    paths = source if isinstance(source, list) else expand_paths(source)
    fmt = table_format(paths[0])
    for path in paths:
        if os.path.getsize(path) == 0:
            raise DataError(f"'{path}': the file is empty")
    if fmt in ("csv", "csv.gz", "zip"):
        paths = utf8_paths(paths, encoding)
        separator = separator or sniff_separator(paths[0])
        _check_csv_headers(paths, separator)
        return pl.scan_csv(paths, infer_schema=False, separator=separator, missing_columns="insert")
    if fmt == "parquet":
        return pl.scan_parquet(paths, missing_columns="insert")
    return pl.concat([pl.scan_ndjson(p, infer_schema_length=10_000) for p in paths], how="diagonal_relaxed")


def utf8_paths(paths: list[str], encoding: str | None = None) -> list[str]:
    """CSV files as plain UTF-8 files: themselves, or cached copies (decompressed, re-encoded)."""
    fmt = table_format(paths[0])
    codec = codecs.lookup(encoding or "utf-8").name
    if fmt != "csv" or codec != "utf-8":
        return [_utf8_copy(p, fmt, codec) for p in paths]
    for path in paths:
        _check_utf8(path)
    return paths


def sniff_separator(path: str) -> str:
    """The separator of a UTF-8 CSV file, from its first lines: the candidate of :data:`SEPARATORS` that
    splits the header into the most fields with the same count on (nearly) every following line.

    ``.tsv`` files default to tab, others to ``,`` when no candidate splits the header.
    """
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    text = head.decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    if len(head) == SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut off
    lines = lines[:200]
    best, best_key = None, (0, 0.0)
    for candidate in SEPARATORS:
        rows = [len(row) for row in csv.reader(lines, delimiter=candidate) if row]
        if not rows or rows[0] < 2:
            continue
        consistent = sum(n == rows[0] for n in rows) / len(rows)
        key = (1 if consistent >= 0.9 else 0, rows[0] * consistent)
        if key > best_key:
            best, best_key = candidate, key
    if best is not None:
        return best
    return "\t" if path.lower().endswith((".tsv", ".tsv.gz")) else ","


def detect_encoding(path: str) -> str:
    """``utf-8`` when the whole file decodes as UTF-8, else ``cp1252`` when it decodes as that (Windows'
    Western encoding, a superset of latin-1's printable characters), else ``latin-1`` (any bytes)."""
    for encoding in ("utf-8", "cp1252"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with _open_raw(path, table_format(path)) as handle:
                while chunk := handle.read(8 << 20):
                    decoder.decode(chunk)
            decoder.decode(b"", final=True)
            return encoding
        except UnicodeDecodeError:
            continue
    return "latin-1"


def _check_utf8(path: str) -> None:
    with open(path, "rb") as handle:
        head = handle.read(UTF8_CHECK_BYTES)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < UTF8_CHECK_BYTES)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"'{path}': not UTF-8 text (byte 0x{head[exc.start]:02x} at offset {exc.start}); set "
            f"data.encoding to the file's encoding, e.g. latin-1 or cp1252"
        ) from None


def _check_csv_headers(paths: list[str], separator: str) -> None:
    for path in paths:
        names = read_header(path, separator)
        if not names or names == [""]:
            raise DataError(f"'{path}': the file has no header row")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"'{path}': duplicate column names in the header: {', '.join(dupes)}")


def read_header(path: str, separator: str) -> list[str]:
    """The column names in the first line of a UTF-8 CSV file."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        return next(csv.reader(handle, delimiter=separator), [])


def sample_rows(frame: pl.LazyFrame, rows: int) -> tuple[pl.DataFrame, int]:
    """At most ``rows`` rows taken evenly across the whole of ``frame`` (every k-th row), and how many
    rows it has: a month-sorted file shows every month. Two streaming passes, bounded memory."""
    total = int(frame.select(pl.len()).collect(engine="streaming").item())
    if total <= rows:
        return frame.collect(engine="streaming"), total
    step = math.ceil(total / rows)
    position = "__sample_position"
    sample = (
        frame.with_row_index(position)
        .filter(pl.col(position) % step == 0)
        .drop(position)
        .collect(engine="streaming")
    )
    return sample, total


PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def is_pandas_index(name: str) -> bool:
    """Whether a column name is the one pandas gives an index it writes to Parquet."""
    return PANDAS_INDEX.fullmatch(name) is not None


def not_a_column_hint(missing: list[str], names: list[str]) -> str:
    """The end of a 'not a column' message: close names ("did you mean"), a separator hint when the
    header was read as one joined string, and the columns there are."""
    hints = []
    lowered = {n.lower().strip(): n for n in names}
    for name in missing:
        close = [lowered[name.lower().strip()]] if name.lower().strip() in lowered else []
        close = close or difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        if close:
            hints.append(f"did you mean {' or '.join(repr(c) for c in close)} for {name!r}?")
    if len(names) == 1:
        joined = names[0]
        found = [sep for sep in (";", "\t", "|", ",", ":") if sep in joined]
        if found:
            hints.append(
                f"the header was read as one column ({joined[:60]!r}): the separator looks like "
                f"{found[0]!r}; set data.separator: {found[0]!r}"
            )
    return "".join(h + " " for h in hints) + f"the data has: {', '.join(names)}"


def cache_dir() -> Path:
    """Folder for decompressed copies of compressed inputs."""
    root = os.environ.get("LEANML_CACHE") or os.path.join(Path.home(), ".cache", "leanml")
    path = Path(root) / "decompressed"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _utf8_copy(path: str, fmt: str, encoding: str) -> str:
    """A cached, decompressed UTF-8 copy of a (compressed, or differently encoded) CSV file."""
    stat = os.stat(path)
    identity = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{encoding}"
    target = cache_dir() / f"{hashlib.sha256(identity.encode()).hexdigest()[:24]}.csv"
    if not target.exists():
        with _open_raw(path, fmt) as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
            if encoding == "utf-8":
                shutil.copyfileobj(src, dst, length=4 << 20)
            else:
                text = io.TextIOWrapper(src, encoding=encoding, newline="")
                while chunk := text.read(4 << 20):
                    dst.write(chunk.encode("utf-8"))
    if encoding == "utf-8":
        _check_utf8(str(target))
    return str(target)


@contextlib.contextmanager
def _open_raw(path: str, fmt: str) -> Iterator[Any]:
    if fmt == "csv":
        with open(path, "rb") as handle:
            yield handle
        return
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
