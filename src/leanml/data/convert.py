"""Type conversion: raw values in, typed values plus 'missing' and 'invalid' flags out — as Polars
expressions for tables, and as per-value Python functions for single values (a served request).

Raw input may be text (CSV), typed (Parquet), or a JSON record. Each ``to_*`` converter returns
expressions for

* the typed value (null when missing or not convertible),
* ``missing``: the raw value is null, a configured null token, or NaN,
* ``invalid``: a value was present but could not be converted (``'abc'`` in a numeric column, an
  unparseable date, an infinite number, ``'maybe'`` in a boolean column).

Each has a per-value twin (:func:`parse_number`, :func:`parse_category`, :func:`parse_datetime`) that
gives the same verdict for one value — the value, ``None`` for missing, or :class:`InvalidValue` — so
prepare, predict and serve read text the same way. The two are kept equal by construction: text is
matched against the same regular expression (digits are ``[0-9]``, whitespace is :data:`WHITESPACE`) and
dates are assembled by the same integer arithmetic, not by two different date libraries; property tests
check it.

Invalid values are never dropped silently: preparing counts them per column, and the column's
``invalid`` policy says whether they are imputed (``null``) or their rows rejected (``reject``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import polars as pl

from leanml.errors import DataError

EPOCH_UNIT = "us"
FLOAT32_MAX = 3.4028234663852886e38
WHITESPACE = " \t\n\r\x0b\x0c\u00a0\u202f"
"""What ``strip`` removes around a value (an explicit set, so Polars and Python strip the same)."""
THOUSANDS_SEPARATORS = (",", ".", " ", "'", "_", "\u00a0", "\u202f")
DECIMAL_MARKS = (".", ",")
TRUE_WORDS = ("true", "t", "yes", "y", "1", "on")
FALSE_WORDS = ("false", "f", "no", "n", "0", "off")
"""The boolean mapping (any case, surrounding whitespace ignored); JSON booleans map the same way."""


class InvalidValue(ValueError):
    """A present value that cannot be read as its column's type; the message says what was expected."""


@dataclass(frozen=True)
class Converted:
    """The typed value of one raw column and its flags, as expressions."""

    value: pl.Expr
    missing: pl.Expr
    invalid: pl.Expr


def _strip(text: pl.Expr) -> pl.Expr:
    return text.str.strip_chars(WHITESPACE)


def _text_is_missing(text: pl.Expr, null_values: Sequence[str]) -> pl.Expr:
    return text.is_null() | text.is_in(list(null_values))


def _representable(number: pl.Expr) -> pl.Expr:
    # Models compute in float32: a value beyond its range (or ±inf) cannot be represented.
    return number.is_finite() & (number.abs() <= FLOAT32_MAX)


# --------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NumberOptions:
    """How a column writes numbers as text: a thousands separator (none by default) and a decimal mark.

    Accepted text (after stripping :data:`WHITESPACE`): an optional sign, digits — grouped by three with
    ``thousands`` when it is set, or ungrouped — an optional fraction after ``decimal``, and an optional
    exponent (``1e5``). ``1,234.5`` needs ``thousands: ','``; ``1.234,5`` needs ``thousands: '.'`` and
    ``decimal: ','``.
    """

    thousands: str | None = None
    decimal: str = "."

    def __post_init__(self) -> None:
        if self.decimal not in DECIMAL_MARKS:
            raise ValueError(
                f"decimal must be one of {', '.join(map(repr, DECIMAL_MARKS))}, got {self.decimal!r}"
            )
        if self.thousands is not None and self.thousands not in THOUSANDS_SEPARATORS:
            allowed = ", ".join(map(repr, THOUSANDS_SEPARATORS))
            raise ValueError(f"thousands must be one of {allowed}, got {self.thousands!r}")
        if self.thousands == self.decimal:
            raise ValueError(f"thousands and decimal are both {self.decimal!r}")

    @classmethod
    def of(cls, column: Any) -> NumberOptions:
        """The options of a column spec or state (any object with ``thousands`` / ``decimal``)."""
        return cls(getattr(column, "thousands", None), getattr(column, "decimal", ".") or ".")

    @property
    def pattern(self) -> str:
        """The regular expression (without anchors) a number written this way matches."""
        d = re.escape(self.decimal)
        integer = "[0-9]+"
        if self.thousands is not None:
            integer = f"(?:[1-9][0-9]{{0,2}}(?:{_literal(self.thousands)}[0-9]{{3}})+|[0-9]+)"
        return f"[+-]?(?:{integer}(?:{d}[0-9]*)?|{d}[0-9]+)(?:[eE][+-]?[0-9]+)?"

    def describe(self) -> str:
        """How the options read in a message."""
        parts = []
        if self.thousands is not None:
            parts.append(f"thousands separator {self.thousands!r}")
        if self.decimal != ".":
            parts.append(f"decimal mark {self.decimal!r}")
        return f" (with {' and '.join(parts)})" if parts else ""


