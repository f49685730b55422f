"""The prepare stage on a Ray cluster: the same outputs as :func:`leanml.data.prepare.prepare`, computed
by tasks that each read one piece of the input (a file, or a range of rows of one).

How it stays equal to the local stage: every piece runs the local stage's own Polars expressions over its
rows (row ids offset by the rows before the piece, so they are source positions as locally), and every
global decision is made on the driver by the local functions, fed what the pieces return:

* the target's task and classes: :func:`infer_target` over the distinct target values of all pieces;
* the split: the rounds of :func:`plan_split` on the pieces: (class, hash bucket) histograms summed on the
  driver, then the hashes of the few buckets where a cut falls (a time split: counts and the time range,
  a histogram of the times, then the times in the buckets of the two cuts);
* analyze: :func:`fit_preprocessor` runs on the driver over an empty frame of the right schema while its
  queries run on the pieces; each query's partial results are merged exactly (:mod:`leanml.cluster.merge`)
  and handed back, so the frozen state is the local one (moments agree to rounding, counts and quantiles
  exactly, since quantiles come from merged exact value counts);
* transform: each piece sinks its rows of each split with the same expressions, and its files become the
  splits' shards, ``train/part-00000.parquet`` … in piece order (nothing is read again or joined): the
  same rows in the same order as the local ``train.parquet``, ``validation.parquet`` and ``test.parquet``;
* duplicates: each piece's distinct row keys are partitioned by key among one task per worker (a
  shuffle through the object store), so the driver receives counts only (rows minus distinct keys: the
  duplicates of the quality report). Without ``data.dedupe`` the keys are taken as the pieces are
  written, in the same pass. With it, a pass of its own runs before the split
  (:func:`_shuffle_row_keys`): each task also finds, for every piece, the keys that occur in an earlier
  piece; every piece fetches its own and marks their rows duplicates, besides the repeats within the
  piece: the local rule (a row whose key occurred at a lower row id), since pieces are in row order. So
  the split is planned on the local rows, and the state, the counts and the splits are the local ones;
* rejects: each piece writes its dropped rows of each stage (before the split, then train, validation and
  test) as one file, the shard ``stage × pieces + piece`` of the rejects folder: stage by stage, piece by
  piece within, the local rejects file's rows in its order. The folder is written beside the requested
  path and renamed onto it when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import ray
from rich.console import Console

from leanml.cluster.merge import merge_frames, sum_counters
from leanml.cluster.pieces import (
    Piece,
    check_shard_schemas,
    plan_pieces,
    read_piece,
    task_options,
    with_row_ids,
)
from leanml.cluster.session import Cluster
from leanml.config import Config, DatetimeColumn, SplitConfig
from leanml.data import fit
from leanml.data.fit import Collect
from leanml.data.io import (
    expand_paths,
    scan_table,
    sniff_separator,
    table_format,
    utf8_paths,
)
from leanml.data.prepare import (
    PRE_REASON,
    SPLIT,
    PrepareResult,
    _label_rows,
    _swap_in,
    _write_outputs,
    publish_prepared,
    rejects_target,
    row_key,
    staging_folder,
)
from leanml.data.prepared import PreparedData
from leanml.data.preprocessor import check_columns, check_reserved, fit_preprocessor
from leanml.data.report import write_prepare_report
from leanml.data.split import (
    GROUP,
    ROW_ID,
    SPLITS,
    TIME,
    SplitPlan,
    Wanted,
    cut_buckets,
    hash_keys,
    near_hashes,
    plan_from_near,
    split_histogram,
    time_plan,
    time_ranks,
)
from leanml.data.state import PreprocessState, TargetState
from leanml.data.target import infer_target
from leanml.progress import Steps

SPLIT_BUCKET_BITS = 12
"""Hash buckets of the split's histograms on Ray: 4,096 counts per class and piece reach the driver, then
the hashes of the buckets the cuts fall in (about rows / 4,096 per cut)."""
PIECES_PER_WORKER = 2
"""Pieces per worker: more than one, so a slow piece does not hold the whole stage."""


@dataclass(frozen=True)
class Job:
    """What every piece needs: the config, the input's format and schema, and the decisions so far."""

    config: Config
    separator: str | None
    schema: dict[str, pl.DataType]
    target: TargetState | None = None
    plan: SplitPlan | None = None
    seen: tuple[tuple[ray.ObjectRef, ...], ...] | None = None
    """With ``data.dedupe``: per piece, the object refs of its keys that occur in an earlier piece."""


