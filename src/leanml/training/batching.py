"""Mini-batches for training and evaluation, from contiguous tensors — never per-row Python objects.

A prepared split (``train.parquet``, or the shards of ``train/``) holds the features as float32 columns and
``__target``; every function here takes one file or the split's files in row order. Two ways to batch it,
chosen by :func:`open_split` from its decoded size and the memory budget:

* :class:`TensorBatches` loads the split once into one ``[rows, features]`` float32 tensor and a target
  tensor; an epoch is a seeded ``torch.randperm`` whose slices index the tensors.
* :class:`ParquetBatches` streams the files for data larger than memory: row groups (of all the files) in
  shuffled order, read
  in chunks of a bounded number of rows, each chunk shuffled; rows left over after the last full batch of
  a chunk are carried into the next, so every row is used exactly once per epoch.

Targets come in the dtype the loss needs: float32 for binary (0/1) and regression, int64 class indices for
multiclass. A trailing batch of a single row joins the batch before it, so batch normalisation never sees
a batch of one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from leanml.data.prepare import TARGET
from leanml.errors import DataError

Batch = tuple[torch.Tensor, torch.Tensor]
Files = str | Path | Sequence[str | Path]
"""One Parquet file, or a split's files in row order."""
MB = 1 << 20
TARGET_BYTES = 8


def target_dtype(task: str) -> torch.dtype:
    """The dtype of target tensors for ``task``."""
    return torch.int64 if task == "multiclass" else torch.float32


def split_files(files: Files) -> list[Path]:
    """``files`` as a list of paths."""
    if isinstance(files, str | Path):
        return [Path(files)]
    return [Path(f) for f in files]


def split_rows(path: Files) -> int:
    """Rows of a prepared split (from the Parquet footers, without reading the data)."""
    return sum(int(_footer(f).num_rows) for f in split_files(path))


def decoded_bytes(path: Files, n_features: int) -> int:
    """Bytes a split takes in memory as tensors (from the Parquet footer, without reading the data)."""
    return split_rows(path) * (4 * n_features + TARGET_BYTES)


class TensorBatches:
    """A split held in memory: ``features`` ``[rows, n_features]`` float32 and ``target`` ``[rows]``."""

    def __init__(self, features: torch.Tensor, target: torch.Tensor, batch_size: int) -> None:
        if features.ndim != 2 or len(features) != len(target):
            raise ValueError(
                f"features {tuple(features.shape)} and target {tuple(target.shape)} do not match"
            )
        self.features = features.contiguous()
        self.target = target.contiguous()
        self.batch_size = batch_size
        self.rows = len(features)

    def batches_per_epoch(self) -> int:
        """How many batches :meth:`epoch` yields."""
        return len(_bounds(self.rows, self.batch_size))

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One pass over the rows: in file order, or shuffled by ``generator``."""
        order = None
        if generator is not None:
            order = torch.randperm(self.rows, generator=generator).to(self.features.device)
        for start, stop in _bounds(self.rows, self.batch_size):
            if order is None:
                yield self.features[start:stop], self.target[start:stop]
            else:
                index = order[start:stop]
                yield self.features.index_select(0, index), self.target.index_select(0, index)

    def to(self, device: torch.device) -> TensorBatches:
        """The same split with its tensors on ``device``."""
        return TensorBatches(self.features.to(device), self.target.to(device), self.batch_size)


class ParquetBatches:
    """A split streamed from its Parquet files with at most ``chunk_rows`` rows decoded at a time."""

    def __init__(
        self, path: Files, feature_names: Sequence[str], task: str, batch_size: int, chunk_rows: int
    ) -> None:
        self.files = split_files(path)
        self.feature_names = list(feature_names)
        self.dtype = target_dtype(task)
        self.batch_size = batch_size
        self.chunk_rows = max(chunk_rows, batch_size)
        footers = [_footer(f) for f in self.files]
        self.rows = sum(footer.num_rows for footer in footers)
        self.groups = [(i, g) for i, footer in enumerate(footers) for g in range(footer.num_row_groups)]
        """Every row group of every file, as (file index, row group), in row order."""

    def batches_per_epoch(self) -> int:
        """How many batches :meth:`epoch` yields."""
        return len(_bounds(self.rows, self.batch_size))

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One pass over the rows: in file order, or row groups and rows within chunks shuffled."""
        files = [pq.ParquetFile(f) for f in self.files]
        groups = self.groups
        if generator is not None:
            groups = [self.groups[i] for i in torch.randperm(len(self.groups), generator=generator).tolist()]
        columns = [*self.feature_names, TARGET]
        previous: Batch | None = None  # held back one step, so a lone last row can join it
        carried: Batch | None = None
        for index, group in groups:
            file = files[index]
            for record_batch in file.iter_batches(self.chunk_rows, row_groups=[group], columns=columns):
                x, y = _tensors(record_batch, self.feature_names, self.dtype, self.files[index])
                if carried is not None:
                    x, y = torch.cat([carried[0], x]), torch.cat([carried[1], y])
                if generator is not None:
                    order = torch.randperm(len(x), generator=generator)
                    x, y = x[order], y[order]
                full = len(x) - len(x) % self.batch_size
                for start in range(0, full, self.batch_size):
                    if previous is not None:
                        yield previous
                    previous = (x[start : start + self.batch_size], y[start : start + self.batch_size])
                carried = (x[full:], y[full:])
        tail = carried if carried is not None and len(carried[0]) else None
        if tail is not None and len(tail[0]) == 1 and previous is not None:
            previous, tail = (torch.cat([previous[0], tail[0]]), torch.cat([previous[1], tail[1]])), None
        if previous is not None:
            yield previous
        if tail is not None:
            yield tail