def _literal(ch: str) -> str:
    return "\\" + ch if ch in "\\.^$|?*+()[]{}" else ch


def to_number(
    name: str, dtype: pl.DataType, null_values: Sequence[str], options: NumberOptions | None = None
) -> Converted:
    """Float64 value of a column; text is stripped and parsed as :class:`NumberOptions` says, NaN is
    missing, ±inf and values beyond float32's range (±3.4e38) are invalid."""
    options = options or NumberOptions()
    col = pl.col(name)
    if dtype == pl.String:
        text = _strip(col)
        missing = _text_is_missing(text, null_values) | text.str.to_lowercase().eq("nan")
        normalized = text
        if options.thousands is not None:
            normalized = normalized.str.replace_all(options.thousands, "", literal=True)
        if options.decimal != ".":
            normalized = normalized.str.replace_all(options.decimal, ".", literal=True)
        well_formed = text.str.contains(f"^(?:{options.pattern})$")
        parsed = pl.when(well_formed).then(normalized.cast(pl.Float64, strict=False))
        value = pl.when(missing.not_() & _representable(parsed)).then(parsed).otherwise(None)
        return Converted(value, missing, missing.not_() & value.is_null())
    if dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.Null:
        number = col.cast(pl.Float64)
        missing = number.is_null() | number.is_nan()
        value = pl.when(_representable(number)).then(number).otherwise(None)
        return Converted(value, missing, missing.not_() & value.is_null())
    raise DataError(f"column '{name}': expected numbers, the data holds {dtype}")


@lru_cache(maxsize=64)
def _number_regex(options: NumberOptions) -> re.Pattern[str]:
    return re.compile(options.pattern)


def parse_number(
    value: Any, options: NumberOptions | None = None, null_values: Sequence[str] = ()
) -> float | None:
    """One value as :func:`to_number` reads it: a float, ``None`` when missing, or :class:`InvalidValue`.

    JSON booleans read as 1 and 0, as a boolean column does in :func:`to_number`.
    """
    options = options or NumberOptions()
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise InvalidValue(f"expected a number within float32's range, got {value!r}") from None
        if math.isnan(number):
            return None
        if not (math.isfinite(number) and abs(number) <= FLOAT32_MAX):
            raise InvalidValue(f"expected a number within float32's range, got {value!r}")
        return number
    if not isinstance(value, str):
        raise InvalidValue(f"expected a number, got {value!r}")
    text = value.strip(WHITESPACE)
    if text in null_values or text.lower() == "nan":
        return None
    if _number_regex(options).fullmatch(text) is None:
        raise InvalidValue(f"expected a number{options.describe()}, got {value!r}")
    if options.thousands is not None:
        text = text.replace(options.thousands, "")
    number = float(text.replace(options.decimal, ".") if options.decimal != "." else text)
    if not (math.isfinite(number) and abs(number) <= FLOAT32_MAX):
        raise InvalidValue(f"expected a number within float32's range, got {value!r}")
    return number


def format_number_example(options: NumberOptions) -> str:
    """``-1234567.5`` written with ``options`` (for messages and comments)."""
    grouped = f"1{options.thousands}234{options.thousands}567" if options.thousands else "1234567"
    return f"{grouped}{options.decimal}5"


