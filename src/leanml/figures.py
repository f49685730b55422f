"""Matplotlib figures for the reports: the Agg canvas (no pyplot state, no display), an atomic PNG write,
and axes that read well (integer ticks for counts, plain numbers on log axes).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator

from leanml.files import atomic_path
from leanml.reports import human_number

DPI = 110


def save_figure(fig: Figure, path: Path, top: float = 1.0) -> Path:
    """Render a figure to PNG at ``path``, atomically (see :func:`figure_png` for ``top``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(figure_png(fig, top))
    return path


def figure_png(fig: Figure, top: float = 1.0) -> bytes:
    """Render a figure to PNG bytes (for a report that embeds it without a file); the panels fill the
    figure up to the fraction ``top`` of its height, leaving the rest to a figure-level legend."""
    FigureCanvasAgg(fig)
    fig.tight_layout(rect=(0, 0, 1, top))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def integer_ticks(axis: Axis) -> None:
    """Ticks on whole numbers only: epochs and trials are counted, there is no epoch 1.25."""
    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(FuncFormatter(lambda value, _: human_number(round(value))))


def plain_numbers(axis: Axis, max_ticks: int = 6) -> None:
    """At most ``max_ticks`` ticks labelled with :func:`human_number` (``120,000``, not ``1.2`` and an
    offset of ``1e5``), so that labels stay short and do not run into each other."""
    axis.set_major_locator(MaxNLocator(nbins=max_ticks))
    axis.set_major_formatter(FuncFormatter(lambda value, _: human_number(value)))


class PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (``20``, ``500``, ``0.002``) instead of ``2×10¹``."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return human_number(x)


def log_scale(ax: Axes, values: Any) -> None:
    """Put the y axis of ``ax`` on a log scale, labelled plainly, with room for its smallest value."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PlainLogFormatter(labelOnlyBase=True))
    ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    positive = [float(v) for v in values if v is not None and float(v) > 0]
    if positive:
        # bars grow from the bottom of a log axis: start well below the smallest, so every bar shows
        ax.set_ylim(min(positive) / 3, max(positive) * 2)
