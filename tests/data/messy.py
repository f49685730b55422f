"""A generator of messy tables, as people really have them, written as CSV and Parquet.

Each case is a pandas or Polars frame written the way the mess arises (pandas writing its index, a
European spreadsheet export, a census extract with spaces after the commas, ...), with the target
``label`` (binary) unless said otherwise. ``write_case(name, folder, fmt)`` writes one case and returns
its path; :data:`CASES` names them.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import polars as pl

ROWS = 600


def _rng(seed: int = 7) -> random.Random:
    return random.Random(seed)


def _labels(values: list[float], rng: random.Random) -> list[str]:
    """A learnable, noisy binary label from a number."""
    cut = sorted(values)[len(values) // 2]
    return ["yes" if (v > cut) != (rng.random() < 0.1) else "no" for v in values]


def pandas_index() -> pd.DataFrame:
    """A frame whose default RangeIndex (0..n-1) pandas writes as an unnamed first column."""
    rng = _rng(1)
    x = [rng.gauss(0, 1) for _ in range(ROWS)]
    frame = pd.DataFrame(
        {"x": x, "color": [rng.choice("rgb") for _ in range(ROWS)], "label": _labels(x, rng)}
    )
    return frame.sample(frac=1.0, random_state=0)  # shuffled: the index is a permutation of 0..n-1


def numbers_as_text() -> pl.DataFrame:
    """Amounts with thousands separators ('1,234.50') and a second column with decimal commas ('1,5')."""
    rng = _rng(2)
    amounts = [rng.uniform(0, 2_000_000) for _ in range(ROWS)]
    rates = [rng.uniform(0, 10) for _ in range(ROWS)]
    return pl.DataFrame(
        {
            "amount": [f"{a:,.2f}" for a in amounts],
            "rate": [f"{r:.2f}".replace(".", ",") for r in rates],
            "label": _labels(amounts, rng),
        }
    )


def mixed_dates() -> pl.DataFrame:
    """Dates in three formats (ISO, day-first with days above 12, 'Jan 5, 2020') and a datetime column."""
    rng = _rng(3)
    days = [date(2020, 1, 1) + timedelta(days=rng.randrange(700)) for _ in range(ROWS)]
    written = []
    for i, d in enumerate(days):
        kind = i % 3
        if kind == 0:
            written.append(d.isoformat())
        elif kind == 1:
            written.append(f"{d.day:02d}/{d.month:02d}/{d.year}")
        else:
            written.append(f"{d:%b} {d.day}, {d.year}")
    ordinals = [float(d.toordinal()) for d in days]
    return pl.DataFrame(
        {
            "day": written,
            "stamp": [f"{d.isoformat()}T{i % 24:02d}:30:00Z" for i, d in enumerate(days)],
            "size": [rng.gauss(0, 1) for _ in range(ROWS)],
            "label": _labels(ordinals, rng),
        }
    )


def spaces() -> pl.DataFrame:
    """A census-like extract: every text value (the target too) has a space after the comma."""
    rng = _rng(4)
    age = [rng.randrange(18, 80) for _ in range(ROWS)]
    work = [rng.choice([" State-gov", " Private", " Self-emp"]) for _ in range(ROWS)]
    return pl.DataFrame(
        {
            "age": age,
            "workclass": work,
            "label": [" >50K" if (a > 45) != (rng.random() < 0.1) else " <=50K" for a in age],
        }
    )


def booleans() -> pl.DataFrame:
    """Booleans written as yes/no in one column and True/FALSE/true in another."""
    rng = _rng(5)
    flag = [rng.random() < 0.5 for _ in range(ROWS)]
    return pl.DataFrame(
        {
            "member": ["yes" if f else "no" for f in flag],
            "active": [
                rng.choice(["True", "true", "TRUE"]) if rng.random() < 0.5 else "false" for _ in range(ROWS)
            ],
            "x": [rng.gauss(0, 1) for _ in range(ROWS)],
            "label": ["a" if f != (rng.random() < 0.1) else "b" for f in flag],
        }
    )


def invalid_values(share: float) -> pl.DataFrame:
    """A numeric column with ``share`` of its values unreadable ('n/a?', 'abc', '12..5')."""
    rng = _rng(6)
    x = [rng.gauss(10, 3) for _ in range(ROWS)]
    bad = set(rng.sample(range(ROWS), round(ROWS * share)))
    junk = ["abc", "12..5", "n/a?", "--", "1 2"]
    return pl.DataFrame(
        {
            "x": [junk[i % len(junk)] if i in bad else f"{v:.3f}" for i, v in enumerate(x)],
            "z": [rng.gauss(0, 1) for _ in range(ROWS)],
            "label": _labels(x, rng),
        }
    )


def duplicates() -> pl.DataFrame:
    """Every tenth row repeated (with its own id, as an export would number it)."""
    rng = _rng(7)
    x = [rng.gauss(0, 1) for _ in range(ROWS)]
    c = [rng.choice("pq") for _ in range(ROWS)]
    labels = _labels(x, rng)
    rows = list(zip(x, c, labels, strict=True))
    rows += rows[::10]
    return pl.DataFrame(
        {
            "id": [f"r{i:05d}" for i in range(len(rows))],
            "x": [r[0] for r in rows],
            "c": [r[1] for r in rows],
            "label": [r[2] for r in rows],
        }
    )


def month_sorted() -> pl.DataFrame:
    """Flights-like rows sorted by month over two years: the last months are only at the end."""
    rng = _rng(8)
    rows = 6000
    months = sorted(rng.randrange(24) for _ in range(rows))
    delay = [rng.gauss(m, 5) for m in months]
    return pl.DataFrame(
        {
            "year": [2013 + m // 12 for m in months],
            "month": [1 + m % 12 for m in months],
            "delay": delay,
            "label": _labels(delay, rng),
        }
    )


def accents() -> pl.DataFrame:
    """Text with accents and the euro sign (for latin-1 / cp1252 files)."""
    rng = _rng(9)
    x = [rng.gauss(0, 1) for _ in range(ROWS)]
    return pl.DataFrame(
        {
            "city": [rng.choice(["Zürich", "Genève", "Malmö", "Besançon"]) for _ in range(ROWS)],
            "x": x,
            "label": _labels(x, rng),
        }
    )


CASES = (
    "pandas_index",
    "numbers_as_text",
    "mixed_dates",
    "spaces",
    "booleans",
    "invalid_few",
    "invalid_many",
    "duplicates",
    "month_sorted",
    "accents",
)


def frame_of(case: str) -> pl.DataFrame | pd.DataFrame:
    """The frame of a case."""
    if case == "invalid_few":
        return invalid_values(0.005)
    if case == "invalid_many":
        return invalid_values(0.2)
    return globals()[case]()


def write_case(
    case: str, folder: Path, fmt: str = "csv", separator: str = ",", encoding: str = "utf-8"
) -> Path:
    """Write a case as ``csv`` (with ``separator`` and ``encoding``) or ``parquet``; return the path.

    A pandas frame keeps its index as pandas writes it: an unnamed first CSV column, or the Parquet
    column ``__index_level_0__``.
    """
    frame = frame_of(case)
    path = folder / f"{case}-{fmt}-{encoding}-{ord(separator)}.{'parquet' if fmt == 'parquet' else 'csv'}"
    if isinstance(frame, pd.DataFrame):
        if fmt == "parquet":
            frame.to_parquet(path, index=True)
        else:
            frame.to_csv(path, sep=separator, encoding=encoding)
        return path
    if fmt == "parquet":
        frame.write_parquet(path)
    else:
        text = frame.write_csv(separator=separator)
        path.write_bytes(text.encode(encoding))
    return path
