"""The HTML reports of every stage (prepare, train, tune, shrink), their figures, and console tables.

The reports are built small: a 600-row table prepared and trained for two epochs (binary and regression),
a tune report from hand-made trials, a shrink report from hand-made steps. One test opens all four in
headless Chromium and fails on an image that does not decode or on anything written to the console; it
skips when Chromium is not installed (``make test`` installs it where it can).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from PIL import Image
from rich.console import Console

from leanml.config import Config, parse_config
from leanml.data.prepared import PreparedData
from leanml.data.report import numeric_histograms
from leanml.figures import PlainLogFormatter, figure_png, integer_ticks, log_scale
from leanml.reports import add_column, human_number, metric_text
from leanml.shrinking.measure import Measurement
from leanml.shrinking.report import LEGEND_TOP, render_steps, steps_figure, table_row, write_reports
from leanml.shrinking.results import StepRecord
from leanml.training.plots import learning_curves_figure, residuals_figure
from leanml.training.stage import train_and_bundle
from leanml.tuning.report import (
    FEW_TRIALS,
    TrialRow,
    history_figure,
    importance_figure,
    plot_history,
    plot_importance,
    render_trials,
    write_html,
)

ROWS = 600


def _table(task: str) -> pl.DataFrame:
    """Numbers with nulls and outliers, a text column with a rare value, and a binary or numeric target."""
    rng = np.random.default_rng(0)
    x1 = rng.normal(50, 10, ROWS)
    x2 = rng.exponential(20, ROWS)
    x2[::50] = 10_000  # outliers, clipped to the range
    colour = rng.choice(["red", "green", "blue"], ROWS, p=[0.5, 0.3, 0.2]).astype(object)
    colour[::97] = "violet"  # rare: grouped as infrequent
    signal = (x1 - 50) / 10 + (colour == "red")
    frame = pl.DataFrame({"x1": x1, "x2": x2, "colour": colour.tolist()}).with_columns(
        pl.when(pl.int_range(pl.len()) % 13 == 0).then(None).otherwise(pl.col("x1")).alias("x1")
    )
    target = signal + rng.normal(0, 0.5, ROWS)
    if task == "binary":
        return frame.with_columns(pl.Series("y", np.where(target > 0.3, "yes", "no")))
    return frame.with_columns(pl.Series("y", 1000 * target + 20_000))


def _config(root: Path, task: str) -> Config:
    data = root / f"{task}.parquet"
    _table(task).write_parquet(data)
    return parse_config(
        {
            "name": f"reports-{task}",
            "data": {"train": str(data), "split": {"validation": 0.2, "test": 0.2, "seed": 0}},
            "target": "y",
            "columns": {
                "x1": {"type": "numeric"},
                "x2": {
                    "type": "numeric",
                    "outliers": {"method": "range", "min": 0, "max": 100, "action": "clip"},
                },
                "colour": {"type": "categorical", "min_frequency": 10},
            },
            "model": {"arch": "mlp", "hidden": [8], "dropout": 0.0},
            "train": {"epochs": 3, "batch_size": 64, "optimizer": "adam", "lr": 0.01},
            "workdir": str(root / "runs"),
            "store": str(root / "models"),
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Config]:
    """A binary and a regression model, prepared and trained (a second or two each)."""
    root = tmp_path_factory.mktemp("reports")
    configs = {task: _config(root, task) for task in ("binary", "regression")}
    for config in configs.values():
        train_and_bundle(config)
    return configs


@pytest.fixture(scope="module")
def tune_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tune report of five trials, one of them pruned: few enough for the importance warning."""
    root = tmp_path_factory.mktemp("tune-report")
    rows = _trials()
    images = [
        plot_history(rows, "roc_auc", "maximize", root / "plots" / "history.png"),
        plot_importance({"train.lr": 0.7, "model.hidden": 0.3}, root / "plots" / "importance.png", trials=4),
    ]
    best = rows[2]
    return write_html(root / "report.html", "leanml tune: bc", rows, KEYS, "roc_auc", best, images)