def detect_number_options(values: pl.Series) -> NumberOptions | None:
    """The options under which the most of ``values`` (present text) read as numbers, when that beats
    plain numbers; ``None`` when plain numbers read as many or none of the candidates helps.

    Candidates: thousands ``,`` with decimal ``.``; decimal ``,`` alone; thousands ``.``, space or
    ``'`` with decimal ``,``; thousands space or ``'`` with decimal ``.``.
    """
    if values.len() == 0:
        return None
    frame = values.rename("v").to_frame()
    candidates = [
        NumberOptions(),
        NumberOptions(thousands=","),
        NumberOptions(decimal=","),
        NumberOptions(thousands=".", decimal=","),
        NumberOptions(thousands=" ", decimal=","),
        NumberOptions(thousands="\u00a0", decimal=","),
        NumberOptions(thousands="'", decimal="."),
        NumberOptions(thousands=" ", decimal="."),
    ]
    counts = frame.select(
        [
            to_number("v", pl.String, [], c).value.is_not_null().sum().alias(str(i))
            for i, c in enumerate(candidates)
        ]
    ).row(0)
    best = max(range(len(candidates)), key=lambda i: (counts[i], -i))
    return candidates[best] if best and counts[best] > counts[0] else None


# --------------------------------------------------------------------------------------------------
# Categories and booleans
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CategoryOptions:
    """``strip``: remove :data:`WHITESPACE` around values (so ``' State-gov'`` is ``'State-gov'``);
    ``boolean``: the column holds booleans — :data:`TRUE_WORDS` become ``'true'``, :data:`FALSE_WORDS`
    ``'false'`` (JSON booleans too), anything else is invalid."""

    strip: bool = False
    boolean: bool = False

    @classmethod
    def of(cls, column: Any) -> CategoryOptions:
        """The options of a column spec or state (any object with ``strip`` / ``boolean``)."""
        return cls(bool(getattr(column, "strip", False)), bool(getattr(column, "boolean", False)))


def to_category(
    name: str, dtype: pl.DataType, null_values: Sequence[str], options: CategoryOptions | None = None
) -> Converted:
    """Text key of a categorical value; integral floats print as integers so 1.0 and '1' agree."""
    options = options or CategoryOptions()
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
    if options.strip or options.boolean:
        text = _strip(text)
    missing = _text_is_missing(text, null_values)
    if not options.boolean:
        return Converted(pl.when(missing).then(None).otherwise(text), missing, pl.lit(False))
    lower = text.str.to_lowercase()
    value = (
        pl.when(missing)
        .then(None)
        .when(lower.is_in(TRUE_WORDS))
        .then(pl.lit("true"))
        .when(lower.is_in(FALSE_WORDS))
        .then(pl.lit("false"))
    )
    return Converted(value, missing, missing.not_() & value.is_null())


def parse_category(
    value: Any, options: CategoryOptions | None = None, null_values: Sequence[str] = ()
) -> str | None:
    """One value as :func:`to_category` reads it: the category, ``None`` when missing, or
    :class:`InvalidValue` (a boolean column given something that is not a boolean)."""
    options = options or CategoryOptions()
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value) or (value == math.floor(value) and not -(2**63) <= value < 2**63):
            return None  # like Polars: an integral float beyond Int64 casts to null
        text = str(int(value)) if value == math.floor(value) else _polars_float_text(value)
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidValue(f"expected a category (text or number), got {value!r}")
    if options.strip or options.boolean:
        text = text.strip(WHITESPACE)
    if text in null_values:
        return None
    if not options.boolean:
        return text
    lower = text.lower()
    if lower in TRUE_WORDS:
        return "true"
    if lower in FALSE_WORDS:
        return "false"
    raise InvalidValue(
        f"expected a boolean ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}), got {value!r}"
    )


def _polars_float_text(value: float) -> str:
    # Polars prints exponents without zero padding: 1.5e-7 where Python writes 1.5e-07.
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", repr(value))


def is_boolean_text(values: pl.Series) -> bool:
    """Whether every present value (text) is a boolean word, with at least one that is not a digit
    (a 0/1 column stays numeric)."""
    lower = values.str.strip_chars(WHITESPACE).str.to_lowercase().unique().drop_nulls().to_list()
    words = set(TRUE_WORDS) | set(FALSE_WORDS)
    return bool(lower) and all(v in words for v in lower) and any(v not in ("0", "1") for v in lower)


