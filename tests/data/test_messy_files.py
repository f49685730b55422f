"""Messy files, as people have them: `init` reads them right and prepare applies one policy to bad values.

Each case of ``messy.py`` is written as CSV and Parquet and goes through init → prepare, then through
``leanml.data.transform`` (the Polars path predict and serve share) and the per-value parsers a server
calls before the serving graph. Property tests hold the per-value parsers equal to the Polars expressions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from data.messy import CASES, frame_of, write_case
from leanml.cli import app
from leanml.config import load_config, parse_config
from leanml.data import convert, infer
from leanml.data.infer import infer_config, write_config
from leanml.data.io import scan_table, sniff_separator
from leanml.data.prepare import prepare
from leanml.data.preprocessor import rejection_rules, transform, transform_records
from leanml.errors import ConfigError, DataError

FORMATS = ("csv", "parquet")


def init_config(path: Path, folder: Path, **data: Any) -> Path:
    """``leanml init`` on ``path``, with ``data`` keys changed, written next to it."""
    text = infer_config(str(path), "label", config_dir=folder)
    raw = yaml.safe_load(text)
    raw["data"].update(data)
    config = folder / f"{path.stem}.yaml"
    if data:
        config.write_text(yaml.safe_dump(raw))
    else:
        write_config(text, config)
    return config


def init_and_prepare(case: str, fmt: str, folder: Path, **data: Any) -> tuple[dict[str, Any], Any]:
    """The columns init wrote, and prepare's result."""
    path = write_case(case, folder, fmt)
    config = load_config(init_config(path, folder, **data))
    raw = yaml.safe_load(Path(folder / f"{path.stem}.yaml").read_text())
    return raw, prepare(config, out_dir=folder / f"out-{case}-{fmt}")


# --------------------------------------------------------------------------------------------------
# Every case, both formats: init writes a config that prepares
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", [c for c in CASES if c != "invalid_many"])
def test_every_case_goes_from_init_to_a_served_request(case: str, fmt: str, tmp_path: Path) -> None:
    from leanml.bundle import load_bundle
    from leanml.serve.engine import Job, ServedModel
    from leanml.serve.validation import RequestError
    from leanml.training.stage import train_and_bundle

    path = write_case(case, tmp_path, fmt)
    small = ["model.hidden=[8]", "model.embedding=none", "train.epochs=1", "train.warmup_epochs=0"]
    config = load_config(init_config(path, tmp_path), overrides=small)
    result = prepare(config)
    assert result.report["rows"]["kept"] > 0
    assert all(not name.startswith("__") and name for name in result.state.feature_names)
    bundle = load_bundle(train_and_bundle(config).bundle.path)

    inputs = [c.name for c in bundle.state.columns]
    raw = scan_table(str(path), separator=config.data.separator, encoding=config.data.encoding)
    rows = raw.collect().head(20)
    predicted = bundle.predict(rows)
    assert predicted.height == rows.height and predicted["prediction"].null_count() < rows.height
    records = rows.select(inputs).to_dicts()  # as a client would send them, values as the file spells them
    assert bundle.predict(records)["__reason"].to_list() == predicted["__reason"].to_list()
    jobs = [Job({k: [r[k]] for k in inputs}, 1, None, deadline=1e18) for r in records]  # type: ignore[arg-type]
    served = ServedModel(bundle).infer(jobs)
    for answer, reason in zip(served, predicted["__reason"].to_list(), strict=True):
        assert isinstance(answer, RequestError) == (reason is not None), (answer, reason)


@pytest.mark.parametrize("fmt", FORMATS)
def test_pandas_index_is_ignored_with_a_reason(fmt: str, tmp_path: Path) -> None:
    path = write_case("pandas_index", tmp_path, fmt)
    text = infer_config(str(path), "label", config_dir=tmp_path)
    index = "" if fmt == "csv" else "__index_level_0__"
    assert yaml.safe_load(text)["columns"][index] == {"type": "ignore"}
    line = next(li for li in text.splitlines() if li.strip().startswith(index or json.dumps(index)))
    assert "an index" in line
    _, result = init_and_prepare("pandas_index", fmt, tmp_path)
    assert index in result.state.ignored
    assert [c.name for c in result.state.columns] == ["x", "color"]


