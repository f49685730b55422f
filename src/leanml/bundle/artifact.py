"""The bundle: one folder that holds everything needed to serve a model, and nothing that runs code.

Files::

    manifest.json       format version, name, version, creation time, versions of leanml/torch/onnxruntime,
                        task, input schema, output labels, metrics, lineage, sha256 of every other file
    preprocess.json     the frozen preprocessing state
    model.json          the model spec (architecture and sizes)
    model.safetensors   the weights
    model.onnx          the exported network (fp32, or int8 after shrinking)
    pipeline.onnx       the serving graph: preprocessing + network + output head, raw columns to answers
    reference.parquet   raw training rows with the outputs the bundle must reproduce
    config.json         the resolved config that produced it
    drift.json          the training distribution of each input, for drift monitoring

Loading verifies every checksum, refuses manifests from a newer format, checks that the weights are
safetensors (never unpickling anything; the PyTorch model itself is rebuilt only when asked for) and
replays the reference rows through the network, through ``pipeline.onnx`` and through its packed twin
(:func:`packed_pipeline`, compiled at load: what the server and ``Bundle.predict`` on records run): a
bundle that no longer reproduces its own outputs is refused. Tolerances follow the outputs' scale (see
:func:`tolerance`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime
import polars as pl
from safetensors import safe_open

from leanml._version import __version__
from leanml.bundle import graph
from leanml.bundle.runtime import OnnxRuntime, PipelineRuntime, Runtime, TorchRuntime, is_int8, scores
from leanml.data.preprocessor import FLAGS, REASON, feature_matrix, transform
from leanml.data.state import PreprocessState
from leanml.errors import DataError, LeanMLError, require_format_version
from leanml.files import atomic_path, write_json
from leanml.metrics import classify

if TYPE_CHECKING:
    import torch

BUNDLE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PREPROCESS = "preprocess.json"
MODEL_ONNX = "model.onnx"
PIPELINE_ONNX = "pipeline.onnx"
MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
REFERENCE = "reference.parquet"
CONFIG = "config.json"
DRIFT = "drift.json"
REFERENCE_ROWS = 256
REPLAY_ATOL = 1e-4
"""Agreement asked of two runtimes, relative to the outputs' scale (see :func:`tolerance`)."""
PREDICTION = "prediction"


class BundleError(LeanMLError):
    """A bundle is missing, damaged, from a newer format, or does not reproduce its outputs."""


@dataclass
class BundleInputs:
    """What a stage hands over to be written as a bundle."""

    name: str
    state: PreprocessState
    model: torch.nn.Module
    spec: dict[str, Any]
    metrics: dict[str, Any]
    reference_rows: pl.DataFrame
    """Raw input rows (as read from the source) replayed at load time."""
    lineage: dict[str, Any]
    """``data_fingerprint``, ``config_hash``, ``parent`` (a version or null) and ``stage``."""
    config: dict[str, Any] | None = None
    onnx_model: bytes | None = None
    """A prebuilt graph (e.g. int8); exported from ``model`` when omitted."""
    drift: dict[str, Any] | None = None
    """Training distribution of the inputs (see :mod:`leanml.bundle.drift`), stored as ``drift.json``."""
    extra_files: dict[str, bytes] = field(default_factory=dict)


def write_bundle(directory: Path, inputs: BundleInputs, version: str) -> Path:
    """Write every bundle file into ``directory`` (a fresh folder the caller moves into place)."""
    from leanml.models import export_onnx, save_model

    directory.mkdir(parents=True, exist_ok=False)
    inputs.state.save(directory / PREPROCESS)
    save_model(inputs.model, inputs.spec, directory)
    if inputs.onnx_model is None:
        export_onnx(inputs.model, inputs.spec, directory / MODEL_ONNX)
    else:
        with atomic_path(directory / MODEL_ONNX) as tmp:
            tmp.write_bytes(inputs.onnx_model)
    pipeline = graph.build_pipeline(inputs.state, directory / MODEL_ONNX, inputs.spec)
    with atomic_path(directory / PIPELINE_ONNX) as tmp:
        onnx.save(pipeline, str(tmp))
    if inputs.config is not None:
        write_json(directory / CONFIG, inputs.config)
    if inputs.drift is not None:
        write_json(directory / DRIFT, inputs.drift)
    for name, payload in inputs.extra_files.items():
        with atomic_path(directory / name) as tmp:
            tmp.write_bytes(payload)

    reference = _reference_table(inputs, directory)
    with atomic_path(directory / REFERENCE) as tmp:
        reference.write_parquet(tmp)

    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}
    manifest = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "name": inputs.name,
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": {
            "leanml": __version__,
            "torch": _torch_version(),
            "onnxruntime": onnxruntime.__version__,
            "python": sys.version.split()[0],
        },
        "pipeline": graph.manifest_entry(inputs.state),
        "task": inputs.state.target.task,
        "target": inputs.state.target.name,
        "labels": inputs.state.target.labels,
        "input_schema": input_schema(inputs.state),
        "features": len(inputs.state.feature_names),
        "model": {
            "arch": inputs.spec["arch"],
            "parameters": int(sum(t.numel() for t in inputs.model.state_dict().values())),
            "onnx": "int8" if inputs.onnx_model is not None and is_int8(inputs.onnx_model) else "fp32",
        },
        "metrics": inputs.metrics,
        "lineage": inputs.lineage,
        "files": files,
    }
    write_json(directory / MANIFEST, manifest)
    return directory