# --------------------------------------------------------------------------------------------------
# Dates and datetimes
# --------------------------------------------------------------------------------------------------
# Directive → (regex group name, pattern, pattern when another directive follows directly).
_DIRECTIVES: dict[str, tuple[str, str, str]] = {
    "Y": ("Y", "[0-9]{4}", "[0-9]{4}"),
    "y": ("y", "[0-9]{2}", "[0-9]{2}"),
    "m": ("m", "[0-9]{1,2}", "[0-9]{2}"),
    "d": ("d", "[0-9]{1,2}", "[0-9]{2}"),
    "H": ("H", "[0-9]{1,2}", "[0-9]{2}"),
    "I": ("I", "[0-9]{1,2}", "[0-9]{2}"),
    "M": ("M", "[0-9]{2}", "[0-9]{2}"),
    "S": ("S", "[0-9]{2}", "[0-9]{2}"),
    "f": ("f", "[0-9]{1,9}", "[0-9]{1,9}"),
    "p": ("p", "[AaPp][Mm]", "[AaPp][Mm]"),
    "z": ("z", "Z|[+-][0-9]{2}(?::?[0-9]{2})?", "Z|[+-][0-9]{2}(?::?[0-9]{2})?"),
    "b": ("b", "[A-Za-z]{3}", "[A-Za-z]{3}"),
    "B": ("b", "[A-Za-z]{3,9}", "[A-Za-z]{3,9}"),
}
DATETIME_DIRECTIVES = "%Y %y %m %d %H %I %p %M %S %f %.f %z %b %B %T %%"
"""What a datetime format may use: strptime's meaning, except %.f (an optional '.' and 1–9 digits of
fraction, chrono's), %f (1–9 digits), %z (``Z``, ``+hh``, ``+hhmm`` or ``+hh:mm``), %T (= %H:%M:%S)."""
MONTHS = {
    name: index + 1
    for index, names in enumerate(
        zip(
            ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
            (
                "january",
                "february",
                "march",
                "april",
                "may",
                "june",
                "july",
                "august",
                "september",
                "october",
                "november",
                "december",
            ),
            strict=True,
        )
    )
    for name in names
}
DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%d %b %Y",
    "%d %B %Y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%d-%b-%Y",
    "%Y%m%d",
)
"""Candidates for inference (ISO first; day-first before month-first when both read a value)."""
ISO_FORMATS = DATETIME_FORMATS[1:8]
"""What a datetime column that names no formats reads text with (e.g. text sent for a Parquet datetime)."""


@dataclass(frozen=True)
class DateFormat:
    """A datetime format compiled to one regular expression with a named group per field."""

    format: str
    pattern: str
    fields: frozenset[str]


@lru_cache(maxsize=256)
def compile_format(fmt: str) -> DateFormat:
    """Compile a format of :data:`DATETIME_DIRECTIVES`; ``ValueError`` names what is not supported."""
    tokens: list[tuple[str, str]] = []  # ("dir", letter) or ("lit", char)
    i = 0
    fmt_expanded = fmt.replace("%T", "%H:%M:%S")
    while i < len(fmt_expanded):
        ch = fmt_expanded[i]
        if ch != "%":
            tokens.append(("lit", ch))
            i += 1
            continue
        rest = fmt_expanded[i + 1 : i + 3]
        if rest.startswith("%"):
            tokens.append(("lit", "%"))
            i += 2
        elif rest == ".f":
            tokens.append(("dir", ".f"))
            i += 3
        elif rest[:1] in _DIRECTIVES:
            tokens.append(("dir", rest[:1]))
            i += 2
        else:
            raise ValueError(f"format {fmt!r}: '%{rest[:1]}' is not supported; use {DATETIME_DIRECTIVES}")
    parts: list[str] = []
    fields: set[str] = set()
    for index, (kind, item) in enumerate(tokens):
        if kind == "lit":
            parts.append(_literal(item))
            continue
        group, loose, tight = _DIRECTIVES["f" if item == ".f" else item]
        if group in fields:
            raise ValueError(f"format {fmt!r}: '%{item}' (or its twin) appears twice")
        fields.add(group)
        follows = index + 1 < len(tokens) and tokens[index + 1][0] == "dir"
        body = tight if follows else loose
        parts.append(f"(?:\\.(?P<f>{body}))?" if item == ".f" else f"(?P<{group}>{body})")
    if not ({"Y", "y"} & fields and {"m", "b"} & fields):
        raise ValueError(f"format {fmt!r}: needs a year (%Y or %y) and a month (%m, %b or %B)")
    if ("I" in fields) != ("p" in fields) or ("I" in fields and "H" in fields):
        raise ValueError(f"format {fmt!r}: %I needs %p (and no %H)")
    return DateFormat(fmt, "".join(parts), frozenset(fields))


