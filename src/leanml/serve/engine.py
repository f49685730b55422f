"""Inference for a batch of requests: each request read on its own, one graph call for all of them.

A request's JSON values become the serving graph's input arrays by :func:`leanml.bundle.feed.request_feed`,
request by request, so nothing about one request (its JSON types, a broken string) can change how another
is read. The arrays of every readable request are stacked and ``pipeline.onnx`` runs once: it computes
the preprocessing, the model, the answers and, per row, the serving checks (``problems``). Each request
then gets its slice of the answers, or its own list of problems (422). No Polars and no PyTorch on this
path: JSON → numpy → one ``InferenceSession.run`` → answers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leanml.bundle import graph
from leanml.bundle.artifact import Bundle
from leanml.bundle.drift import DriftMonitor
from leanml.bundle.feed import Values, read_request, request_feed, stack_feeds
from leanml.data.state import CategoricalState, DatetimeState, NumericState
from leanml.serve.validation import EXPECTED, FieldError, RequestError, show_value

log = logging.getLogger("leanml.serve")


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
    """A loaded bundle with what serving needs next to it: the graph, its checks and the drift monitor."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        state = bundle.state
        self.state = state
        self.task = bundle.task
        self.labels = np.array(bundle.labels, dtype=object)
        self.problem_names = graph.problem_names(state)
        self.flag_names = graph.flag_names(state)
        self.columns = {c.name: c for c in state.columns}
        self.answer_names = (
            [graph.PREDICTION] if self.task == "regression" else [graph.PROBABILITIES, graph.LABEL_INDEX]
        )
        reference = bundle.drift_reference
        self.drift = DriftMonitor(reference, state.feature_names) if reference else None
        self._wanted = [*self.answer_names, graph.PROBLEMS, graph.FLAGS]
        if self.drift is not None:
            self._wanted.append(graph.FEATURES)

    @property
    def version(self) -> str:
        """The bundle's version."""
        return self.bundle.version

    def check(self, columns: dict[str, list[Any]], rows: int) -> list[FieldError]:
        """Value problems of one request on its own (reported together with its structural problems).

        Values of a JSON type their column cannot take (already reported) are left out as missing.
        """
        usable = {
            name: [v if _scalar(v) else None for v in columns.get(name, [None] * rows)]
            for name in self.columns
        }
        feed, errors = request_feed(usable, rows, self.state)
        outputs = self._run(feed)
        return errors + self._problems(outputs[graph.PROBLEMS], usable, 0, rows)

    def infer(self, jobs: list[Job]) -> list[Answer | RequestError]:
        """Answer every job of a batch (runs in a worker thread); a job's failure is its own."""
        started = time.perf_counter()
        answers: list[Answer | RequestError | None] = [None] * len(jobs)
        requests: list[Values] = []
        readable: list[int] = []
        for i, job in enumerate(jobs):
            try:
                values, errors = read_request(job.columns, job.rows, self.state)
            except Exception:  # a defect in reading one request must not touch the others
                log.exception("cannot read a request's values")
                answers[i] = RequestError(500, "internal error while reading the request's values")
                continue
            if errors:
                answers[i] = RequestError(422, "invalid input values", errors)
                continue
            requests.append(values)
            readable.append(i)
        if requests:
            try:
                feed = stack_feeds(requests, self.state)
                prepared = time.perf_counter()
                outputs = self._run(feed)
                parts = _split(outputs, [jobs[i].rows for i in readable])
            except Exception:  # then one graph call per request, so a failing request fails alone
                prepared = time.perf_counter()
                parts = [self._run_alone(values) for values in requests]
            scored = time.perf_counter()
            timings = {"preprocess": prepared - started, "model": scored - prepared}
            accepted: list[np.ndarray] = []
            for i, part in zip(readable, parts, strict=True):
                answers[i] = self._answer(jobs[i], part, timings, accepted)
            if self.drift is not None and accepted:
                self.drift.update(np.concatenate(accepted))
        return answers  # type: ignore[return-value]

    # ------------------------------------------------------------------ internals
    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.bundle.pipeline.session.run(self._wanted, feed)
        return dict(zip(self._wanted, outputs, strict=True))

    def _run_alone(self, values: Values) -> dict[str, np.ndarray] | RequestError:
        try:
            return self._run(stack_feeds([values], self.state))
        except Exception:
            log.exception("the serving graph failed on a request")
            return RequestError(500, "internal error while computing the answer")

    def _answer(
        self,
        job: Job,
        part: dict[str, np.ndarray] | RequestError,
        timings: dict[str, float],
        accepted: list[np.ndarray],
    ) -> Answer | RequestError:
        if isinstance(part, RequestError):
            return part
        problems = part[graph.PROBLEMS]
        if problems.any():
            details = self._problems(problems, job.columns, 0, job.rows)
            return RequestError(422, "invalid input values", details)
        if graph.FEATURES in part:
            accepted.append(part[graph.FEATURES])
        flags = self._flags(part[graph.FLAGS])
        timings = {"queue": job.queued_s, **timings}
        if self.task == "regression":
            values = part[graph.PREDICTION].astype(np.float64)
            return Answer(values.tolist(), None, flags, self.version, timings)
        predictions = self.labels[part[graph.LABEL_INDEX]].tolist()
        probabilities = part[graph.PROBABILITIES].astype(np.float64)
        return Answer(predictions, probabilities, flags, self.version, timings)

    def _flags(self, flags: np.ndarray) -> list[str | None]:
        if not self.flag_names or not flags.any():
            return [None] * len(flags)
        return [
            ",".join(name for name, hit in zip(self.flag_names, row, strict=True) if hit) or None
            for row in flags
        ]

    def _problems(
        self, problems: np.ndarray, columns: dict[str, list[Any]], offset: int, rows: int
    ) -> list[FieldError]:
        errors: list[FieldError] = []
        for row, check in zip(*np.nonzero(problems[offset : offset + rows]), strict=True):
            kind, _, name = self.problem_names[check].partition(":")
            value = columns.get(name, [None] * rows)[row]
            errors.append({"row": int(row), "field": name, "error": self._message(kind, name, value)})
        errors.sort(key=lambda e: (e["row"], e["field"]))
        return errors

    def _message(self, kind: str, name: str, value: Any) -> str:
        column = self.columns[name]
        if kind == "outlier" and isinstance(column, NumericState) and column.outliers is not None:
            lower = "-inf" if column.outliers.lower is None else f"{column.outliers.lower:g}"
            upper = "inf" if column.outliers.upper is None else f"{column.outliers.upper:g}"
            return f"{show_value(value)} is outside the accepted range [{lower}, {upper}]"
        if kind == "unseen_category" and isinstance(column, CategoricalState):
            known = [*column.categories, *column.infrequent]
            shown = ", ".join(known[:10]) + (", …" if len(known) > 10 else "")
            return f"unknown category {show_value(value)} (known: {shown})"
        if isinstance(column, DatetimeState):
            accepted = column.format or "ISO 8601 and the formats leanml recognizes"
            return f"expected {EXPECTED['datetime']} in the format {accepted}, got {show_value(value)}"
        return f"expected {EXPECTED[column.type]}, got {show_value(value)}"


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _split(outputs: dict[str, np.ndarray], rows: list[int]) -> list[dict[str, np.ndarray]]:
    if len(rows) == 1:
        return [outputs]
    bounds = np.cumsum([0, *rows]).tolist()
    return [
        {name: value[start:stop] for name, value in outputs.items()}
        for start, stop in itertools.pairwise(bounds)
    ]