def _torch_version() -> str:
    import torch

    return torch.__version__


def tolerance(expected: np.ndarray) -> float:
    """How far a replay may stray from ``expected``: :data:`REPLAY_ATOL` times the outputs' scale.

    Probabilities lie in [0, 1], so this is 1e-4 for them. A regression model answering in the target's
    units (prices around 5,000, where float32 steps are about 5e-4) gets a bound scaled to its outputs,
    so a good graph is not refused for float32 rounding on another CPU.
    """
    finite = np.abs(expected[np.isfinite(expected)])
    scale = float(finite.max()) if finite.size else 1.0
    return REPLAY_ATOL * max(1.0, scale)


def _reference_table(inputs: BundleInputs, directory: Path) -> pl.DataFrame:
    """The reference rows with the outputs of every runtime; the runtimes must agree with each other."""
    rows = inputs.reference_rows.head(REFERENCE_ROWS)
    features = _features(rows, inputs.state)
    onnx_out = scores(OnnxRuntime(directory / MODEL_ONNX, threads=1).outputs(features), inputs.spec)
    torch_out = scores(TorchRuntime(inputs.model).outputs(features), inputs.spec)
    if inputs.onnx_model is None:
        _require_agreement(onnx_out, torch_out, "the exported ONNX graph disagrees with the PyTorch model")
    pipeline = PipelineRuntime(directory / PIPELINE_ONNX, threads=1)
    pipeline_out = pipeline_scores(pipeline, rows, inputs.state)
    _require_agreement(
        pipeline_out, onnx_out, f"{PIPELINE_ONNX} disagrees with the Polars preprocessing and {MODEL_ONNX}"
    )
    packed_out = pipeline_scores(
        packed_pipeline(inputs.state, directory / MODEL_ONNX, inputs.spec, 1), rows, inputs.state
    )
    _require_agreement(packed_out, pipeline_out, f"the packed twin of {PIPELINE_ONNX} disagrees with it")
    return rows.with_columns(
        *_score_columns("__expected_onnx", onnx_out),
        *_score_columns("__expected_torch", torch_out),
        *_score_columns("__expected_pipeline", pipeline_out),
    )


def _require_agreement(got: np.ndarray, expected: np.ndarray, message: str) -> None:
    gap = float(np.abs(got.reshape(len(got), -1) - expected.reshape(len(expected), -1)).max(initial=0.0))
    if not gap <= tolerance(expected):
        raise BundleError(f"{message} (max difference {gap:.2e} > {tolerance(expected):.2e})")


def pipeline_scores(pipeline: PipelineRuntime, frame: pl.DataFrame, state: PreprocessState) -> np.ndarray:
    """What the serving graph predicts for raw rows, in :func:`scores`' shapes (float64)."""
    return outputs_scores(pipeline.run(graph.graph_inputs(frame, state)), state.target.task)


def _score_columns(prefix: str, values: np.ndarray) -> list[pl.Series]:
    matrix = values.reshape(len(values), -1)
    return [pl.Series(f"{prefix}_{i}", matrix[:, i]) for i in range(matrix.shape[1])]


def _features(frame: pl.DataFrame, state: PreprocessState) -> np.ndarray:
    transformed = transform(frame, state, mode="serve")
    return feature_matrix(transformed, state, np.float32)