def test_an_id_that_is_not_consecutive_is_an_id_not_an_index(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {"id": [i * 7 + 3 for i in range(200)], "x": list(range(200)), "label": ["a", "b"] * 100}
    )
    frame.write_csv(tmp_path / "ids.csv")
    text = infer_config(str(tmp_path / "ids.csv"), "label", config_dir=tmp_path)
    assert "looks like an id" in text and "an index" not in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_numbers_as_text_get_their_options_and_read_the_same_everywhere(fmt: str, tmp_path: Path) -> None:
    raw, result = init_and_prepare("numbers_as_text", fmt, tmp_path)
    assert raw["columns"]["amount"]["thousands"] == ","
    assert raw["columns"]["rate"]["decimal"] == ","
    columns = result.report["columns"]
    assert columns["amount"]["total"]["invalid"] == 0 and columns["rate"]["total"]["invalid"] == 0
    amount = next(c for c in result.state.columns if c.name == "amount")
    assert (amount.thousands, amount.decimal) == (",", ".")
    # The same text through the Polars path and the per-value parser.
    served = transform(pl.DataFrame({"amount": ["1,234.50", "1234.5"], "rate": ["1,5", "1,5"]}), result.state)
    assert served["amount"][0] == served["amount"][1]
    assert convert.parse_value("1,234.50", amount, result.state.null_values) == 1234.5
    assert convert.parse_value(" 2,5 ", result.state.columns[1], result.state.null_values) == 2.5
    with pytest.raises(convert.InvalidValue, match=r"thousands separator ','"):
        convert.parse_value("1,2,3", amount, result.state.null_values)


@pytest.mark.parametrize("fmt", FORMATS)
def test_mixed_date_formats_are_proposed_and_read(fmt: str, tmp_path: Path) -> None:
    raw, result = init_and_prepare("mixed_dates", fmt, tmp_path)
    day = raw["columns"]["day"]
    assert day["type"] == "datetime"
    assert set(day["formats"]) == {"%Y-%m-%d", "%d/%m/%Y", "%b %d, %Y"}
    assert result.report["columns"]["day"]["total"]["invalid"] == 0
    state = next(c for c in result.state.columns if c.name == "day")
    assert state.formats == day["formats"] and state.format == day["formats"][0]
    served = transform(
        pl.DataFrame(
            {
                "day": ["2020-01-25", "25/01/2020", "Jan 25, 2020"],
                "stamp": ["2020-01-25T10:30:00Z"] * 3,
                "size": [0.0] * 3,
            }
        ),
        result.state,
    )
    # the same day in all three formats: the same epoch exactly, and one feature value to float64
    # rounding (Polars divides a column by a constant through its reciprocal, numpy exactly: 1 ulp apart,
    # and the rows of one format took the other path here)
    assert served["day__epoch"].to_numpy() == pytest.approx([served["day__epoch"][0]] * 3, rel=1e-15)
    assert {convert.parse_value(v, state, []) for v in ("2020-01-25", "25/01/2020", "Jan 25, 2020")} == {
        int(datetime(2020, 1, 25, tzinfo=UTC).timestamp() * 1e6)
    }
    epoch = convert.parse_value("25/01/2020", state, [])
    assert epoch == int(datetime(2020, 1, 25, tzinfo=UTC).timestamp() * 1e6)
    with pytest.raises(convert.InvalidValue, match=r"2024-01-31 \(%Y-%m-%d\)") as err:
        convert.parse_value("2020.01.25", state, [])
    assert "31/01/2024 (%d/%m/%Y)" in str(err.value) and "Jan 31, 2024" in str(err.value)


def test_text_that_is_partly_dates_says_why_it_is_not_a_datetime(tmp_path: Path) -> None:
    values = [f"2020-01-{1 + i % 28:02d}" if i % 3 else f"code-{i}" for i in range(300)]
    pl.DataFrame({"when": values, "x": list(range(300)), "label": ["a", "b"] * 150}).write_csv(
        tmp_path / "p.csv"
    )
    text = infer_config(str(tmp_path / "p.csv"), "label", config_dir=tmp_path)
    line = next(li for li in text.splitlines() if li.strip().startswith("when:"))
    assert "type: datetime" not in line and "67% read as dates (%Y-%m-%d)" in line