@dataclass(frozen=True)
class RowKeys:
    """What the shuffle of the pieces' row keys found (:func:`_shuffle_row_keys`)."""

    duplicates: int
    """Rows minus distinct row keys: the rows that repeat an earlier row."""
    seen: tuple[tuple[ray.ObjectRef, ...], ...]
    """Per piece, one object ref per partition: the piece's keys that occur in an earlier piece."""


def prepare_on_ray(
    config: Config,
    cluster: Cluster,
    out_dir: str | Path | None = None,
    console: Console | None = None,
    rejects: str | Path | None = None,
) -> PrepareResult:
    """Run the prepare stage for ``config`` on ``cluster``; the outputs equal :func:`prepare`'s, except
    that the rejects (``rejects``, else ``data.rejects``) are a folder of shards of the local file's rows."""
    steps = Steps(console)
    out = Path(out_dir) if out_dir is not None else config.stage_dir("prepare")
    rejects_path = rejects_target(config, rejects)
    nulls = list(config.data.null_values)
    options = task_options(cluster)

    with steps.step("Scanning the data on the cluster"):
        sources = expand_paths(config.data.train)
        fmt = table_format(sources[0])
        paths = utf8_paths(sources, config.data.encoding) if fmt in ("csv", "csv.gz", "zip") else sources
        separator = (config.data.separator or sniff_separator(paths[0])) if fmt != "parquet" else None
        raw = scan_table(paths, separator)
        schema = raw.collect_schema()
        check_reserved(schema)
        check_columns(schema, config.columns, config.target)
        check_shard_schemas(paths, schema)
        unlisted = [c for c in schema.names() if c not in config.columns and c != config.target]
        job = Job(config=config, separator=separator, schema=dict(schema))
        pieces = plan_pieces(paths, separator, cluster.workers * PIECES_PER_WORKER, options)
        distinct = _run(options, _distinct_targets, pieces, job)
        target = infer_target(
            pl.concat(distinct, how="vertical_relaxed").lazy(), config.target, config.task, nulls
        )
        job = replace(job, target=target)

    with steps.step("Splitting rows"):
        # With dedupe the rows to drop are known before the split is planned, which costs a pass of its
        # own; without it the keys are counted as the pieces are written, in the same pass.
        keys = _shuffle_row_keys(job, pieces, cluster.workers, options) if config.data.dedupe else None
        if keys is not None:
            job = replace(job, seen=keys.seen)
        plan = _plan_split(job, pieces, options)
        job = replace(job, plan=plan)

    with steps.step("Analyzing the training split"):
        columns = _with_datetime_formats(job, pieces, options)
        empty = pl.LazyFrame(schema=_labeled_schema(job, pieces[0]))
        state = _fit_distributed(empty, columns, target, nulls, job, pieces, options)

    with (
        steps.step("Transforming and writing the splits"),
        staging_folder(out) as staging,
        _rejects_folder(rejects_path) as rejected,
    ):
        parts = staging / ".pieces"
        partitions = None if keys is not None else _partitions(cluster.workers)
        counts_all = _write_pieces(job, state, pieces, parts, rejected, options, partitions)
        if keys is not None:
            counts_all["duplicates"] = keys.duplicates
        _shard_splits(parts, len(pieces), PreparedData(staging))
        labeled = _label_rows(raw, schema, config, target).with_columns(
            pl.when(pl.col(PRE_REASON).is_null()).then(plan.expr()).otherwise(None).alias(SPLIT)
        )
        report = publish_prepared(
            staging, out, config, state, counts_all, labeled, schema, sources, plan.method, unlisted
        )
    with steps.step("Writing the report"):
        write_prepare_report(PreparedData(out), report, state)
    return PrepareResult(out_dir=out, state=state, report=report, rejects_path=rejects_path)