def input_schema(state: PreprocessState) -> list[dict[str, Any]]:
    """What each input column accepts: its type, categories, observed ranges and outlier bounds."""
    schema = []
    for column in state.columns:
        entry: dict[str, Any] = {"name": column.name, "type": column.type}
        if column.type == "numeric":
            entry["range"] = [column.observed_min, column.observed_max]
            if column.outliers is not None:
                entry["bounds"] = [column.outliers.lower, column.outliers.upper]
                entry["out_of_bounds"] = (
                    column.outliers.serving if column.outliers.action == "drop" else column.outliers.action
                )
        elif column.type == "categorical":
            entry["categories"] = [*column.categories, *column.infrequent]
            entry["unknown"] = column.handle_unknown
        else:
            entry["format"] = column.format
            entry["range"] = [
                dt.datetime.fromtimestamp(column.observed_min, dt.UTC).replace(tzinfo=None).isoformat(),
                dt.datetime.fromtimestamp(column.observed_max, dt.UTC).replace(tzinfo=None).isoformat(),
            ]
        schema.append(entry)
    return schema


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Bundle:
    """A loaded, verified bundle: predicts on frames and records with the bundle's own preprocessing."""

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        state: PreprocessState,
        spec: dict[str, Any],
        runtime: Runtime,
        pipeline: PipelineRuntime,
        model: torch.nn.Module | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.state = state
        self.spec = spec
        self.runtime = runtime
        self.pipeline = pipeline
        self._model = model

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch model, rebuilt from ``model.json`` + ``model.safetensors`` on first use."""
        if self._model is None:
            from leanml.models import load_model

            try:
                self._model, _ = load_model(self.path)
            except LeanMLError as exc:
                raise BundleError(f"bundle '{self.path}': {exc}") from None
        return self._model

    @property
    def name(self) -> str:
        """The model name."""
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        """The version in the store, e.g. ``v3``."""
        return str(self.manifest["version"])

    @property
    def task(self) -> str:
        """``binary``, ``multiclass`` or ``regression``."""
        return str(self.manifest["task"])

    @property
    def drift_reference(self) -> dict[str, Any] | None:
        """The training distribution of the inputs (``drift.json``), when the bundle has one."""
        path = self.path / DRIFT
        return json.loads(path.read_text()) if DRIFT in self.manifest["files"] else None

    @property
    def labels(self) -> list[Any]:
        """Class labels in output order (empty for regression)."""
        return list(self.state.target.labels)

    def features(self, frame: pl.DataFrame) -> tuple[np.ndarray, pl.DataFrame]:
        """The float32 feature matrix of ``frame`` and the per-row ``__reason``/``__flags``."""
        transformed = transform(frame, self.state, mode="serve")
        matrix = feature_matrix(transformed, self.state, np.float32)
        return matrix, transformed.select(REASON, FLAGS)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Predictions for a feature matrix: binary ``[n]`` P(class 1), ``[n, K]`` or regression ``[n]``."""
        return scores(self.runtime.outputs(features), self.spec)

    def predict(self, data: Any, keep: Sequence[str] = ()) -> pl.DataFrame:
        """Predictions for a table or a list of records (one dict per row).

        ``data``: a Polars, pandas or Arrow table (read by the Polars path, the one ``leanml predict``
        streams files through), or records — a list of dicts, read value by value exactly as the server
        reads a request (:mod:`leanml.bundle.feed`) and run through the served graph. Both give the same
        answers and verdicts (``tests/bundle`` checks them against each other).

        Columns: ``keep`` (copied from the input), ``prediction`` (the label, or the value), one
        ``proba_LABEL`` per class for classification, then ``__reason`` (why a row was rejected; its
        prediction is null) and ``__flags`` (columns whose out-of-bounds value was let through).
        """
        inputs = [c.name for c in self.state.columns]
        frame = as_frame(data)
        if frame is None:
            return self._predict_records(data, keep)
        missing = [name for name in inputs if name not in frame.columns]
        if missing:
            raise DataError(f"the data lacks input column(s) the model needs: {', '.join(missing)}")
        matrix, rules = self.features(frame)
        result = self.scores(matrix)
        accepted = rules[REASON].is_null().to_numpy()
        columns = [frame.get_column(name) for name in keep]
        columns += prediction_columns(result, accepted, self.task, self.labels)
        return pl.DataFrame(columns).with_columns(rules)

    def _predict_records(self, records: Sequence[Mapping[str, Any]], keep: Sequence[str]) -> pl.DataFrame:
        from leanml.bundle.feed import request_feed

        for row, record in enumerate(records):
            if not isinstance(record, Mapping):
                kind = type(record).__name__
                raise DataError(f"record {row}: expected a mapping of column to value, got {kind}")
        rows = len(records)
        columns = {c.name: [record.get(c.name) for record in records] for c in self.state.columns}
        feed, errors = request_feed(columns, rows, self.state)
        outputs = self.pipeline.run(feed)
        names = graph.problem_names(self.state)
        reasons: list[str | None] = [None] * rows
        for error in errors:  # text that is not valid Unicode never reached the graph
            reasons[error["row"]] = reasons[error["row"]] or f"invalid:{error['field']}"
        for row, check in zip(*np.nonzero(outputs[graph.PROBLEMS]), strict=True):
            reasons[row] = reasons[row] or names[check]
        flags = graph.flagged_columns(outputs[graph.FLAGS], graph.flag_names(self.state))
        accepted = np.array([reason is None for reason in reasons], dtype=bool)
        kept = [pl.Series(name, [record.get(name) for record in records], strict=False) for name in keep]
        answers = prediction_columns(outputs_scores(outputs, self.task), accepted, self.task, self.labels)
        result = pl.DataFrame([*kept, *answers])
        return result.with_columns(
            pl.Series(REASON, reasons, dtype=pl.String), pl.Series(FLAGS, flags, dtype=pl.String)
        )