@pytest.mark.parametrize("fmt", FORMATS)
def test_surrounding_spaces_are_stripped_from_values_and_labels(fmt: str, tmp_path: Path) -> None:
    raw, result = init_and_prepare("spaces", fmt, tmp_path)
    assert raw["columns"]["workclass"]["strip"] is True
    assert result.state.target.classes == ["<=50K", ">50K"]
    workclass = next(c for c in result.state.columns if c.name == "workclass")
    assert workclass.strip and workclass.categories == ["Private", "Self-emp", "State-gov"]
    served = transform(
        pl.DataFrame({"age": [30, 30], "workclass": ["State-gov", " State-gov "]}), result.state
    )
    assert served.drop("__reason", "__flags").n_unique() == 1
    assert convert.parse_value(" State-gov", workclass, []) == "State-gov"


@pytest.mark.parametrize("fmt", FORMATS)
def test_booleans_are_one_mapping(fmt: str, tmp_path: Path) -> None:
    raw, result = init_and_prepare("booleans", fmt, tmp_path)
    assert raw["columns"]["member"]["boolean"] is True and raw["columns"]["active"]["boolean"] is True
    member = next(c for c in result.state.columns if c.name == "member")
    assert member.categories == ["false", "true"]
    rows = [{"member": v, "active": "no", "x": 0.0} for v in ("yes", "YES", " y", True, 1, "true")]
    served = transform_records(rows, result.state)
    assert served.drop("__reason", "__flags").n_unique() == 1
    assert [convert.parse_value(r["member"], member, []) for r in rows] == ["true"] * len(rows)
    with pytest.raises(convert.InvalidValue, match="expected a boolean"):
        convert.parse_value("maybe", member, [])


# --------------------------------------------------------------------------------------------------
# One invalid-value policy
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_few_invalid_values_are_counted_and_imputed_or_rejected(fmt: str, tmp_path: Path) -> None:
    raw, result = init_and_prepare("invalid_few", fmt, tmp_path)
    assert result.report["columns"]["x"]["total"]["invalid"] == 3
    assert any("'x': 3 values that cannot be read" in note for note in result.report["notes"])

    raw["columns"]["x"]["invalid"] = "reject"
    raw["data"]["rejects"] = str(tmp_path / "rejects.parquet")
    config = parse_config(raw, base_dir=tmp_path)
    rejected = prepare(config, out_dir=tmp_path / "rejecting")
    assert rejected.report["dropped_by_reason"] == {"invalid:x": 3}
    rejects = pl.read_parquet(tmp_path / "rejects.parquet")
    assert rejects["__reason"].to_list() == ["invalid:x"] * 3
    assert set(rejects["x"].to_list()) <= {"abc", "12..5", "n/a?", "--", "1 2"}
    x = next(c for c in rejected.state.columns if c.name == "x")
    assert ("x", "invalid:x") in [(c, r) for c, r, _ in rejection_rules(rejected.state.columns, "serve")]
    served = transform(pl.DataFrame({"x": ["abc", "3.5"], "z": [0.0, 0.0]}), rejected.state)
    assert served["__reason"].to_list() == ["invalid:x", None]
    assert x.invalid == "reject"


@pytest.mark.parametrize("fmt", FORMATS)
def test_too_many_invalid_values_fail_prepare_with_the_fix(fmt: str, tmp_path: Path) -> None:
    path = write_case("invalid_many", tmp_path, fmt)
    raw = yaml.safe_load(infer_config(str(path), "label", config_dir=tmp_path))
    assert raw["columns"]["x"]["type"] == "numeric"  # mostly numbers: the junk is the user's call
    config = parse_config(raw, base_dir=tmp_path)
    with pytest.raises(DataError) as err:
        prepare(config, out_dir=tmp_path / "out")
    message = str(err.value)
    assert "column 'x': 120 of 600 values (20.0%) cannot be read as numbers" in message
    shown = message.split("e.g. ")[1].split(" — ")[0]
    assert shown.count("', '") == 4 and set(shown.strip("'").split("', '")) <= {
        "abc",
        "12..5",
        "n/a?",
        "--",
        "1 2",
    }
    assert "data.max_invalid (1.0%)" in message and "Fix:" in message
    assert not (tmp_path / "out").exists()
    raw["data"]["max_invalid"] = 0.25
    assert prepare(parse_config(raw, base_dir=tmp_path), out_dir=tmp_path / "out").report["rows"]["kept"]


