"""Inference for a batch of requests: one preprocessing pass and one model call for all of them.

Rows of every request in a batch are concatenated into one frame, annotated by the bundle's own
preprocessing (the expressions used in training), checked for per-row problems, and scored in one call
of the runtime. Each request then gets its slice back, or its list of problems (422): a bad row only fails
its own request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from leanml.bundle.artifact import Bundle
from leanml.bundle.drift import DriftMonitor
from leanml.data.preprocessor import (
    FLAGS,
    Stages,
    annotation_stages,
    apply_stages,
    columns_frame,
    feature_column,
    to_matrix,
)
from leanml.metrics import classify
from leanml.serve.validation import FieldError, RequestError, accepts, problem_columns, value_problems


@dataclass
class Job:
    """One request's rows waiting for (or carried through) a batch."""

    columns: dict[str, list[Any]]
    rows: int
    future: asyncio.Future[Any]
    deadline: float
    enqueued: float = field(default_factory=time.perf_counter)
    queued_s: float = 0.0


@dataclass
class Answer:
    """A request's result: predictions (labels or values), probabilities and timings."""

    predictions: list[Any]
    probabilities: np.ndarray | None
    flags: list[Any]
    version: str
    timings: dict[str, float]


class ServedModel:
    """A loaded bundle with what serving needs next to it: the drift monitor and precomputed columns."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        state = bundle.state
        self.inputs = [c.name for c in state.columns]
        self.features = [pl.col(feature_column(name)) for name in state.feature_names]
        self.problems = problem_columns(state)
        self.problems_only = [pl.col(expr.meta.output_name()) for expr in self.problems]
        reference = bundle.drift_reference
        self.drift = DriftMonitor(reference, state.feature_names) if reference else None
        self._stage_cache: dict[tuple[tuple[str, Any], ...], Stages] = {}

    def _stages(self, schema: pl.Schema) -> Stages:
        """The preprocessing expressions for a batch's input dtypes, built once per distinct schema."""
        key = tuple((name, str(dtype)) for name, dtype in schema.items())
        stages = self._stage_cache.get(key)
        if stages is None:
            if len(self._stage_cache) > 64:  # schemas vary with JSON types; keep the cache bounded
                self._stage_cache.clear()
            stages = self._stage_cache[key] = annotation_stages(schema, self.bundle.state, "serve")
        return stages

    @property
    def version(self) -> str:
        """The bundle's version."""
        return self.bundle.version

    def check(self, columns: dict[str, list[Any]], rows: int) -> list[FieldError]:
        """Value problems of one request on its own (used to report them with its structural ones).

        Values of a JSON type their column cannot take (already reported) are left out as missing.
        """
        kinds = {c.name: c.type for c in self.bundle.state.columns}
        usable = {
            name: [v if accepts(kinds[name], v) else None for v in columns.get(name, [None] * rows)]
            for name in self.inputs
        }
        frame = columns_frame(usable, rows)
        annotated = apply_stages(frame, self._stages(frame.schema)).select(*self.problems)
        return value_problems(annotated, columns, self.bundle.state, 0, rows)

    def infer(self, jobs: list[Job]) -> list[Answer | RequestError]:
        """Answer every job of a batch (runs in a worker thread)."""
        bundle = self.bundle
        state = bundle.state
        total = sum(job.rows for job in jobs)
        started = time.perf_counter()
        merged = {name: [v for job in jobs for v in job.columns[name]] for name in self.inputs}
        frame = columns_frame(merged, total)
        annotated = apply_stages(frame, self._stages(frame.schema)).select(
            *self.features, FLAGS, *self.problems
        )
        with np.errstate(over="ignore", invalid="ignore"):
            matrix = to_matrix(annotated.select(self.features))
        finite = np.isfinite(matrix).all(axis=1)
        # Rows with any problem, found once for the whole batch; only their requests are examined closely.
        flagged = ~finite | annotated.select(pl.any_horizontal(self.problems_only)).to_series().to_numpy()
        flags = annotated[FLAGS].to_list()
        prepared = time.perf_counter()
        scores = bundle.scores(matrix)
        scored = time.perf_counter()

        answers: list[Answer | RequestError] = []
        accepted_rows: list[np.ndarray] = []
        offset = 0
        for job in jobs:
            problems: list[FieldError] = []
            if flagged[offset : offset + job.rows].any():
                problems = value_problems(annotated, job.columns, state, offset, job.rows)
                problems += [
                    {
                        "row": int(row),
                        "field": None,
                        "error": "values too large to compute with (features overflow)",
                    }
                    for row in np.flatnonzero(~finite[offset : offset + job.rows])
                ]
            if problems:
                answers.append(RequestError(422, "invalid input values", problems))
            else:
                part = scores[offset : offset + job.rows]
                answers.append(
                    self._answer(
                        part,
                        flags[offset : offset + job.rows],
                        {"queue": job.queued_s, "preprocess": prepared - started, "model": scored - prepared},
                    )
                )
                accepted_rows.append(matrix[offset : offset + job.rows])
            offset += job.rows
        if self.drift is not None and accepted_rows:
            self.drift.update(np.concatenate(accepted_rows))
        return answers

    def _answer(self, part: np.ndarray, flags: list[Any], timings: dict[str, float]) -> Answer:
        bundle = self.bundle
        if bundle.task == "regression":
            return Answer(part.tolist(), None, flags, bundle.version, timings)
        labels = bundle.labels
        classes, probabilities = classify(bundle.task, part)
        return Answer([labels[i] for i in classes], probabilities, flags, bundle.version, timings)