def datetime_formats(column: Any) -> list[str]:
    """The formats a datetime column spec or state reads text with: ``formats``, else ``[format]``, else
    :data:`ISO_FORMATS`."""
    formats = list(getattr(column, "formats", None) or [])
    fmt = getattr(column, "format", None)
    if not formats and fmt:
        formats = [fmt]
    return formats or list(ISO_FORMATS)


def _resolve_formats(formats: str | Sequence[str] | None) -> list[DateFormat]:
    if isinstance(formats, str):
        formats = [formats]
    try:
        return [compile_format(f) for f in (formats or ISO_FORMATS)]
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _days_from_civil(y: Any, m: Any, d: Any) -> Any:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm; years ≥ 1).

    Works on Python ints and on Polars integer expressions alike, so both paths share it.
    """
    y = y - (m <= 2) * 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _epoch_expr(text: pl.Expr, fmt: DateFormat) -> pl.Expr:
    """Epoch microseconds of text in one format (null when it does not match or is not a real moment)."""
    groups = text.str.extract_groups(f"^(?P<whole>{fmt.pattern})$")

    def number(field: str, default: int) -> pl.Expr:
        if field not in fmt.fields:
            return pl.lit(default, dtype=pl.Int64)
        return groups.struct.field(field).cast(pl.Int64, strict=False)

    if "Y" in fmt.fields:
        year = number("Y", 0)
    else:
        yy = number("y", 0)
        year = pl.when(yy < 69).then(yy + 2000).otherwise(yy + 1900)
    if "m" in fmt.fields:
        month = number("m", 1)
    else:
        name = groups.struct.field("b").str.to_lowercase()
        month = name.replace_strict(MONTHS, default=None, return_dtype=pl.Int64)
    day = number("d", 1)
    minute, second = number("M", 0), number("S", 0)
    ok = pl.lit(True)
    if "I" in fmt.fields:
        hour12 = number("I", 12)
        ok = ok & hour12.is_between(1, 12)
        pm = groups.struct.field("p").str.to_lowercase() == "pm"
        hour = hour12 % 12 + pl.when(pm).then(12).otherwise(0)
    else:
        hour = number("H", 0)
    micros = pl.lit(0, dtype=pl.Int64)
    if "f" in fmt.fields:
        fraction = groups.struct.field("f")
        micros = (fraction + "000000").str.slice(0, 6).cast(pl.Int64, strict=False).fill_null(0)
    offset = pl.lit(0, dtype=pl.Int64)
    if "z" in fmt.fields:
        zone = groups.struct.field("z")
        hours = zone.str.slice(1, 2).cast(pl.Int64, strict=False).fill_null(0)
        minutes = pl.when(zone.str.len_chars() > 3).then(zone.str.tail(2).cast(pl.Int64, strict=False))
        minutes = minutes.fill_null(0)
        sign = pl.when(zone.str.starts_with("-")).then(-1).otherwise(1)
        offset = sign * (hours * 60 + minutes)
        ok = ok & (hours <= 23) & (minutes <= 59)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = (
        pl.when(month == 2)
        .then(pl.when(leap).then(29).otherwise(28))
        .when(month.is_in([4, 6, 9, 11]))
        .then(30)
        .otherwise(31)
    )
    ok = (
        ok
        & groups.struct.field("whole").is_not_null()
        & (year >= 1)
        & month.is_between(1, 12)
        & (day >= 1)
        & (day <= month_days)
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 59)
    )
    epoch = (
        _days_from_civil(year, month, day) * 86_400_000_000
        + ((hour * 60 + minute) * 60 + second) * 1_000_000
        + micros
        - offset * 60_000_000
    )
    return pl.when(ok.fill_null(False)).then(epoch)


def _parse_with(fmt: DateFormat, text: str) -> int | None:
    """Epoch microseconds of ``text`` in one format, or None: the per-value twin of :func:`_epoch_expr`."""
    match = _format_regex(fmt).fullmatch(text)
    if match is None:
        return None
    g = match.groupdict()
    if g.get("Y") is not None:
        year = int(g["Y"])
    else:
        yy = int(g["y"])
        year = yy + 2000 if yy < 69 else yy + 1900
    month = int(g["m"]) if g.get("m") is not None else MONTHS.get(g["b"].lower())
    day = int(g["d"]) if g.get("d") is not None else 1
    minute = int(g["M"]) if g.get("M") is not None else 0
    second = int(g["S"]) if g.get("S") is not None else 0
    if g.get("I") is not None:
        hour12 = int(g["I"])
        if not 1 <= hour12 <= 12:
            return None
        hour = hour12 % 12 + (12 if g["p"].lower() == "pm" else 0)
    else:
        hour = int(g["H"]) if g.get("H") is not None else 0
    micros = int((g["f"] + "000000")[:6]) if g.get("f") is not None else 0
    offset = 0
    if g.get("z") is not None:
        zone = g["z"]
        hours = int(zone[1:3]) if zone != "Z" else 0
        minutes = int(zone[-2:]) if len(zone) > 3 else 0
        if hours > 23 or minutes > 59:
            return None
        offset = (-1 if zone.startswith("-") else 1) * (hours * 60 + minutes)
    if month is None or not (year >= 1 and 1 <= month <= 12 and hour <= 23 and minute <= 59 and second <= 59):
        return None
    leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
    month_days = (29 if leap else 28) if month == 2 else 30 if month in (4, 6, 9, 11) else 31
    if not 1 <= day <= month_days:
        return None
    return (
        _days_from_civil(year, month, day) * 86_400_000_000
        + ((hour * 60 + minute) * 60 + second) * 1_000_000
        + micros
        - offset * 60_000_000
    )


@lru_cache(maxsize=256)
def _format_regex(fmt: DateFormat) -> re.Pattern[str]:
    return re.compile(fmt.pattern)


def to_datetime(
    name: str, dtype: pl.DataType, null_values: Sequence[str], formats: str | Sequence[str] | None
) -> Converted:
    """Naive UTC datetime (microseconds). Text is stripped and read with the first of ``formats`` that
    gives a real moment (see :data:`DATETIME_DIRECTIVES`; none: :data:`ISO_FORMATS`); a ``%z``
    offset converts to UTC, text without one is taken as it is."""
    col = pl.col(name)
    if dtype == pl.String:
        text = _strip(col)
        missing = _text_is_missing(text, null_values)
        epoch = pl.coalesce([_epoch_expr(text, f) for f in _resolve_formats(formats)])
        value = pl.when(missing).then(None).otherwise(epoch.cast(pl.Datetime(EPOCH_UNIT)))
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


_EPOCH = datetime(1970, 1, 1)


def parse_datetime(
    value: Any, formats: str | Sequence[str] | None = None, null_values: Sequence[str] = ()
) -> int | None:
    """One value as :func:`to_datetime` reads it: microseconds since the Unix epoch (UTC), ``None``
    when missing, or :class:`InvalidValue` whose message names the accepted formats."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return (value - _EPOCH) // _MICROSECOND
    if isinstance(value, date):
        return (datetime(value.year, value.month, value.day) - _EPOCH) // _MICROSECOND
    compiled = _resolve_formats(formats)
    if not isinstance(value, str):
        raise InvalidValue(f"expected a date or datetime as text, got {value!r}")
    text = value.strip(WHITESPACE)
    if text in null_values:
        return None
    for fmt in compiled:
        epoch = _parse_with(fmt, text)
        if epoch is not None:
            return epoch
    raise InvalidValue(f"expected {describe_formats([f.format for f in compiled])}, got {value!r}")


