"""Input drift: the training distribution of each input column, and a running PSI against it.

At bundle time :func:`drift_reference` summarizes each input column from the prepared training features:
a numeric or datetime column by deciles of its first feature (the scaled value or the epoch), a
categorical column by the share of each one-hot column plus ``other`` (unseen or unencoded). The server
counts served rows into the same bins (:class:`DriftMonitor`) and reports the population stability index

    PSI = Σ (served share − training share) · ln(served share / training share)

per column; shares are floored at :data:`FLOOR` so empty bins stay finite. Common reading: below 0.1
stable, 0.1–0.25 moderate shift, above 0.25 drifted.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import polars as pl

from leanml.data.state import CategoricalState, PreprocessState, feature_names

FLOOR = 1e-4
BINS = 10
THRESHOLDS = (0.1, 0.25)
MIN_ROWS = 500
"""Served rows below which a column reports "insufficient data" instead of a drift status."""


def drift_reference(state: PreprocessState, train: pl.DataFrame) -> dict[str, Any]:
    """Training distribution of every input column from the prepared training split's features."""
    columns: dict[str, Any] = {}
    for column in state.columns:
        names = feature_names(column)
        if isinstance(column, CategoricalState):
            encoded = [n for n in names if not n.endswith("__missing")]
            block = train.select(encoded).to_numpy().astype(np.float64)
            shares = np.append(block.mean(axis=0), 1.0 - block.sum(axis=1).clip(0, 1).mean())
            columns[column.name] = {
                "kind": "categories",
                "features": encoded,
                "labels": [*encoded, "other"],
                "expected": shares.tolist(),
            }
        else:
            values = train[names[0]].to_numpy().astype(np.float64)
            edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
            counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
            columns[column.name] = {
                "kind": "bins",
                "feature": names[0],
                "edges": edges.tolist(),
                "expected": (counts / max(len(values), 1)).tolist(),
            }
    return {"columns": columns, "rows": train.height}


def psi(expected: np.ndarray, actual_counts: np.ndarray) -> float:
    """Population stability index of served counts against expected shares."""
    total = actual_counts.sum()
    if total == 0:
        return 0.0
    actual = np.maximum(actual_counts / total, FLOOR)
    wanted = np.maximum(np.asarray(expected, dtype=np.float64), FLOOR)
    return float(np.sum((actual - wanted) * np.log(actual / wanted)))


def status(value: float) -> str:
    """``stable``, ``moderate`` or ``drifted`` by the usual PSI thresholds."""
    return "stable" if value < THRESHOLDS[0] else "moderate" if value < THRESHOLDS[1] else "drifted"


class DriftMonitor:
    """Running bin counts of served rows, per input column; thread-safe."""

    def __init__(self, reference: dict[str, Any], features: list[str]) -> None:
        self.reference = reference
        index = {name: i for i, name in enumerate(features)}
        self._lock = threading.Lock()
        self._rows = 0
        self._plan: list[tuple[str, str, Any, np.ndarray]] = []
        for name, ref in reference["columns"].items():
            if ref["kind"] == "bins":
                self._plan.append((name, "bins", index[ref["feature"]], np.asarray(ref["edges"])))
            else:
                self._plan.append((name, "categories", [index[f] for f in ref["features"]], np.zeros(0)))
        self._counts = {
            name: np.zeros(len(ref["expected"]), dtype=np.int64) for name, ref in reference["columns"].items()
        }

    def update(self, features: np.ndarray) -> None:
        """Count a batch of served feature rows."""
        if len(features) == 0:
            return
        increments = {}
        for name, kind, where, edges in self._plan:
            if kind == "bins":
                bins = np.searchsorted(edges, features[:, where], side="right")
                increments[name] = np.bincount(bins, minlength=len(edges) + 1)
            else:
                block = features[:, where]
                other = len(block) - int((block.sum(axis=1) > 0).sum())
                increments[name] = np.append(block.sum(axis=0), other).astype(np.int64)
        with self._lock:
            self._rows += len(features)
            for name, inc in increments.items():
                self._counts[name] += inc

    def report(self) -> dict[str, Any]:
        """PSI and status per column, with the number of rows counted."""
        with self._lock:
            counts = {name: c.copy() for name, c in self._counts.items()}
            rows = self._rows
        columns = {}
        for name, ref in self.reference["columns"].items():
            value = psi(np.asarray(ref["expected"]), counts[name])
            if rows == 0:
                verdict = "no data"
            elif rows < MIN_ROWS:  # a few rows fill a few bins: PSI of a sample that small means nothing
                verdict = "insufficient data"
            else:
                verdict = status(value)
            columns[name] = {"psi": round(value, 6), "status": verdict}
        return {"rows": rows, "min_rows": MIN_ROWS, "thresholds": list(THRESHOLDS), "columns": columns}