def as_frame(data: Any) -> pl.DataFrame | None:
    """``data`` as a Polars frame when it is a table (Polars, pandas, Arrow); ``None`` for records."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pl.LazyFrame):
        return data.collect()
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return pl.from_pandas(data, nan_to_null=True)
    if module == "pyarrow":
        frame = pl.from_arrow(data)
        return frame if isinstance(frame, pl.DataFrame) else frame.to_frame()
    if isinstance(data, Mapping):
        raise DataError("expected a table or a list of records (dicts), got a single mapping")
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        return None
    kind = type(data).__name__
    raise DataError(f"expected a Polars, pandas or Arrow table or a list of records, got {kind}")


def outputs_scores(outputs: Mapping[str, np.ndarray], task: str) -> np.ndarray:
    """The serving graph's answers in :func:`scores`' shapes (float64)."""
    if task == "regression":
        return outputs[graph.PREDICTION].astype(np.float64)
    probabilities = outputs[graph.PROBABILITIES].astype(np.float64)
    return probabilities[:, 1] if task == "binary" else probabilities


def prediction_columns(
    result: np.ndarray, accepted: np.ndarray, task: str, labels: list[Any]
) -> list[pl.Series]:
    """``prediction`` and ``proba_LABEL`` columns from scores; rejected rows get nulls."""
    if task == "regression":
        values = np.where(accepted, result.reshape(-1), np.nan)
        return [pl.Series(PREDICTION, values, dtype=pl.Float64, nan_to_null=True)]
    best, result = classify(task, result)
    label_series = pl.Series("labels", labels)
    predicted = label_series.gather(pl.Series(best, dtype=pl.UInt32)).alias(PREDICTION)
    predicted = (
        pl.select(pl.when(pl.Series(accepted)).then(predicted).otherwise(None)).to_series().alias(PREDICTION)
    )
    probas = [
        pl.Series(
            f"proba_{label}", np.where(accepted, result[:, i], np.nan), dtype=pl.Float64, nan_to_null=True
        )
        for i, label in enumerate(labels)
    ]
    return [predicted, *probas]


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and check a bundle's manifest (format version and shape), without verifying files."""
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"bundle '{path}': no such folder")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BundleError(f"bundle '{path}': {MANIFEST} is missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle '{path}': cannot read {MANIFEST}: {exc}") from None
    require_format_version(manifest, BUNDLE_FORMAT_VERSION, f"bundle '{path}': {MANIFEST}", BundleError)
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise BundleError(f"bundle '{path}': {MANIFEST} lists no files")
    return manifest


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    """Check that every listed file exists and has its recorded sha256."""
    for name, expected in manifest["files"].items():
        if "/" in name or name.startswith("."):
            raise BundleError(f"bundle '{path}': {MANIFEST} lists an unsafe file name {name!r}")
        file = path / name
        if not file.is_file():
            raise BundleError(f"bundle '{path}': {name} is missing")
        if sha256_file(file) != expected:
            raise BundleError(f"bundle '{path}': {name} does not match its checksum (modified or corrupted)")


