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
from dataclasses import dataclass, field
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
    """Parse a JSON body: text that is not UTF-8 or not JSON is a 400.

    ``NaN`` and ``Infinity`` literals (not JSON, but what some clients, tritonclient among them, send for
    float tensors) are accepted: NaN reads as a missing value, infinities are reported as invalid.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        first_error = exc
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            400, f"the body is not UTF-8 text: byte 0x{body[exc.start]:02x} at offset {exc.start} is invalid"
        ) from None
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        raise RequestError(400, f"malformed JSON: {first_error}") from None
    _refuse_lone_surrogates(payload)
    return payload


def _refuse_lone_surrogates(payload: Any) -> None:
    """A 400 for strings that hold half of a UTF-16 surrogate pair (``"\\ud800"``): not Unicode text.

    Only the slow path needs this: orjson refuses them, the standard library lets them through.
    """
    pending = [payload]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise RequestError(
                    400,
                    f"malformed JSON: the string {item[:40]!r} holds a lone UTF-16 surrogate "
                    f"(U+{ord(item[exc.start]):04X}), which is not Unicode text",
                ) from None


@dataclass
class V2Request:
    """A checked V2 infer request: its input columns and what it asks of the response."""

    columns: dict[str, list[Any]]
    rows: int
    id: str | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Requested outputs by name, with their parameters (empty: every output)."""
    binary_output: bool = False


def parse_v2(body: bytes, header_length: str | None) -> V2Request:
    """A V2 infer request (JSON, or JSON header + binary tensors) → its columns, rows and output options.

    Every problem of the request's shape is a 422 naming the field: the envelope (``id``, ``parameters``,
    ``outputs``) and each tensor (``datatype``, ``shape``, ``parameters``, ``data``).
    """
    binary = b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise RequestError(
                400, f"{HEADER_LENGTH} must be an integer, got {header_length[:40]!r}"
            ) from None
        if not 0 <= size <= len(body):
            raise RequestError(400, f"{HEADER_LENGTH} {size} does not fit a body of {len(body)} bytes")
        body, binary = body[:size], body[size:]
    request = parse_json(body)
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise RequestError(
            422,
            "an infer request needs a non-empty list 'inputs'",
            [_field_error("inputs", "expected a non-empty list of tensors")],
        )
    errors: list[FieldError] = []
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        errors.append(_field_error("id", f"expected a string, got {_show(request_id)}"))
        request_id = None
    parameters = _parameters(request, "parameters", errors)
    binary_output = _flag(parameters, "binary_data_output", "parameters.binary_data_output", errors)
    outputs = _requested_outputs(request.get("outputs"), errors)
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    offset = 0
    for position, tensor in enumerate(request["inputs"]):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            errors.append(
                _field_error(f"inputs[{position}]", "expected a tensor object with a string 'name'")
            )
            continue
        name = tensor["name"]
        try:
            values, offset = _tensor_values(tensor, binary, offset)
        except ValueError as exc:
            errors.append(_field_error(name, str(exc)))
            continue
        if rows is None:
            rows = len(values)
        elif len(values) != rows:
            errors.append(_field_error(name, f"has {len(values)} rows, other inputs have {rows}"))
            continue
        columns[name] = values
    if rows == 0 and not errors:
        errors.append(_field_error("inputs", "no rows: the input tensors are empty"))
    if errors:
        raise RequestError(422, "invalid infer request", errors)
    return V2Request(columns, rows or 0, request_id, outputs, binary_output)


def check_outputs(request: V2Request, available: list[str]) -> None:
    """A 422 when the request asks for an output the model does not have."""
    unknown = sorted(set(request.outputs) - set(available))
    if unknown:
        raise RequestError(
            422,
            f"unknown output(s): {', '.join(unknown)}",
            [
                _field_error("outputs", f"no output named {u!r} (outputs: {', '.join(available)})")
                for u in unknown
            ],
        )


def _field_error(field_name: str, message: str) -> FieldError:
    return {"row": None, "field": field_name, "error": message}


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _parameters(owner: dict[str, Any], where: str, errors: list[FieldError]) -> dict[str, Any]:
    """The ``parameters`` object of a request, tensor or output (absent or null: empty)."""
    value = owner.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(_field_error(where, f"expected an object, got {_show(value)}"))
        return {}
    return value


