"""Showing results to people: numbers rounded for reading, console tables that keep their headings, and
standalone HTML pages (the reports of prepare, train, tune and shrink).

A report is one HTML file with its figures embedded as base64 PNG, no scripts and no external assets, so
it opens anywhere and can be mailed or archived as it is. Every page uses :func:`write_page`, so the
reports look alike and a fix to the layout lands in all of them.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from leanml.files import atomic_path

SIGNIFICANT_DIGITS = 3
log = logging.getLogger(__name__)


def human_number(value: Any, digits: int = SIGNIFICANT_DIGITS) -> str:
    """``value`` as a person reads it: integers with thousands separators, other numbers to ``digits``
    significant digits (``0.000698910960952134`` → ``0.000699``, ``1e-05`` → ``1e-5``, ``12345.6`` →
    ``12,346``); ``None`` is empty and anything else is ``str(value)``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if not isinstance(value, numbers.Real):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return str(number)
    if number == 0:
        return "0"
    if number.is_integer() and abs(number) < 1e15:
        return f"{int(number):,}"
    magnitude = abs(number)
    if magnitude >= 10**digits:
        return f"{number:,.0f}"
    if magnitude >= 1e-4:
        text = f"{number:.{digits}g}"
        # .3g of 999.7 is '1e+03': a plain integer reads better
        return f"{number:,.0f}" if "e" in text else text
    mantissa, _, exponent = f"{number:.{digits - 1}e}".partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def metric_text(value: float | None) -> str:
    """A metric value with a fixed number of decimals, so that the values of one metric line up and
    compare: four below 10 (accuracy 0.8765), two below 1,000 (rmse 631.25), none above (12,346)."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    return f"{value:.4f}" if magnitude < 10 else f"{value:.2f}" if magnitude < 1000 else f"{value:,.0f}"


# ---- console tables ---------------------------------------------------------------------------------------


def add_column(table: Table, heading: str, justify: str = "left", fold: bool = False) -> None:
    """Add a column whose heading is never cut (``comple…``): at least as wide as its heading.

    ``fold`` lets long cells wrap onto more lines; otherwise the cells stay on one line too.
    """
    table.add_column(
        heading,
        justify=justify,  # type: ignore[arg-type]
        min_width=len(heading),
        no_wrap=not fold,
        overflow="fold",
    )


def fits(table: Table, console: Console) -> bool:
    """Whether ``table`` shows at its natural width on ``console`` (Rich would cut cells otherwise)."""
    unbounded = console.options.update(max_width=1 << 16)
    return Measurement.get(console, unbounded, table).maximum <= console.width


# ---- HTML pages -------------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.best { background: #e8f5e9; font-weight: bold; }
tr.kept { background: #e8f5e9; } tr.rolled-back { background: #fdecea; } tr.parent { background: #e8eef8; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.4em 0.8em; }
.muted { color: #666; }
"""


def png_tag(png: bytes | Path, alt: str, caption: str | None = None) -> str:
    """A ``<figure>`` with the PNG (bytes or a file) embedded as base64, and an optional caption."""
    data = png.read_bytes() if isinstance(png, Path) else png
    encoded = base64.b64encode(data).decode("ascii")
    text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">{text}</figure>'


def html_table(
    head: Sequence[str],
    rows: Sequence[Sequence[Any]],
    numeric: Sequence[bool] | None = None,
    row_classes: Sequence[str | None] | None = None,
) -> str:
    """A ``<table>``; cells are escaped, numbers shown with :func:`human_number`; ``numeric`` right-aligns
    columns (by default those whose cells are all numbers)."""
    if numeric is None:
        numeric = [
            bool(rows) and all(isinstance(row[i], numbers.Number) or row[i] is None for row in rows)
            for i in range(len(head))
        ]
    align = [' class="number"' if n else "" for n in numeric]
    header = "".join(f"<th{a}>{html.escape(h)}</th>" for h, a in zip(head, align, strict=True))
    body = []
    for index, row in enumerate(rows):
        css = row_classes[index] if row_classes is not None else None
        marker = f' class="{html.escape(css)}"' if css else ""
        cells = "".join(
            f"<td{a}>{html.escape(c if isinstance(c, str) else human_number(c))}</td>"
            for c, a in zip(row, align, strict=True)
        )
        body.append(f"<tr{marker}>{cells}</tr>")
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def paragraph(text: str, css: str | None = None) -> str:
    """A ``<p>`` of escaped text."""
    marker = f' class="{css}"' if css else ""
    return f"<p{marker}>{html.escape(text)}</p>"


def write_page(path: Path, title: str, sections: Sequence[str]) -> Path:
    """Write one standalone HTML page (``sections`` are HTML fragments, in order), atomically."""
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("wrote the report %s", path, extra={"path": str(path), "bytes": len(page)})
    return path
