"""Inference for a batch of requests: each request read on its own, one graph call for all of them.

A request's JSON values become the serving graph's input arrays by :func:`leanml.bundle.feed.read_batch`,
value by value, so nothing about one request (its JSON types, a broken string) can change how another
is read. The values of every readable request go into one array per kind of column (numeric, text,
datetime: the inputs of ``pipeline.onnx``'s packed twin, :attr:`Bundle.pipeline`) and the graph runs
once: it computes the preprocessing, the model, the answers and, per row, the serving checks
(``problems``). Each request then gets its slice of the answers, or its own list of problems (422). No
Polars and no PyTorch on this path: JSON → numpy → one ``InferenceSession.run`` → answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leanml.bundle import graph
from leanml.bundle.artifact import Bundle
from leanml.bundle.drift import DriftMonitor
from leanml.bundle.feed import read_batch, readers, request_feed
from leanml.serve.validation import FieldError, RequestError, accepts, problem_message

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
        self.readers = readers(state)
        self.packing = bundle.pipeline.packing  # the served graph's inputs, one per kind of column
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
            name: [v if accepts(column.type, v) else None for v in columns.get(name, [None] * rows)]
            for name, column in self.columns.items()
        }
        feed, errors = request_feed(usable, rows, self.state, self.readers, self.packing)
        outputs = self._run(feed)
        return errors + self._problems(outputs[graph.PROBLEMS], usable, 0, rows)

    def infer(self, jobs: list[Job]) -> list[Answer | RequestError]:
        """Answer every job of a batch (runs in a worker thread); a job's failure is its own."""
        started = time.perf_counter()
        try:
            columns, rows = [job.columns for job in jobs], [job.rows for job in jobs]
            feed, errors = read_batch(columns, rows, self.state, self.readers, self.packing)
        except Exception:  # a defect in reading: read each request alone, so that it fails alone
            log.exception("cannot read a batch's values; reading its requests one by one")
            return [self._alone(job) for job in jobs]
        prepared = time.perf_counter()
        try:
            outputs = self._run(feed)
        except Exception:  # then one graph call per request, so a failing request fails alone
            log.exception("the serving graph failed on a batch; answering its requests one by one")
            return [self._alone(job) for job in jobs]
        timings = {"preprocess": prepared - started, "model": time.perf_counter() - prepared}
        return self._answers(jobs, outputs, timings, errors)

    # ------------------------------------------------------------------ internals
    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.bundle.pipeline.run_inputs(feed, self._wanted)

    def _alone(self, job: Job) -> Answer | RequestError:
        started = time.perf_counter()
        try:
            feed, errors = request_feed(job.columns, job.rows, self.state, self.readers, self.packing)
            outputs = self._run(feed)
        except Exception:
            log.exception("cannot answer a request")
            return RequestError(500, "internal error while computing the answer")
        return self._answers([job], outputs, {"model": time.perf_counter() - started}, [errors])[0]

    def _answers(
        self,
        jobs: list[Job],
        outputs: dict[str, np.ndarray],
        timings: dict[str, float],
        errors: list[list[FieldError]],
    ) -> list[Answer | RequestError]:
        """Each job's answer from the graph's outputs for all of them, its rows one after the other.

        Labels, probabilities and flags are made once for the batch; a job with a problem in any of its
        rows gets its own 422 listing them.
        """
        problems = outputs[graph.PROBLEMS]
        bad = problems.any(axis=1) if problems.shape[1] else np.zeros(len(problems), dtype=bool)
        flags = graph.flagged_columns(outputs[graph.FLAGS], self.flag_names)
        if self.task == "regression":
            predictions = outputs[graph.PREDICTION].astype(np.float64).tolist()
            probabilities = None
        else:
            predictions = self.labels[outputs[graph.LABEL_INDEX]].tolist()
            probabilities = outputs[graph.PROBABILITIES].astype(np.float64)
        accepted = np.ones(len(bad), dtype=bool)
        answers: list[Answer | RequestError] = []
        start = 0
        for job, unreadable in zip(jobs, errors, strict=True):
            stop = start + job.rows
            if unreadable:
                answers.append(RequestError(422, "invalid input values", unreadable))
                accepted[start:stop] = False
            elif bad[start:stop].any():
                details = self._problems(problems, job.columns, start, job.rows)
                answers.append(RequestError(422, "invalid input values", details))
                accepted[start:stop] = False
            else:
                answers.append(
                    Answer(
                        predictions[start:stop],
                        None if probabilities is None else probabilities[start:stop],
                        flags[start:stop],
                        self.version,
                        {"queue": job.queued_s, **timings},
                    )
                )
            start = stop
        if self.drift is not None and accepted.any():
            features = outputs[graph.FEATURES]
            self.drift.update(features if accepted.all() else features[accepted])
        return answers

    def _problems(
        self, problems: np.ndarray, columns: dict[str, list[Any]], offset: int, rows: int
    ) -> list[FieldError]:
        errors: list[FieldError] = []
        for row, check in zip(*np.nonzero(problems[offset : offset + rows]), strict=True):
            kind, _, name = self.problem_names[check].partition(":")
            value = columns.get(name, [None] * rows)[row]
            message = problem_message(kind, self.columns[name], value, self.state.null_values)
            errors.append({"row": int(row), "field": name, "error": message})
        errors.sort(key=lambda e: (e["row"], e["field"]))
        return errors