def _run(options: dict[str, Any], func: Any, pieces: Sequence[Piece], *args: Any) -> list[Any]:
    """Run ``func(piece, *args)`` for every piece on the cluster; results in piece order."""
    shared = [ray.put(a) for a in args]
    return ray.get([func.options(**options).remote(piece, *shared) for piece in pieces])


def _raw_piece(piece: Piece, job: Job) -> pl.LazyFrame:
    return read_piece(piece, job.separator, job.schema)


def _labeled_piece(piece: Piece, job: Job) -> pl.LazyFrame:
    """The local stage's labeled rows (row ids, target, split key, reason) of the piece, with the split."""
    assert job.target is not None
    raw = _raw_piece(piece, job)
    seen = None
    if job.seen is not None:
        seen = pl.Series(np.concatenate(ray.get(list(job.seen[piece.index]))), dtype=pl.UInt64)
    labeled = with_row_ids(_label_rows(raw, pl.Schema(job.schema), job.config, job.target, seen), piece)
    if job.plan is None:
        return labeled
    return labeled.with_columns(
        pl.when(pl.col(PRE_REASON).is_null()).then(job.plan.expr()).otherwise(None).alias(SPLIT)
    )


def _labeled_schema(job: Job, piece: Piece) -> pl.Schema:
    no_rows = Piece(piece.path, 0, 0, 0)
    return _labeled_piece(no_rows, replace(job, seen=None)).filter(pl.col(SPLIT) == 0).collect_schema()


@ray.remote
def _distinct_targets(piece: Piece, job: Job) -> pl.DataFrame:
    # The target's task and classes depend on which values occur, not on how often: distinct values do.
    name = job.config.target
    return _raw_piece(piece, job).select(name).unique().collect(engine="streaming")


# --------------------------------------------------------------------------------------------------
# Duplicates: one shuffle of the row keys
# --------------------------------------------------------------------------------------------------
def _shuffle_row_keys(job: Job, pieces: Sequence[Piece], workers: int, options: dict[str, Any]) -> RowKeys:
    """Count the duplicate rows and find every piece's keys seen in an earlier piece, the keys never
    reaching the driver: each piece partitions its distinct keys by key mod the number of partitions, and
    one task per partition compares the pieces' keys of that partition."""
    partitions = _partitions(workers)
    shared = ray.put(job)
    keyed = [
        _piece_keys.options(**options, num_returns=partitions).remote(p, shared, partitions) for p in pieces
    ]
    found = [
        _compare_keys.options(**options, num_returns=1 + len(pieces)).remote(*[k[i] for k in keyed])
        for i in range(partitions)
    ]
    distinct = sum(ray.get([f[0] for f in found]))
    seen = tuple(tuple(f[1 + index] for f in found) for index in range(len(pieces)))
    return RowKeys(duplicates=sum(p.rows for p in pieces) - distinct, seen=seen)


@ray.remote
def _piece_keys(piece: Piece, job: Job, partitions: int) -> tuple[np.ndarray, ...]:
    """The piece's distinct row keys in ``partitions`` partitions, by key mod ``partitions``."""
    return _partitioned_keys(_raw_piece(piece, job), job, partitions)


def _partitions(workers: int) -> int:
    """Partitions of the row keys: one task per worker, at least two (a task of one return hands back
    its tuple as a whole)."""
    return max(2, workers)


def _partitioned_keys(rows: pl.LazyFrame, job: Job, partitions: int) -> tuple[np.ndarray, ...]:
    """The distinct row keys of ``rows`` in ``partitions`` partitions, by key mod ``partitions``."""
    keys = rows.select(row_key(job.config).unique()).collect(engine="streaming").to_series().to_numpy()
    partition = keys % np.uint64(partitions)
    return tuple(keys[partition == p] for p in range(partitions))


@ray.remote
def _count_distinct(*partitions: np.ndarray) -> int:
    """Distinct keys in one partition of every piece's keys."""
    return len(np.unique(np.concatenate(partitions))) if partitions else 0


@ray.remote
def _compare_keys(*pieces: np.ndarray) -> tuple[Any, ...]:
    """One partition of every piece's distinct keys (in piece order): the number of distinct keys among
    them, then for each piece the keys that also occur in an earlier piece."""
    keys = np.concatenate(pieces)
    owner = np.repeat(np.arange(len(pieces)), [len(k) for k in pieces])
    # np.unique's index is each key's first occurrence: in its earliest piece, as pieces come in order
    distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    earlier = owner[first][inverse] < owner
    return (len(distinct), *(keys[earlier & (owner == index)] for index in range(len(pieces))))


