"""Type conversion as Polars expressions: raw values in, typed values plus 'missing' and 'invalid' flags out.

Raw input may be text (CSV), typed (Parquet), or a JSON record. Each converter returns expressions for

* the typed value (null when missing or not convertible),
* ``missing``: the raw value is null, a configured null token, or NaN,
* ``invalid``: a value was present but could not be converted (``'abc'`` in a numeric column, an
  unparseable date, an infinite number).

Invalid values are never dropped silently: preparing counts them per column and treats them as missing;
serving reports them as errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from leanml.errors import DataError

EPOCH_UNIT = "us"
FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class Converted:
    """The typed value of one raw column and its flags, as expressions."""

    value: pl.Expr
    missing: pl.Expr
    invalid: pl.Expr


def _text_is_missing(text: pl.Expr, null_values: list[str]) -> pl.Expr:
    return text.is_null() | text.is_in(null_values)


def _representable(number: pl.Expr) -> pl.Expr:
    # Models compute in float32: a value beyond its range (or ±inf) cannot be represented.
    return number.is_finite() & (number.abs() <= FLOAT32_MAX)


def to_number(name: str, dtype: pl.DataType, null_values: list[str]) -> Converted:
    """Float64 value of a column; text is stripped and parsed, NaN is missing, ±inf and values beyond
    float32's range (±3.4e38) are invalid."""
    col = pl.col(name)
    if dtype == pl.String:
        text = col.str.strip_chars()
        missing = _text_is_missing(text, null_values) | text.str.to_lowercase().eq("nan")
        parsed = text.cast(pl.Float64, strict=False)
        value = pl.when(missing.not_() & _representable(parsed)).then(parsed).otherwise(None)
        return Converted(value, missing, missing.not_() & value.is_null())
    if dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.Null:
        number = col.cast(pl.Float64)
        missing = number.is_null() | number.is_nan()
        value = pl.when(_representable(number)).then(number).otherwise(None)
        return Converted(value, missing, missing.not_() & value.is_null())
    raise DataError(f"column '{name}': expected numbers, the data holds {dtype}")


def to_category(name: str, dtype: pl.DataType, null_values: list[str]) -> Converted:
    """Text key of a categorical value; integral floats print as integers so 1.0 and '1' agree."""
    col = pl.col(name)
    if dtype == pl.String:
        text = col
    elif dtype.is_float():
        text = (
            pl.when(col.is_nan())
            .then(None)
            .when(col == col.floor())
            .then(col.cast(pl.Int64, strict=False).cast(pl.String))
            .otherwise(col.cast(pl.String))
        )
    elif (
        dtype.is_numeric()
        or dtype in (pl.Boolean, pl.Null, pl.Categorical)
        or isinstance(dtype, pl.Enum)
        or dtype.is_temporal()
    ):
        text = col.cast(pl.String)
    else:
        raise DataError(f"column '{name}': expected categories, the data holds {dtype}")
    missing = _text_is_missing(text, null_values)
    value = pl.when(missing).then(None).otherwise(text)
    return Converted(value, missing, pl.lit(False))


def to_datetime(name: str, dtype: pl.DataType, null_values: list[str], fmt: str | None) -> Converted:
    """Naive UTC datetime (microseconds); text is parsed with ``fmt`` or a format inferred from the data."""
    col = pl.col(name)
    if dtype == pl.String:
        text = col.str.strip_chars()
        missing = _text_is_missing(text, null_values)
        # Parsed as UTC then made naive: offsets ('...Z', '+02:00') are honoured, naive text is kept as is.
        parsed = text.str.to_datetime(fmt, strict=False, time_unit=EPOCH_UNIT, time_zone="UTC")
        parsed = parsed.dt.replace_time_zone(None)
        value = pl.when(missing).then(None).otherwise(parsed)
        return Converted(value, missing, missing.not_() & value.is_null())
    if dtype == pl.Date:
        value = col.cast(pl.Datetime(EPOCH_UNIT))
    elif isinstance(dtype, pl.Datetime):
        value = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if dtype.time_zone else col
        value = value.dt.cast_time_unit(EPOCH_UNIT)
    elif dtype == pl.Null:
        value = col.cast(pl.Datetime(EPOCH_UNIT))
    else:
        raise DataError(f"column '{name}': expected dates or datetimes, the data holds {dtype}")
    return Converted(value, value.is_null(), pl.lit(False))


DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
)
FORMAT_SHARE = 0.95


def infer_datetime_format(values: pl.Series) -> str | None:
    """The format (of :data:`DATETIME_FORMATS`) that parses the most of ``values`` (non-missing text),
    if it parses at least 95 % of them; else None.

    Fixing the format once, at analyze time, spares the engine inferring it chunk by chunk (which buffers
    a streaming scan) and keeps training and serving on the same format.
    """
    if values.len() == 0:
        return None
    best, best_share = None, 0.0
    for fmt in DATETIME_FORMATS:
        parsed = values.str.to_datetime(fmt, strict=False, time_unit=EPOCH_UNIT, time_zone="UTC")
        share = 1.0 - parsed.null_count() / values.len()
        if share > best_share:
            best, best_share = fmt, share
    return best if best_share >= FORMAT_SHARE else None


def epoch_seconds(value: pl.Expr) -> pl.Expr:
    """Seconds since 1970-01-01 of a datetime expression, as Float64."""
    return value.dt.epoch(EPOCH_UNIT).cast(pl.Float64) / 1e6


def from_epoch_seconds(seconds: pl.Expr) -> pl.Expr:
    """Inverse of :func:`epoch_seconds`."""
    return pl.from_epoch((seconds * 1e6).round().cast(pl.Int64), time_unit=EPOCH_UNIT)


def datetime_part(value: pl.Expr, part: str) -> pl.Expr:
    """A calendar part of a datetime as Float64; ``dayofweek`` is 0 for Monday, like pandas."""
    parts = {
        "year": value.dt.year(),
        "quarter": value.dt.quarter(),
        "month": value.dt.month(),
        "day": value.dt.day(),
        "dayofweek": value.dt.weekday() - 1,
        "dayofyear": value.dt.ordinal_day(),
        "hour": value.dt.hour(),
        "minute": value.dt.minute(),
        "second": value.dt.second(),
    }
    return parts[part].cast(pl.Float64)
