"""Wire formats: KServe V1 JSON and the Open Inference Protocol (KServe V2) REST, binary extension included.

V1: ``{"instances": [{column: value, ...}, ...]}`` → ``{"predictions": [...], "probabilities": [[...]],
"model_version": "v3"}``.

V2: one input tensor per column, shape ``[n]`` or ``[n, 1]``, ``BYTES`` for text and ``FP64``/``FP32``/
``INT64``/``INT32``/``BOOL``… for numbers, as JSON ``data`` or in the binary tensor extension (the JSON
header's length in ``Inference-Header-Content-Length``, raw tensors after it), which ``tritonclient.http``
uses by default. Outputs: ``prediction`` (``[n]``: the label, typed, or the value) and, for
classification, ``probabilities`` (``[n, classes]``, FP64); binary when the request asks for it.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson

from leanml.serve.validation import FieldError, RequestError

HEADER_LENGTH = "Inference-Header-Content-Length"
NUMPY_TYPES = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def parse_json(body: bytes) -> Any:
    """Parse a JSON body; malformed JSON is a 400.

    ``NaN`` and ``Infinity`` literals (not JSON, but what some clients, tritonclient among them, send for
    float tensors) are accepted: NaN reads as a missing value, infinities are reported as invalid.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise RequestError(400, f"malformed JSON: {exc}") from None


def parse_v2(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, list[Any]], int]:
    """A V2 infer request → (request JSON, columns by input name, rows)."""
    binary = b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise RequestError(400, f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= size <= len(body):
            raise RequestError(400, f"{HEADER_LENGTH} {size} does not fit a body of {len(body)} bytes")
        body, binary = body[:size], body[size:]
    request = parse_json(body)
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise RequestError(
            422,
            "an infer request needs a non-empty list 'inputs'",
            [{"row": None, "field": "inputs", "error": "expected a non-empty list of tensors"}],
        )
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    errors: list[FieldError] = []
    offset = 0
    for position, tensor in enumerate(request["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            errors.append(
                {"row": None, "field": f"inputs[{position}]", "error": "expected a tensor with a 'name'"}
            )
            continue
        name = tensor["name"]
        try:
            values, offset = _tensor_values(tensor, binary, offset)
        except ValueError as exc:
            errors.append({"row": None, "field": name, "error": str(exc)})
            continue
        if rows is None:
            rows = len(values)
        elif len(values) != rows:
            errors.append(
                {"row": None, "field": name, "error": f"has {len(values)} rows, other inputs have {rows}"}
            )
            continue
        columns[name] = values
    if errors:
        raise RequestError(422, "invalid input tensors", errors)
    return request, columns, rows or 0


def _tensor_values(tensor: dict[str, Any], binary: bytes, offset: int) -> tuple[list[Any], int]:
    datatype = tensor.get("datatype")
    shape = tensor.get("shape")
    if datatype != "BYTES" and datatype not in NUMPY_TYPES:
        raise ValueError(f"unsupported datatype {datatype!r}")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and d >= 0 for d in shape)
        and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))
    ):
        raise ValueError(f"shape must be [rows] or [rows, 1], got {shape!r}")
    rows = shape[0]
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise ValueError("binary_data_size does not fit the binary part of the body")
        chunk = binary[offset : offset + size]
        values = _decode_bytes(chunk) if datatype == "BYTES" else _decode_numbers(chunk, datatype)
        offset += size
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise ValueError("'data' must be a list (or use the binary extension)")
        values = [_json_value(v, datatype) for v in _flatten(data)]
    if len(values) != rows:
        raise ValueError(f"shape says {rows} rows, data holds {len(values)}")
    return values, offset


def _json_value(value: Any, datatype: str) -> Any:
    """A JSON tensor element checked against its datatype (null is a missing value)."""
    if value is None:
        return None
    if datatype == "BYTES":
        ok = isinstance(value, str)
    elif datatype == "BOOL":
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"a {datatype} tensor holds {value!r}"[:120])
    return value


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _decode_numbers(chunk: bytes, datatype: str) -> list[Any]:
    dtype = np.dtype(NUMPY_TYPES[datatype])
    if len(chunk) % dtype.itemsize:
        raise ValueError(f"{len(chunk)} bytes is not a whole number of {datatype} values")
    return np.frombuffer(chunk, dtype=dtype).tolist()