def test_thousands_forced_numeric_fails_naming_the_options(tmp_path: Path) -> None:
    path = write_case("numbers_as_text", tmp_path, "csv")
    raw = yaml.safe_load(infer_config(str(path), "label", config_dir=tmp_path))
    raw["columns"]["amount"] = {"type": "numeric"}
    with pytest.raises(DataError, match=r"'amount': 600 of 600 values .* thousands: ','"):
        prepare(parse_config(raw, base_dir=tmp_path), out_dir=tmp_path / "out")


def test_unreadable_dates_fail_naming_the_formats(tmp_path: Path) -> None:
    path = write_case("mixed_dates", tmp_path, "csv")
    raw = yaml.safe_load(infer_config(str(path), "label", config_dir=tmp_path))
    raw["columns"]["day"]["formats"] = ["%Y-%m-%d"]
    with pytest.raises(DataError) as err:
        prepare(parse_config(raw, base_dir=tmp_path), out_dir=tmp_path / "out")
    assert "cannot be read as a date like 2024-01-31 (%Y-%m-%d)" in str(err.value)
    assert "columns.day.formats: ['%d/%m/%Y', '%b %d, %Y']" in str(err.value)


def test_the_cli_exits_non_zero_on_too_many_invalid_values(tmp_path: Path) -> None:
    path = write_case("invalid_many", tmp_path, "csv")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: m\ndata: {{train: {path.name}}}\ntarget: label\n"
        "columns: {x: {type: numeric}, z: {type: numeric}}\n"
    )
    result = CliRunner().invoke(app, ["prepare", str(config), "-o", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "column 'x'" in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------------------------------
# Duplicates, files, sampling
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicates_are_counted_even_without_dedupe(fmt: str, tmp_path: Path) -> None:
    path = write_case("duplicates", tmp_path, fmt)
    text = infer_config(str(path), "label", config_dir=tmp_path)
    assert "60 rows (9.1%) duplicate an earlier row" in text  # the ids differ: they are ignored
    raw, result = init_and_prepare("duplicates", fmt, tmp_path)
    assert result.report["rows"]["duplicates"] == 60
    assert any("leak across splits" in note for note in result.report["notes"])
    raw["data"]["dedupe"] = True
    deduped = prepare(parse_config(raw, base_dir=tmp_path), out_dir=tmp_path / "dedupe")
    assert deduped.report["dropped_by_reason"]["duplicate"] == 60


@pytest.mark.parametrize("separator", [",", ";", "\t", "|"])
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "cp1252"])
def test_separator_and_encoding_are_found_and_honoured(separator: str, encoding: str, tmp_path: Path) -> None:
    path = write_case("accents", tmp_path, "csv", separator=separator, encoding=encoding)
    assert sniff_separator(str(path)) == separator
    config_path = init_config(path, tmp_path)
    raw = yaml.safe_load(config_path.read_text())
    assert raw["data"].get("separator", ",") == separator
    assert raw["data"].get("encoding", "utf-8") == ("utf-8" if encoding == "utf-8" else "cp1252")
    result = prepare(load_config(config_path), out_dir=tmp_path / "out")
    city = next(c for c in result.state.columns if c.name == "city")
    assert city.categories == ["Besançon", "Genève", "Malmö", "Zürich"]


def test_a_file_that_is_not_utf8_says_which_key_to_set(tmp_path: Path) -> None:
    path = write_case("accents", tmp_path, "csv", encoding="latin-1")
    with pytest.raises(DataError, match=r"not UTF-8 text.*data.encoding"):
        scan_table(str(path))
    frame = scan_table(str(path), encoding="latin-1").collect()
    assert "Zürich" in frame["city"].to_list()


def test_a_target_that_is_not_a_column_gets_did_you_mean_and_a_separator_hint(tmp_path: Path) -> None:
    path = write_case("accents", tmp_path, "csv", separator=";")
    with pytest.raises(DataError, match=r"did you mean 'label' for 'Label'\?"):
        infer_config(str(path), "Label")
    with pytest.raises(DataError, match=r"did you mean 'label' for 'lable'"):
        infer_config(str(path), "lable")
    config = parse_config(
        {
            "name": "m",
            "data": {"train": str(path), "separator": ","},
            "target": "label",
            "columns": {"x": {"type": "numeric"}},
        }
    )
    with pytest.raises(DataError, match=r"read as one column.*set data.separator: ';'"):
        prepare(config, out_dir=tmp_path / "out")