# --------------------------------------------------------------------------------------------------
# Split: the local plan from rounds over the pieces
# --------------------------------------------------------------------------------------------------
def _plan_split(job: Job, pieces: Sequence[Piece], options: dict[str, Any]) -> SplitPlan:
    """The local :func:`plan_split`'s plan. A hash split runs its two rounds on the pieces: each piece
    hashes its rows once and returns its (class, bucket) histogram, keeping the hashes in the object
    store; the driver sums the histograms, finds the buckets where the cuts fall, and only the hashes in
    those buckets come back; a time split likewise (:func:`_plan_time_split`)."""
    split = job.config.data.split
    shared = ray.put(job)
    if split.by is not None:
        return _plan_time_split(
            split, [_split_times.options(**options, num_returns=2).remote(p, shared) for p in pieces], options
        )
    rounds = [_split_histogram.options(**options, num_returns=2).remote(p, shared) for p in pieces]
    histogram = pl.concat(ray.get([r[0] for r in rounds]), how="vertical_relaxed")
    wanted = cut_buckets(histogram, split)
    near = ray.get([_near_hashes.options(**options).remote(r[1], wanted) for r in rounds])
    return plan_from_near(wanted, pl.concat(near, how="vertical_relaxed"), split)


def _usable_keys(piece: Piece, job: Job, key: str) -> pl.LazyFrame:
    labeled = _labeled_piece(piece, job)
    return labeled.filter(pl.col(PRE_REASON).is_null()).select(ROW_ID, key)


def _plan_time_split(split: SplitConfig, rounds: list[Any], options: dict[str, Any]) -> SplitPlan:
    """A time split's plan from the pieces' times, which stay in the object store: their counts and
    range, then a histogram of :data:`TIME_BUCKETS` equal-width buckets, then only the times in the
    buckets where the validation and test cuts fall (the local plan: exact order statistics)."""
    stats = ray.get([r[0] for r in rounds])
    ranks = time_ranks(sum(n for n, _, _ in stats), split)
    wanted = [rank for rank in ranks if rank is not None]
    if not wanted:
        return time_plan(ranks, {}, split)
    lo, hi = min(s[1] for s in stats), max(s[2] for s in stats)
    counts = ray.get([_time_histogram.options(**options).remote(r[1], lo, hi) for r in rounds])
    histogram = np.sum(counts, axis=0)
    cumulative = np.cumsum(histogram)
    buckets = {rank: int(np.searchsorted(cumulative, rank, side="right")) for rank in wanted}
    needed = sorted(set(buckets.values()))
    near = np.concatenate(
        ray.get([_times_in.options(**options).remote(r[1], lo, hi, needed) for r in rounds])
    )
    in_bucket = _time_buckets(near, lo, hi)
    at_rank = {}
    for rank, bucket in buckets.items():
        before = int(cumulative[bucket] - histogram[bucket])
        at_rank[rank] = float(np.sort(near[in_bucket == bucket])[rank - before])
    return time_plan(ranks, at_rank, split)


TIME_BUCKETS = 4096
"""Equal-width buckets of a time split's histogram on Ray."""


