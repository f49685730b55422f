"""Saving matplotlib figures: the Agg canvas (no pyplot state, no display) and an atomic PNG write."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leanml.files import atomic_path


def save_figure(fig: Figure, path: Path) -> Path:
    """Render a figure to PNG at ``path``, atomically."""
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