@pytest.mark.parametrize("fmt", FORMATS)
def test_init_samples_across_the_whole_file(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(infer, "SAMPLE_ROWS", 500)  # the file has 6,000 rows sorted by month
    path = write_case("month_sorted", tmp_path, fmt)
    text = infer_config(str(path), "label", config_dir=tmp_path)
    assert "6,000 rows, 500 sampled across the file" in text
    columns = yaml.safe_load(text)["columns"]
    assert columns["year"]["type"] == "numeric"  # the first 500 rows would say constant 2013
    assert "range 1..12" in next(li for li in text.splitlines() if li.strip().startswith("month:"))


def test_no_test_split_is_allowed(tmp_path: Path) -> None:
    path = write_case("month_sorted", tmp_path, "parquet")
    result = prepare(
        load_config(init_config(path, tmp_path, split={"validation": 0.2, "test": 0})), out_dir=tmp_path / "o"
    )
    assert result.report["rows"]["test"]["rows"] == 0
    assert result.report["rows"]["validation"]["rows"] == 1200


def test_new_config_keys_are_validated() -> None:
    base = {"name": "m", "target": "y", "columns": {"x": {"type": "numeric"}}}
    cases = [
        ({"separator": ";;"}, {}, "data.separator: must be one character"),
        ({"encoding": "klingon"}, {}, "data.encoding: unknown encoding"),
        ({"max_invalid": 2}, {}, "data.max_invalid"),
        ({}, {"type": "numeric", "thousands": ",", "decimal": ","}, "thousands and decimal are both ','"),
        ({}, {"type": "numeric", "thousands": "x"}, "columns.x.thousands: 'x' is not one of"),
        ({}, {"type": "datetime", "formats": ["%Y-%j"]}, "'%j' is not supported; use %Y"),
        ({}, {"type": "datetime", "format": "%Y-%m-%d", "formats": ["%Y"]}, "not both"),
        (
            {},
            {"type": "categorical", "invalid": "drop"},
            "columns.x.invalid: 'drop' is not one of null, reject",
        ),
    ]
    for data, column, message in cases:
        raw = {**base, "data": {"train": "d.csv", **data}, "columns": {"x": column or {"type": "numeric"}}}
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_config(raw)


# --------------------------------------------------------------------------------------------------
# The per-value parsers equal the Polars expressions
# --------------------------------------------------------------------------------------------------
def _verdict(parse: Any, value: Any) -> tuple[str, Any]:
    try:
        result = parse(value)
    except convert.InvalidValue:
        return ("invalid", None)
    return ("missing", None) if result is None else ("ok", result)


def _polars_verdicts(
    converted: convert.Converted, frame: pl.DataFrame, as_int: bool = False
) -> list[tuple[str, Any]]:
    value = converted.value.dt.epoch("us") if as_int else converted.value
    out = frame.select(value.alias("v"), converted.missing.alias("m"), converted.invalid.alias("i"))
    verdicts = []
    for v, missing, invalid in out.iter_rows():
        if invalid:
            verdicts.append(("invalid", None))
        elif v is None:
            verdicts.append(("missing", None))
        else:
            verdicts.append(("ok", v))
        assert not (missing and invalid)
    return verdicts


NUMBER_OPTIONS = [
    convert.NumberOptions(),
    convert.NumberOptions(thousands=","),
    convert.NumberOptions(decimal=","),
    convert.NumberOptions(thousands=".", decimal=","),
    convert.NumberOptions(thousands=" ", decimal=","),
    convert.NumberOptions(thousands="'"),
]
NUMBER_TEXT = st.one_of(
    st.text(alphabet="0123456789,. '-+eEa\u00a0\t", max_size=14),
    st.floats(allow_nan=True).map(lambda f: f"{f:,.3f}"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["NA", "nan", " NaN ", "", "?", "1e39", "-3.4e38", "١٢"]),
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(NUMBER_TEXT, min_size=1, max_size=30), option=st.sampled_from(NUMBER_OPTIONS))
def test_parse_number_equals_the_polars_expression(values: list[str], option: convert.NumberOptions) -> None:
    nulls = ["NA", "?", ""]
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    expected = _polars_verdicts(convert.to_number("v", pl.String, nulls, option), frame)
    assert [_verdict(lambda x: convert.parse_number(x, option, nulls), v) for v in values] == expected


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20))
def test_parse_number_equals_polars_on_typed_numbers(values: list[float]) -> None:
    frame = pl.DataFrame({"v": values}, schema={"v": pl.Float64})
    expected = _polars_verdicts(convert.to_number("v", pl.Float64, []), frame)
    assert [_verdict(convert.parse_number, v) for v in values] == expected