def load_bundle(path: str | Path, runtime: str = "onnx", threads: int | None = None) -> Bundle:
    """Load and verify a bundle folder; ``runtime`` is ``onnx`` (default) or ``torch``."""
    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest)
    if runtime not in ("onnx", "torch"):
        raise BundleError(f"runtime must be 'onnx' or 'torch', got {runtime!r}")
    try:
        state = PreprocessState.load(path / PREPROCESS)
        spec = _read_spec(path)
    except LeanMLError as exc:
        raise BundleError(f"bundle '{path}': {exc}") from None
    _check_weights(path)
    try:
        if runtime == "onnx":
            chosen: Runtime = OnnxRuntime(path / MODEL_ONNX, threads=threads)
        # Bundles made before the serving graph have no pipeline.onnx: the packed twin is compiled from
        # the verified files all the same, and is what their reference rows replay through.
        has_contract = PIPELINE_ONNX in manifest["files"]
        contract = PipelineRuntime(path / PIPELINE_ONNX, threads=1) if has_contract else None
        pipeline = packed_pipeline(state, path / MODEL_ONNX, spec, threads)
    except BundleError:
        raise
    except Exception as exc:  # onnxruntime and onnx raise their own exception types for malformed graphs
        raise BundleError(f"bundle '{path}': a graph cannot be loaded: {exc}") from None
    bundle = Bundle(path, manifest, state, spec, None, pipeline)  # type: ignore[arg-type]
    bundle.runtime = chosen if runtime == "onnx" else TorchRuntime(bundle.model)
    replay_reference(bundle, contract)
    return bundle


def packed_pipeline(
    state: PreprocessState, model: str | Path | bytes, spec: dict[str, Any], threads: int | None = None
) -> PipelineRuntime:
    """The graph the server runs: ``pipeline.onnx``'s twin with one input per kind of column.

    Compiled at load from the same verified ``preprocess.json`` and ``model.onnx`` as ``pipeline.onnx``
    (``build_pipeline(..., packed=True)``), and replayed on the reference rows like it: a request then
    costs ONNX Runtime three inputs at most instead of one per column.
    """
    built = graph.build_pipeline(state, model, spec, packed=True)
    return PipelineRuntime(built.SerializeToString(), threads=threads, packing=graph.packed_inputs(state))


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads((path / MODEL_JSON).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle '{path}': cannot read {MODEL_JSON}: {exc}") from None
    if not isinstance(spec, dict) or "task" not in spec or "n_outputs" not in spec:
        raise BundleError(f"bundle '{path}': {MODEL_JSON} is not a model spec")
    return spec


def _check_weights(path: Path) -> None:
    """Refuse weights that are not a readable safetensors file (e.g. a pickle), without PyTorch."""
    try:
        with safe_open(str(path / MODEL_WEIGHTS), framework="numpy") as weights:
            list(weights.keys())
    except Exception as exc:  # safetensors raises its own error types for a foreign or damaged file
        raise BundleError(f"bundle '{path}': {MODEL_WEIGHTS} is not a safetensors file: {exc}") from None


def reference_inputs(reference: pl.DataFrame) -> pl.DataFrame:
    """The raw input rows of a bundle's ``reference.parquet``, without the expected outputs."""
    return reference.drop([c for c in reference.columns if c.startswith("__expected_")])


def replay_reference(bundle: Bundle, contract: PipelineRuntime | None = None) -> None:
    """Recompute the reference rows' outputs and refuse the bundle when they differ.

    Through the network, the graph the bundle serves with (``bundle.pipeline``) and, when given,
    ``pipeline.onnx`` itself (``contract``), which other runtimes run.
    """
    reference = pl.read_parquet(bundle.path / REFERENCE)
    prefix = f"__expected_{bundle.runtime.name}_"
    expected_cols = [c for c in reference.columns if c.startswith(prefix)]
    raw = reference_inputs(reference)
    if not expected_cols or raw.height == 0:
        raise BundleError(f"bundle '{bundle.path}': {REFERENCE} holds no reference outputs")
    expected = reference.select(expected_cols).to_numpy()
    got = bundle.scores(bundle.features(raw)[0]).reshape(len(raw), -1)
    _replayed(bundle, got, expected, bundle.runtime.name)
    pipeline_cols = [c for c in reference.columns if c.startswith("__expected_pipeline_")]
    # Bundles made before the serving graph hold no pipeline outputs: its graph must match the network's.
    expected = reference.select(pipeline_cols or expected_cols).to_numpy()
    got = pipeline_scores(bundle.pipeline, raw, bundle.state).reshape(len(raw), -1)
    _replayed(bundle, got, expected, f"the packed twin of {PIPELINE_ONNX}")
    if contract is not None:
        got = pipeline_scores(contract, raw, bundle.state).reshape(len(raw), -1)
        _replayed(bundle, got, expected, PIPELINE_ONNX)


def _replayed(bundle: Bundle, got: np.ndarray, expected: np.ndarray, what: str) -> None:
    gap = float(np.abs(got - expected).max())
    if not gap <= tolerance(expected):
        raise BundleError(
            f"bundle '{bundle.path}': does not reproduce its reference outputs through {what} (max "
            f"difference {gap:.2e} > {tolerance(expected):.2e}); the preprocessing or the model changed"
        )