@pytest.fixture(scope="module")
def shrink_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shrink report of a parent and four steps."""
    folder = tmp_path_factory.mktemp("shrink-report")
    records = _steps()
    summary = {
        "parent": {"name": "flights", "version": "v1", "path": "models/flights/v1"},
        "budget": {"limit": 0.69, "text": "roc_auc may drop 0.01 (to 0.6912)", "max_metric_drop": 0.01},
        "targets": {"latency_us": 20.0, "size_kb": None},
        "steps": [r.as_dict() for r in records],
        "final": records[3].as_dict(),
        "test": {"parent": {"roc_auc": 0.70123456}, "final": {"roc_auc": 0.69812345}},
        "test_drop": 0.0031,
        "batch1_p50_us_side_by_side": None,
        "written": True,
        "reason": None,
    }
    write_reports(folder, summary, records, "roc_auc", console=None)
    return folder / "report.html"


KEYS = ["train.lr", "model.hidden", "train.weight_decay"]


def _trials() -> list[TrialRow]:
    values = [
        {"train.lr": 0.000698910960952134, "model.hidden": [64, 64], "train.weight_decay": 1e-05},
        {"train.lr": 0.0123456789, "model.hidden": [32], "train.weight_decay": 0.00031622776601683794},
        {"train.lr": 0.003, "model.hidden": [128], "train.weight_decay": 0.0},
        {"train.lr": 0.1, "model.hidden": [8], "train.weight_decay": 0.001},
        {"train.lr": 0.05, "model.hidden": [16], "train.weight_decay": 0.01},
    ]
    states = ["complete", "complete", "complete", "pruned", "complete"]
    scores = [0.71234567, 0.70111111, 0.72987654, 0.6, 0.70555555]
    return [
        TrialRow(i, state, score, v, 3, 1.23456, None)
        for i, (state, score, v) in enumerate(zip(states, scores, values, strict=True))
    ]


def _steps() -> list[StepRecord]:
    def step(name: str, model: str, kb: float, us: float, auc: float, decision: str) -> StepRecord:
        measurement = Measurement(
            parameters=int(kb * 250),
            onnx_bytes=int(kb * 1024),
            compressed_bytes=int(kb * 900),
            p50_batch1_us=us,
            p99_batch1_us=us * 1.5,
            p50_batch1024_us=us * 90,
            p99_batch1024_us=us * 110,
            metrics={"roc_auc": auc},
        )
        return StepRecord(name, model, measurement, 0.7012 - auc, 0.002, decision, "within the budget")

    return [
        step("parent", "resmlp [64, 128]", 180.0, 95.0, 0.7012, "parent"),
        step("distill", "mlp [32]", 22.0, 21.0, 0.6990, "kept"),
        step("distill", "mlp [16]", 11.0, 18.0, 0.6850, "rolled back"),
        step("prune", "mlp [32] 50%", 12.0, 19.0, 0.6985, "kept"),
        step("quantize", "int8", 4.5, 25.0, 0.6981, "not kept"),
    ]


def _images(page: str) -> list[Image.Image]:
    """Every embedded PNG of a page, decoded (raises on a broken one)."""
    found = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    images = []
    for data in found:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        images.append(image)
    return images


def _standalone(page: str) -> None:
    assert "<script" not in page
    assert not re.search(r'(src|href)="(?!data:)', page), "a report must not load anything from outside"


# ---- numbers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.000698910960952134, "0.000699"),
        (1e-05, "1e-5"),
        (0.00031622776601683794, "0.000316"),
        (12345.678, "12,346"),
        (999.7, "1,000"),
        (0.5, "0.5"),
        (3.0, "3"),
        (1234567, "1,234,567"),
        (0.0, "0"),
        (-0.0123456, "-0.0123"),
        (None, ""),
        (True, "true"),
        (float("nan"), "nan"),
    ],
)
def test_human_number(value: Any, text: str) -> None:
    assert human_number(value) == text


def test_metric_text_keeps_decimals_that_matter() -> None:
    assert [metric_text(v) for v in (0.87654321, 631.24567, 12345.678, None)] == [
        "0.8765",
        "631.25",
        "12,346",
        "",
    ]


# ---- figures ----------------------------------------------------------------------------------------------


def _tick_texts(axis: Any) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_epoch_and_trial_ticks_are_whole_numbers() -> None:
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1 / e,
            "val_metrics": {"rmse": 9000 / e, "r2": 1 - 1 / e},
        }
        for e in (1, 2)
    ]
    fig = learning_curves_figure(history)
    figure_png(fig)  # draws, so the tick labels exist
    for ax in fig.axes:
        assert all(re.fullmatch(r"-?\d+", t) for t in _tick_texts(ax.xaxis)), _tick_texts(ax.xaxis)
    fig = history_figure(_trials()[:2], "roc_auc", "maximize")
    figure_png(fig)
    assert all(re.fullmatch(r"-?\d+", t) for t in _tick_texts(fig.axes[0].xaxis))
    fig = Figure()
    ax = fig.subplots()
    ax.plot([1, 2], [0, 1])
    integer_ticks(ax.xaxis)
    figure_png(fig)
    assert "1.25" not in _tick_texts(ax.xaxis) and "0.5" not in _tick_texts(ax.xaxis)


def test_errors_and_scores_have_axes_of_their_own() -> None:
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1 / e,
            "val_metrics": {"rmse": 9000 / e, "mae": 5000 / e, "r2": 1 - 1 / e},
        }
        for e in (1, 2, 3)
    ]
    fig = learning_curves_figure(history)
    legends = [sorted(t.get_text() for t in ax.get_legend().get_texts()) for ax in fig.axes]
    assert legends == [["train", "validation"], ["mae", "rmse"], ["r2"]]


def test_residual_tick_labels_do_not_overlap() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(250_000, 90_000, 3000)
    fig = residuals_figure(y, y + rng.normal(0, 30_000, 3000))
    figure_png(fig)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.xaxis.get_ticklabels() if t.get_text()]
        assert len(boxes) >= 2
        assert not any(a.overlaps(b) for a, b in itertools.pairwise(boxes))
        assert not ax.xaxis.get_offset_text().get_text()  # no '1e5' in the corner
    rows = _tick_texts(fig.axes[1].yaxis)
    assert rows and all(re.fullmatch(r"-?[\d,]+", t) for t in rows), rows  # counts are whole


def test_log_axes_read_as_plain_numbers() -> None:
    formatter = PlainLogFormatter(labelOnlyBase=False)
    fig = Figure()
    ax = fig.subplots()
    ax.bar([0, 1], [4.5, 9000])
    log_scale(ax, [4.5, 9000])
    figure_png(fig)
    labels = _tick_texts(ax.yaxis) + [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_text()]
    assert labels and not any("times" in t or "^" in t or "×" in t for t in labels), labels
    assert "1,000" in labels
    assert ax.get_ylim()[0] < 4.5 / 2  # the smallest bar shows clearly
    assert formatter._num_to_string(20.0, 1, 100) == "20"


def test_shrink_legend_covers_no_bar() -> None:
    fig = steps_figure(_steps(), "roc_auc", 0.6912)
    figure_png(fig, top=LEGEND_TOP)
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert ax.get_legend() is None
        for bar in ax.patches:
            assert not legend.overlaps(bar.get_window_extent(renderer))
        assert not Bbox.intersection(legend, ax.get_window_extent(renderer))
    kb_axis = fig.axes[0]
    smallest = min(bar.get_height() for bar in kb_axis.patches)
    assert kb_axis.get_ylim()[0] < smallest / 2  # the int8 bar stands out from the bottom


def test_importance_from_few_trials_carries_a_warning(tune_report: Path) -> None:
    fig = importance_figure({"train.lr": 0.8, "model.hidden": 0.2}, trials=5)
    warning = fig.axes[0].get_title(loc="right")
    assert "only 5 completed trials" in warning
    assert not importance_figure({"train.lr": 1.0}, trials=FEW_TRIALS).axes[0].get_title(loc="right")
    page = tune_report.read_text()
    assert 'class="warning"' in page and "only 4 completed trials" in page


# ---- reports ----------------------------------------------------------------------------------------------


def test_prepare_report(trained: dict[str, Config]) -> None:
    config = trained["binary"]
    folder = config.stage_dir("prepare")
    page = (folder / "report.html").read_text()
    _standalone(page)
    quality = json.loads((folder / "quality.json").read_text())
    for name in ("x1", "x2", "colour", "missing", "invalid", "imputed", "clipped", "categories"):
        assert name in page
    assert "3 (+1 infrequent)" in page  # red, green and blue; violet is rare
    assert "Distributions" in page
    images = _images(page)
    assert len(images) == 1 and images[0].width > 300
    assert f"{quality['rows']['read']:,} read" in page


def test_histograms_count_every_training_row_in_original_units(trained: dict[str, Config]) -> None:
    config = trained["binary"]
    data = PreparedData(config.stage_dir("prepare"))
    histograms = {h.column: h for h in numeric_histograms(data.split("train"), data.state())}
    assert set(histograms) == {"x1", "x2"}
    train_rows = pl.scan_parquet(data.split("train")).select(pl.len()).collect().item()
    assert all(int(h.counts.sum()) == train_rows for h in histograms.values())
    assert histograms["x2"].edges[0] >= -1e-3 and histograms["x2"].edges[-1] <= 100 + 1e-3  # clipped
    assert 10 < histograms["x1"].edges[0] < 50 < histograms["x1"].edges[-1] < 90


def test_train_reports(trained: dict[str, Config]) -> None:
    binary = (trained["binary"].stage_dir("train") / "report.html").read_text()
    _standalone(binary)
    for text in ("learning curves", "confusion matrix", "roc", "roc_auc", "validation", "test", "Epochs"):
        assert text in binary
    assert len(_images(binary)) == 3
    regression = (trained["regression"].stage_dir("train") / "report.html").read_text()
    assert "residuals" in regression and "rmse" in regression and "r2" in regression
    assert len(_images(regression)) == 2


def test_tune_report_rounds_numbers(tune_report: Path) -> None:
    page = tune_report.read_text()
    _standalone(page)
    assert "0.000698910960952134" not in page
    assert "train.lr=0.003" in page and "0.000699" in page and "1e-5" in page
    assert len(_images(page)) == 2


def test_shrink_report(shrink_report: Path) -> None:
    page = shrink_report.read_text()
    _standalone(page)
    assert "0.7012" in page and "0.70123456" not in page
    assert len(_images(page)) == 1


# ---- console tables ---------------------------------------------------------------------------------------


def test_trial_table_keeps_headings_on_a_narrow_terminal() -> None:
    rows = _trials()
    for width in (60, 80, 200):
        console = Console(width=width, record=True, color_system=None)
        render_trials(rows, KEYS, "roc_auc", rows[2], console)
        text = console.export_text()
        assert "…" not in text
        assert all(len(line) <= width for line in text.splitlines())
        words = ("complete", "pruned", "roc_auc", "epochs", "2 ★")
        words += (*KEYS, "0.000699") if width >= 80 else ()  # at 60 a long key=value folds
        for word in words:
            assert word in text, (width, word)


def test_shrink_table_keeps_headings_on_a_narrow_terminal() -> None:
    records = _steps()
    rows = [table_row(r, "roc_auc") for r in records]
    summary = {
        "budget": {"text": "roc_auc may drop 0.01", "max_metric_drop": 0.01},
        "steps": [r.as_dict() for r in records],
        "final": records[3].as_dict(),
        "written": True,
        "batch1_p50_us_side_by_side": None,
        "test": {"parent": {"roc_auc": 0.7}, "final": {"roc_auc": 0.69}},
        "test_drop": 0.01,
    }
    for width in (80, 120, 250):
        console = Console(width=width, record=True, color_system=None)
        render_steps(rows, "roc_auc", summary, console)
        text = console.export_text()
        assert "…" not in text and all(len(line) <= width for line in text.splitlines())
        for word in ("model.onnx KB", "p50 b1 µs", "roc_auc", "decision", "rolled back", "mlp [32] 50%"):
            assert word in text, (width, word)
    assert "p99 b1024 µs" in text  # every column on a wide terminal


def test_add_column_never_cuts_the_heading() -> None:
    from rich.table import Table

    table = Table()
    for heading in ("model.hidden", "train.weight_decay", "complete"):
        add_column(table, heading)
    table.add_row("[64, 64]", "1e-5", "x")
    console = Console(width=40, record=True, color_system=None)
    console.print(table)
    assert "…" not in console.export_text()


# ---- in a browser -----------------------------------------------------------------------------------------

CHECK = """<script>
window.addEventListener("load", () => {
  const widths = Array.from(document.images).map((image) => image.naturalWidth);
  const out = document.createElement("pre");
  out.id = "leanml-check";
  out.textContent = JSON.stringify(widths);
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_reports_render_in_chromium(
    trained: dict[str, Config], tune_report: Path, shrink_report: Path, tmp_path: Path
) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "chromium is not installed (apt-get install chromium; `make test` tries it): reports not rendered"
        )
    pages = {
        "prepare": trained["binary"].stage_dir("prepare") / "report.html",
        "train binary": trained["binary"].stage_dir("train") / "report.html",
        "train regression": trained["regression"].stage_dir("train") / "report.html",
        "tune": tune_report,
        "shrink": shrink_report,
    }
    for name, path in pages.items():
        checked = tmp_path / f"{name.replace(' ', '-')}.html"
        checked.write_text(path.read_text().replace("</body>", CHECK + "</body>"))
        run = subprocess.run(
            [
                browser,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--enable-logging=stderr",
                "--v=0",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--dump-dom",
                checked.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, f"{name}: chromium failed: {run.stderr[-2000:]}"
        found = re.search(r'<pre id="leanml-check">([^<]*)</pre>', run.stdout)
        assert found, f"{name}: the page did not finish loading"
        widths = json.loads(found.group(1))
        assert widths and all(w > 0 for w in widths), f"{name}: a broken image ({widths})"
        console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
        assert not console, f"{name}: console messages: {console}"