def _decode_bytes(chunk: bytes) -> list[Any]:
    values: list[Any] = []
    position = 0
    while position < len(chunk):
        if position + 4 > len(chunk):
            raise ValueError("truncated BYTES tensor")
        (length,) = struct.unpack_from("<I", chunk, position)
        position += 4
        if position + length > len(chunk):
            raise ValueError("truncated BYTES tensor")
        try:
            values.append(chunk[position : position + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError("BYTES element is not UTF-8 text") from None
        position += length
    return values


def v1_response(
    predictions: list[Any], probabilities: np.ndarray | None, version: str, flags: list[Any] | None
) -> dict[str, Any]:
    """The V1 predict response body."""
    body: dict[str, Any] = {"predictions": predictions}
    if probabilities is not None:
        body["probabilities"] = probabilities.tolist()
    body["model_version"] = version
    if flags is not None and any(f is not None for f in flags):
        body["flags"] = flags
    return body


def v2_response(
    name: str,
    version: str,
    request: dict[str, Any],
    predictions: list[Any],
    probabilities: np.ndarray | None,
    labels: list[Any],
    task: str,
) -> tuple[bytes, dict[str, str]]:
    """The V2 infer response body and headers, binary when the request asked for binary outputs."""
    requested = {o.get("name"): o for o in request.get("outputs") or [] if isinstance(o, dict)}
    want_all_binary = bool((request.get("parameters") or {}).get("binary_data_output"))
    tensors: list[tuple[str, str, list[int], np.ndarray]] = []
    if task == "regression":
        tensors.append(("prediction", "FP64", [len(predictions)], np.asarray(predictions, dtype=np.float64)))
    else:
        datatype = _label_datatype(labels)
        array = np.asarray(predictions, dtype=object if datatype == "BYTES" else NUMPY_TYPES[datatype])
        tensors.append(("prediction", datatype, [len(predictions)], array))
        assert probabilities is not None
        tensors.append(("probabilities", "FP64", list(probabilities.shape), probabilities.astype(np.float64)))
    if requested:
        unknown = sorted(set(requested) - {t[0] for t in tensors})
        if unknown:
            raise RequestError(
                422,
                f"unknown output(s): {', '.join(map(str, unknown))}",
                [{"row": None, "field": "outputs", "error": f"no output named {u!r}"} for u in unknown],
            )
        tensors = [t for t in tensors if t[0] in requested]
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out_name, datatype, shape, array in tensors:
        entry: dict[str, Any] = {"name": out_name, "datatype": datatype, "shape": shape}
        binary = (requested.get(out_name, {}).get("parameters") or {}).get("binary_data", want_all_binary)
        if binary:
            blob = _encode_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = (
                [str(v) for v in array.reshape(-1)] if datatype == "BYTES" else array.reshape(-1).tolist()
            )
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if "id" in request:
        body["id"] = request["id"]
    header = orjson.dumps(body)
    if not blobs:
        return header, {}
    return header + b"".join(blobs), {HEADER_LENGTH: str(len(header))}


def _label_datatype(labels: list[Any]) -> str:
    if labels and all(isinstance(v, bool) for v in labels):
        return "BOOL"
    if labels and all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        return "INT64"
    if labels and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in labels):
        return "FP64"
    return "BYTES"


def _encode_bytes(array: np.ndarray) -> bytes:
    parts = []
    for value in array.reshape(-1):
        raw = str(value).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def v2_tensor_metadata(
    state: Any, labels: list[Any], task: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input and output tensor descriptions for V2 model metadata."""
    inputs = [
        {"name": c.name, "datatype": "FP64" if c.type == "numeric" else "BYTES", "shape": [-1]}
        for c in state.columns
    ]
    if task == "regression":
        outputs = [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    else:
        outputs = [
            {"name": "prediction", "datatype": _label_datatype(labels), "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(labels)]},
        ]
    return inputs, outputs
