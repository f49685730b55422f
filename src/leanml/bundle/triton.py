"""Export a bundle as a Triton Inference Server model repository: its serving graph, with no Python.

Layout written (Triton's ONNX Runtime backend)::

    REPO/NAME/config.pbtxt      inputs and outputs with names, types and dims; max_batch_size;
                                dynamic_batching
    REPO/NAME/1/model.onnx      the bundle's pipeline.onnx (preprocessing + network + output head)

Triton adds the batch dimension itself (``max_batch_size`` > 0), so each input is ``dims: [ 1 ]`` (the
graph's ``[N, 1]``) and ``label_index`` / ``prediction`` (``[N]``) are ``dims: [ 1 ]`` reshaped to ``[ ]``.
Missing values are encoded as ``manifest.json``'s ``pipeline.missing`` says (NaN, ``""``, int64 min).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from leanml.bundle import graph
from leanml.bundle.artifact import PIPELINE_ONNX, load_bundle
from leanml.errors import LeanMLError
from leanml.files import atomic_path

TRITON_TYPES = {
    "DOUBLE": "TYPE_FP64",
    "STRING": "TYPE_STRING",
    "INT64": "TYPE_INT64",
    "FLOAT": "TYPE_FP32",
    "BOOL": "TYPE_BOOL",
}
DEFAULT_MAX_BATCH = 1024
QUEUE_DELAY_US = 2000


def triton_config(name: str, entry: dict[str, Any], max_batch_size: int = DEFAULT_MAX_BATCH) -> str:
    """``config.pbtxt`` text for a serving graph described by ``entry`` (the manifest's ``pipeline``)."""
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        "input [",
    ]
    inputs = [
        f'  {{ name: "{i["name"]}" data_type: {TRITON_TYPES[i["type"]]} dims: [ 1 ] }}'
        for i in entry["inputs"]
    ]
    lines.append(",\n".join(inputs))
    lines.append("]")
    outputs = []
    for output in entry["outputs"]:
        shape = output["shape"][1:]
        if shape and shape[0] == 0:
            continue  # no checks of this kind: the graph's output has no columns
        kind = TRITON_TYPES[output["type"]]
        if shape:
            outputs.append(f'  {{ name: "{output["name"]}" data_type: {kind} dims: [ {shape[0]} ] }}')
        else:
            outputs.append(
                f'  {{ name: "{output["name"]}" data_type: {kind} dims: [ 1 ] reshape: {{ shape: [ ] }} }}'
            )
    lines += ["output [", ",\n".join(outputs), "]"]
    lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}")
    lines.append("instance_group [ { kind: KIND_CPU } ]")
    return "\n".join(lines) + "\n"


def export_triton(
    reference: str | Path, out: str | Path, name: str | None = None, max_batch_size: int = DEFAULT_MAX_BATCH
) -> Path:
    """Write a Triton model repository for the bundle at ``reference`` into ``out``; return the model folder.

    The bundle is loaded and verified first (checksums, reference replay through its graph). The model
    folder is written beside its final place and renamed into it, so a reader never sees half of it.
    """
    bundle = load_bundle(reference)
    model_name = name or bundle.name
    if not model_name or "/" in model_name or model_name.startswith("."):
        raise LeanMLError(f"model name {model_name!r}: use letters, digits, '-', '_' or '.'")
    entry = bundle.manifest.get("pipeline") or graph.manifest_entry(bundle.state)
    repository = Path(out)
    repository.mkdir(parents=True, exist_ok=True)
    target = repository / model_name
    staging = Path(tempfile.mkdtemp(prefix=f".{model_name}.", dir=repository))
    try:
        (staging / "1").mkdir()
        source = bundle.path / PIPELINE_ONNX
        if source.is_file():
            shutil.copyfile(source, staging / "1" / "model.onnx")
        else:  # a bundle made before the serving graph: compiled as loading did
            built = graph.build_pipeline(bundle.state, bundle.path / "model.onnx", bundle.spec)
            (staging / "1" / "model.onnx").write_bytes(built.SerializeToString())
        with atomic_path(staging / "config.pbtxt") as tmp:
            tmp.write_text(triton_config(model_name, entry, max_batch_size))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