def open_split(
    path: Files,
    feature_names: Sequence[str],
    task: str,
    batch_size: int,
    memory_budget_mb: float,
    device: torch.device | str = "cpu",
) -> TensorBatches | ParquetBatches:
    """Batches over a prepared split: in memory when it fits ``memory_budget_mb``, else streamed."""
    budget = int(memory_budget_mb * MB)
    if decoded_bytes(path, len(feature_names)) <= budget:
        features, target = load_split(path, feature_names, task)
        return TensorBatches(features, target, batch_size).to(torch.device(device))
    # A chunk is decoded (Arrow), converted (numpy/torch) and shuffled (a copy): keep four copies in budget.
    row_bytes = 4 * len(feature_names) + TARGET_BYTES
    return ParquetBatches(path, feature_names, task, batch_size, chunk_rows=budget // (4 * row_bytes))


def load_split(path: Files, feature_names: Sequence[str], task: str) -> Batch:
    """The whole split as a contiguous float32 feature tensor and a target tensor."""
    files = split_files(path)
    tables = [_read(f, feature_names) for f in files]
    # Shards join as chunks of one table (no copy); the tensors are then filled once, as from one file.
    try:
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    except pa.ArrowInvalid as exc:
        raise DataError(f"the shards of prepared split '{files[0].parent}' differ: {exc}") from None
    return _tensors(
        table, feature_names, target_dtype(task), files[0] if len(files) == 1 else files[0].parent
    )


def target_moments(path: Files) -> tuple[float, float]:
    """Mean and (population) standard deviation of a split's target, read in chunks; std 0 becomes 1."""
    count, total, squares = 0, 0.0, 0.0
    shift: float | None = None  # sums around the first value keep the variance accurate
    batches = (
        b for f in split_files(path) for b in pq.ParquetFile(f).iter_batches(1 << 20, columns=[TARGET])
    )
    for batch in batches:
        values = batch.column(0).to_numpy(zero_copy_only=False).astype(np.float64)
        if shift is None and len(values):
            shift = float(values[0])
        centred = values - (shift or 0.0)
        count, total, squares = count + len(values), total + centred.sum(), squares + (centred**2).sum()
    if count == 0:
        raise DataError(f"'{split_files(path)[0]}': the training split has no rows")
    mean = total / count
    std = float(np.sqrt(max(squares / count - mean * mean, 0.0)))
    return mean + (shift or 0.0), std if std > 0 else 1.0


def _footer(path: Path) -> pq.FileMetaData:
    try:
        return pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"cannot read prepared split '{path}': {exc}") from None


def _read(path: Path, feature_names: Sequence[str]) -> pa.Table:
    try:
        file = pq.ParquetFile(path)
        _check_columns(file.schema_arrow, feature_names, path)
        return file.read(columns=[*feature_names, TARGET])
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"cannot read prepared split '{path}': {exc}") from None


def _check_columns(
    data: pa.Table | pa.RecordBatch | pa.Schema, feature_names: Sequence[str], path: Path
) -> None:
    names = data.names if isinstance(data, pa.Schema) else data.schema.names
    missing = [name for name in [*feature_names, TARGET] if name not in names]
    if missing:
        raise DataError(f"'{path}' lacks the columns {', '.join(missing)}; prepare the data again")


def _tensors(
    data: pa.Table | pa.RecordBatch, feature_names: Sequence[str], dtype: torch.dtype, path: Path
) -> Batch:
    _check_columns(data, feature_names, path)
    features = np.empty((data.num_rows, len(feature_names)), dtype=np.float32)
    for j, name in enumerate(feature_names):
        column = data.column(name)
        if column.null_count:
            raise DataError(f"'{path}': feature '{name}' has {column.null_count} nulls; prepare imputes them")
        features[:, j] = column.to_numpy()
    target = data.column(TARGET)
    if target.null_count:
        raise DataError(f"'{path}': '{TARGET}' has {target.null_count} nulls")
    target_values = np.array(target.to_numpy(), dtype=np.int64 if dtype == torch.int64 else np.float32)
    return torch.from_numpy(features), torch.from_numpy(target_values)


def _bounds(rows: int, batch_size: int) -> list[tuple[int, int]]:
    bounds = [(start, min(start + batch_size, rows)) for start in range(0, rows, batch_size)]
    if batch_size > 1 and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], rows)]
    return bounds