def _flag(parameters: dict[str, Any], key: str, where: str, errors: list[FieldError]) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        errors.append(_field_error(where, f"expected true or false, got {_show(value)}"))
        return False
    return value


def _requested_outputs(outputs: Any, errors: list[FieldError]) -> dict[str, dict[str, Any]]:
    if outputs is None:
        return {}
    if not isinstance(outputs, list):
        errors.append(_field_error("outputs", f"expected a list of output objects, got {_show(outputs)}"))
        return {}
    requested: dict[str, dict[str, Any]] = {}
    for position, output in enumerate(outputs):
        where = f"outputs[{position}]"
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            errors.append(_field_error(where, "expected an object with a string 'name'"))
            continue
        parameters = _parameters(output, f"{where}.parameters", errors)
        if "binary_data" in parameters:
            _flag(parameters, "binary_data", f"{where}.parameters.binary_data", errors)
        requested[output["name"]] = parameters
    return requested


def _tensor_values(tensor: dict[str, Any], binary: bytes, offset: int) -> tuple[list[Any], int]:
    datatype = tensor.get("datatype")
    shape = tensor.get("shape")
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in NUMPY_TYPES):
        raise ValueError(f"unsupported datatype {_show(datatype)} (use BYTES, FP64, FP32, INT64, BOOL, ...)")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))
    ):
        raise ValueError(f"shape must be [rows] or [rows, 1], got {_show(shape)}")
    rows = shape[0]
    parameters = tensor.get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise ValueError(f"'parameters' must be an object, got {_show(parameters)}")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise ValueError("binary_data_size does not fit the binary part of the body")
        chunk = binary[offset : offset + size]
        values = _decode_bytes(chunk) if datatype == "BYTES" else _decode_numbers(chunk, datatype)
        offset += size
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise ValueError("'data' must be a list (or use the binary extension)")
        values = [_json_value(v, datatype) for v in _flatten(data, len(shape))]
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
        raise ValueError(f"a {datatype} tensor holds {_show(value)}")
    return value


def _flatten(data: list[Any], depth: int) -> list[Any]:
    """Tensor data, flat or nested as its shape (at most ``depth`` lists deep), in row-major order."""
    flat: list[Any] = []
    stack: list[tuple[list[Any], int, int]] = [(data, 0, 1)]  # (list, next index, nesting level)
    while stack:
        items, start, level = stack.pop()
        for position in range(start, len(items)):
            item = items[position]
            if not isinstance(item, list):
                flat.append(item)
                continue
            if level >= depth:
                raise ValueError(f"'data' is nested deeper than its shape's {depth} dimension(s)")
            stack.append((items, position + 1, level))  # the rest of this list, after the nested one
            stack.append((item, 0, level + 1))
            break
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
    request: V2Request,
    predictions: list[Any],
    probabilities: np.ndarray | None,
    labels: list[Any],
    task: str,
) -> tuple[bytes, dict[str, str]]:
    """The V2 infer response body and headers, binary when the request asked for binary outputs."""
    tensors: list[tuple[str, str, list[int], np.ndarray]] = []
    if task == "regression":
        tensors.append(("prediction", "FP64", [len(predictions)], np.asarray(predictions, dtype=np.float64)))
    else:
        datatype = _label_datatype(labels)
        array = np.asarray(predictions, dtype=object if datatype == "BYTES" else NUMPY_TYPES[datatype])
        tensors.append(("prediction", datatype, [len(predictions)], array))
        assert probabilities is not None
        tensors.append(("probabilities", "FP64", list(probabilities.shape), probabilities.astype(np.float64)))
    if request.outputs:
        tensors = [t for t in tensors if t[0] in request.outputs]
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out_name, datatype, shape, array in tensors:
        entry: dict[str, Any] = {"name": out_name, "datatype": datatype, "shape": shape}
        if request.outputs.get(out_name, {}).get("binary_data", request.binary_output):
            blob = _encode_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = (
                [str(v) for v in array.reshape(-1)] if datatype == "BYTES" else array.reshape(-1).tolist()
            )
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if request.id is not None:
        body["id"] = request.id
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