def _time_buckets(times: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Each time's bucket among :data:`TIME_BUCKETS` equal-width ones over ``[lo, hi]`` (the same float
    arithmetic in every task and on the driver, so a time lands in the same bucket everywhere)."""
    if hi <= lo:
        return np.zeros(len(times), dtype=np.int64)
    scaled = (times - lo) / (hi - lo) * TIME_BUCKETS
    return np.clip(scaled.astype(np.int64), 0, TIME_BUCKETS - 1)


@ray.remote
def _split_times(piece: Piece, job: Job) -> tuple[tuple[int, float, float], np.ndarray]:
    """The piece's usable rows' times (kept in the object store) and their count, min and max."""
    frame = _usable_keys(piece, job, TIME).select(TIME).drop_nulls().collect(engine="streaming")
    times = frame[TIME].cast(pl.Float64).to_numpy()
    if len(times) == 0:
        return (0, np.inf, -np.inf), times
    return (len(times), float(times.min()), float(times.max())), times


@ray.remote
def _time_histogram(times: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.bincount(_time_buckets(times, lo, hi), minlength=TIME_BUCKETS)


@ray.remote
def _times_in(times: np.ndarray, lo: float, hi: float, buckets: list[int]) -> np.ndarray:
    return times[np.isin(_time_buckets(times, lo, hi), buckets)]


@ray.remote
def _split_histogram(piece: Piece, job: Job) -> tuple[pl.DataFrame, pl.DataFrame]:
    usable = _usable_keys(piece, job, GROUP)
    hashed = hash_keys(usable, job.config.data.split, SPLIT_BUCKET_BITS).collect(engine="streaming")
    return split_histogram(hashed.lazy()), hashed


@ray.remote
def _near_hashes(hashed: pl.DataFrame, wanted: Wanted) -> pl.DataFrame:
    return near_hashes(hashed.lazy(), wanted)


def _with_datetime_formats(job: Job, pieces: Sequence[Piece], options: dict[str, Any]) -> dict[str, Any]:
    """The column specs with the datetime formats local analyze infers from its row sample: the same
    every-k-th training row sample (:func:`leanml.data.io.sample_rows`), gathered from the pieces."""
    columns = dict(job.config.columns)
    pending = [
        n
        for n, s in columns.items()
        if isinstance(s, DatetimeColumn) and not (s.format or s.formats) and job.schema[n] == pl.String
    ]
    if not pending:
        return columns
    sizes = _run(options, _train_rows, pieces, job)
    total = sum(sizes)
    step = max(1, -(-total // fit.FORMAT_SAMPLE_ROWS))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
    samples = ray.get(
        [
            _train_sample.options(**options).remote(p, ray.put(job), pending, start, step)
            for p, start in zip(pieces, starts, strict=True)
        ]
    )
    sample = pl.concat(samples, how="vertical_relaxed")
    return fit.with_datetime_formats(
        sample.lazy(), pl.Schema(job.schema), columns, list(job.config.data.null_values)
    )


@ray.remote
def _train_rows(piece: Piece, job: Job) -> int:
    frame = _labeled_piece(piece, job).filter(pl.col(SPLIT) == 0)
    return int(frame.select(pl.len()).collect(engine="streaming").item())


@ray.remote
def _train_sample(piece: Piece, job: Job, names: list[str], start: int, step: int) -> pl.DataFrame:
    position = "__sample_position"
    frame = _labeled_piece(piece, job).filter(pl.col(SPLIT) == 0).select(names).with_row_index(position)
    keep = (pl.col(position).cast(pl.Int64) + start) % step == 0
    return frame.filter(keep).drop(position).collect(engine="streaming")


# --------------------------------------------------------------------------------------------------
# Analyze: the local fit, its queries answered by the pieces
# --------------------------------------------------------------------------------------------------
class _Pending(Exception):
    """Raised inside a fit when it reaches a query round whose results are not known yet."""

    def __init__(self, results: list[pl.DataFrame] | None = None) -> None:
        super().__init__("query round pending")
        self.results = results


def _answers(known: Sequence[list[pl.DataFrame]], compute: bool) -> Collect:
    """A query runner for the fit (its ``collect``): the first rounds get ``known`` results; the next
    round is computed here and raised (``compute``, on a piece) or raised empty (on the driver)."""
    rounds = iter(known)

    def collect(queries: list[pl.LazyFrame]) -> list[pl.DataFrame]:
        answer = next(rounds, None)
        if answer is not None:
            return list(answer)
        raise _Pending([q.collect(engine="streaming") for q in queries] if compute else None)

    return collect


def _fit_distributed(
    empty: pl.LazyFrame,
    columns: dict[str, Any],
    target: TargetState,
    nulls: list[str],
    job: Job,
    pieces: Sequence[Piece],
    options: dict[str, Any],
) -> PreprocessState:
    """Run :func:`fit_preprocessor` on the driver, each of its query rounds answered by the pieces."""
    known: list[list[pl.DataFrame]] = []
    while True:
        try:
            return fit_preprocessor(empty, columns, target, nulls, collect=_answers(known, compute=False))
        except _Pending:
            partials = _run(options, _fit_round, pieces, job, columns, known)
            known.append([merge_frames([p[i] for p in partials]) for i in range(len(partials[0]))])


@ray.remote
def _fit_round(
    piece: Piece, job: Job, columns: dict[str, Any], known: list[list[pl.DataFrame]]
) -> list[pl.DataFrame]:
    train_rows = _labeled_piece(piece, job).filter(pl.col(SPLIT) == 0)
    assert job.target is not None
    try:
        # Rounds before this one are finished with the merged answers, so a piece's own emptiness
        # never decides anything here.
        nulls = list(job.config.data.null_values)
        fit_preprocessor(train_rows, columns, job.target, nulls, collect=_answers(known, compute=True))
    except _Pending as pending:
        assert pending.results is not None
        return pending.results
    raise RuntimeError("the fit ended on a piece before its queries were answered")


# --------------------------------------------------------------------------------------------------
# Transform and write
# --------------------------------------------------------------------------------------------------
def _shard_splits(parts: Path, count: int, prepared: PreparedData) -> None:
    """Move every piece's file of each split into the split's folder as its shard, in piece order."""
    for split in SPLITS:
        folder = prepared.split_folder(split)
        folder.mkdir()
        for index in range(count):
            written = PreparedData(parts / f"{index:05d}").split_file(split)
            os.replace(written, folder / PreparedData.shard_name(index))
    shutil.rmtree(parts)


@contextlib.contextmanager
def _rejects_folder(path: Path | None) -> Iterator[Path | None]:
    """A new folder beside ``path`` to write the rejects' shards into, renamed onto ``path`` when the block
    ends well (as the prepared folder: readers never see a half-written one); none without ``path``."""
    if path is None:
        yield None
        return
    with staging_folder(path) as staging:
        yield staging
    _swap_in(staging, path)


def _write_pieces(
    job: Job,
    state: PreprocessState,
    pieces: Sequence[Piece],
    parts: Path,
    rejects: Path | None,
    options: dict[str, Any],
    partitions: int | None,
) -> dict[str, Any]:
    """Sink every piece's rows of each split under ``parts`` (and its rejects, one file per stage, as
    shards into the folder ``rejects``); return the quality counts, summed over the pieces. With
    ``partitions``, the counts include the duplicates (rows minus distinct row keys), counted in the same
    pass: each piece partitions its distinct keys by key mod ``partitions`` and one task per partition
    counts them, so the keys never reach the driver."""
    shared = [ray.put(job), ray.put(state)]
    rejects_folder = str(rejects) if rejects is not None else None
    returns = 1 + (partitions or 0)
    writes = [
        _write_piece.options(**options, num_returns=returns).remote(
            p, *shared, str(parts), rejects_folder, len(pieces), partitions
        )
        for p in pieces
    ]
    if partitions is None:
        return sum_counters(ray.get(writes))
    distinct = [
        _count_distinct.options(**options).remote(*[w[1 + i] for w in writes]) for i in range(partitions)
    ]
    counts = sum_counters(ray.get([w[0] for w in writes]))
    counts["duplicates"] = sum(p.rows for p in pieces) - sum(ray.get(distinct))
    return counts


@ray.remote
def _write_piece(
    piece: Piece,
    job: Job,
    state: PreprocessState,
    parts: str,
    rejects: str | None,
    pieces: int,
    partitions: int | None,
) -> Any:
    """Sink the piece's rows of each split (and its rejects: stage ``s`` as the shard ``s × pieces +
    index``, so the shards hold the local rejects file's order); return its quality counts, and with
    ``partitions`` its distinct row keys in that many partitions."""
    folder = Path(parts) / f"{piece.index:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    shards = None
    if rejects is not None:
        stages = range(1 + len(SPLITS))  # before the split, then each split
        shards = [Path(rejects) / PreparedData.shard_name(s * pieces + piece.index) for s in stages]
    labeled = _labeled_piece(piece, job)
    counts = _write_outputs(labeled, state, list(job.schema), folder, shards)
    if partitions is None:
        return counts
    return (counts, *_partitioned_keys(labeled, job, partitions))