def describe_formats(formats: Sequence[str]) -> str:
    """``a date like 2024-01-31 (%Y-%m-%d) or ...``: the formats with an example of each, for messages."""
    shown = [f"{format_example(f)} ({f})" for f in formats[:6]]
    more = f" or {len(formats) - 6} more" if len(formats) > 6 else ""
    return "a date like " + " or ".join(shown) + more


_EXAMPLE = {
    "Y": "2024",
    "y": "24",
    "m": "01",
    "d": "31",
    "H": "13",
    "I": "01",
    "p": "PM",
    "M": "45",
    "S": "00",
    "f": "000000",
    ".f": "",
    "z": "+00:00",
    "b": "Jan",
    "B": "January",
    "%": "%",
}


def format_example(fmt: str) -> str:
    """``fmt`` rendered for 2024-01-31 13:45:00 UTC (for messages)."""
    fmt = fmt.replace("%T", "%H:%M:%S").replace("%.f", "\0")
    out = re.sub(r"%(.)", lambda m: _EXAMPLE.get(m.group(1), m.group(0)), fmt)
    return out.replace("\0", "")


def infer_datetime_formats(
    values: pl.Series, candidates: Sequence[str] = DATETIME_FORMATS
) -> tuple[list[str], float]:
    """Formats (of ``candidates``) that read ``values`` (present, stripped text), chosen greedily: the one
    that reads the most, then the one that reads the most of the rest, and so on; and the share read.

    Fixing the formats once, at analyze time, keeps training and serving on the same rules.
    """
    if values.len() == 0:
        return [], 0.0
    counts = values.rename("v").value_counts(name="n")
    parsed = counts.select(
        pl.col("n"),
        *[
            _epoch_expr(pl.col("v"), compile_format(f)).is_not_null().alias(str(i))
            for i, f in enumerate(candidates)
        ],
    )
    weights = parsed["n"].to_numpy()
    reads = {i: parsed[str(i)].to_numpy() for i in range(len(candidates))}
    left = weights > 0
    chosen: list[str] = []
    while True:
        gains = {i: int(weights[ok & left].sum()) for i, ok in reads.items() if candidates[i] not in chosen}
        if not gains:
            break
        best = max(gains, key=lambda i: (gains[i], -i))
        if gains[best] == 0:
            break
        chosen.append(candidates[best])
        left = left & ~reads[best]
    share = 1.0 - float(weights[left].sum()) / float(weights.sum())
    return chosen, share