CATEGORY_TEXT = st.one_of(
    st.text(alphabet="yesnoYESNOtf10 \t\u00a0xX", max_size=6),
    st.sampled_from(["", "NA", " true ", "Off", "ON", "\u2003yes"]),
)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(CATEGORY_TEXT, min_size=1, max_size=20),
    strip=st.booleans(),
    boolean=st.booleans(),
)
def test_parse_category_equals_the_polars_expression(values: list[str], strip: bool, boolean: bool) -> None:
    options = convert.CategoryOptions(strip=strip, boolean=boolean)
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    expected = _polars_verdicts(convert.to_category("v", pl.String, ["NA", ""], options), frame)
    assert [_verdict(lambda x: convert.parse_category(x, options, ["NA", ""]), v) for v in values] == expected


def _render(moment: datetime, fmt: str, fraction: str, zone: str) -> str:
    """``moment`` written in ``fmt`` as the parser's directives read it."""
    pieces = {
        "%Y": f"{moment.year:04d}",
        "%y": f"{moment.year % 100:02d}",
        "%m": f"{moment.month:02d}",
        "%d": f"{moment.day:02d}",
        "%H": f"{moment.hour:02d}",
        "%I": f"{(moment.hour % 12) or 12:02d}",
        "%p": "PM" if moment.hour >= 12 else "am",
        "%M": f"{moment.minute:02d}",
        "%S": f"{moment.second:02d}",
        "%.f": f".{fraction}" if fraction else "",
        "%z": zone,
        "%b": moment.strftime("%b"),
        "%B": moment.strftime("%B"),
    }
    out = fmt
    for key in sorted(pieces, key=len, reverse=True):
        out = out.replace(key, pieces[key])
    return out


def date_text(formats: list[str]) -> st.SearchStrategy[str]:
    """Text for a column read with ``formats``: moments written in one of them (or in another
    candidate), random text, and edge cases."""
    rendered = st.builds(
        _render,
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30)),
        st.one_of(st.sampled_from(formats), st.sampled_from(convert.DATETIME_FORMATS)),
        st.sampled_from(["", "5", "123456", "123456789"]),
        st.sampled_from(["Z", "+05:30", "-0800", "+01", "+24:00"]),
    )
    return st.one_of(
        rendered,
        rendered.map(lambda t: f" {t}\t"),
        st.text(alphabet="0123456789-/:. TZ+aAPpMJn,", max_size=22),
        st.sampled_from(["2020-02-30", "2020-02-29", "1900-02-29", "2000-02-29", "NA", "13/13/2020"]),
    )


@st.composite
def date_column(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    formats = draw(st.lists(st.sampled_from(convert.DATETIME_FORMATS), min_size=1, max_size=4, unique=True))
    return draw(st.lists(date_text(formats), min_size=1, max_size=20)), formats


@settings(max_examples=300, deadline=None)
@given(column=date_column())
def test_parse_datetime_equals_the_polars_expression(column: tuple[list[str], list[str]]) -> None:
    values, formats = column
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    expected = _polars_verdicts(convert.to_datetime("v", pl.String, ["NA"], formats), frame, as_int=True)
    assert [_verdict(lambda x: convert.parse_datetime(x, formats, ["NA"]), v) for v in values] == expected


@settings(max_examples=100, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_parse_datetime_agrees_with_python_datetimes(moment: datetime) -> None:
    text = moment.isoformat(sep=" ")
    micros = (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    assert convert.parse_datetime(text, ["%Y-%m-%d %H:%M:%S%.f"]) == micros
    assert convert.parse_datetime(moment) == micros
    assert convert.parse_datetime(moment.replace(tzinfo=UTC)) == micros


def test_every_case_frame_is_deterministic() -> None:
    for case in CASES:
        first, second = frame_of(case), frame_of(case)
        assert first.equals(second)