def infer_datetime_format(values: pl.Series) -> str | None:
    """The one format of :func:`infer_datetime_formats` when it alone reads 95 % of ``values``, else None."""
    formats, _ = infer_datetime_formats(values)
    if not formats:
        return None
    _, share = infer_datetime_formats(values, formats[:1])
    return formats[0] if share >= 0.95 else None


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1) - _EPOCH


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


# --------------------------------------------------------------------------------------------------
# One column, either way
# --------------------------------------------------------------------------------------------------
def convert_column(name: str, column: Any, dtype: pl.DataType, null_values: Sequence[str]) -> Converted:
    """The converter of a column spec or state (``type`` and its reading options) as expressions."""
    if column.type == "numeric":
        return to_number(name, dtype, null_values, NumberOptions.of(column))
    if column.type == "categorical":
        return to_category(name, dtype, null_values, CategoryOptions.of(column))
    return to_datetime(name, dtype, null_values, datetime_formats(column))


def parse_value(value: Any, column: Any, null_values: Sequence[str]) -> float | str | int | None:
    """One raw value of a column spec or state, read as :func:`convert_column` reads it: a float
    (numeric), a category (text), epoch microseconds (datetime), ``None`` when missing, or
    :class:`InvalidValue`. This is the function a server calls before the serving graph."""
    if column.type == "numeric":
        return parse_number(value, NumberOptions.of(column), null_values)
    if column.type == "categorical":
        return parse_category(value, CategoryOptions.of(column), null_values)
    return parse_datetime(value, datetime_formats(column), null_values)
