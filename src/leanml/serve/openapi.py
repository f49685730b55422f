"""The server's own OpenAPI 3 document (``GET /openapi.json``), built from the models it serves.

Each served model gets its V1 and V2 (Open Inference Protocol) operations spelled out with its real
inputs: the columns of its bundle's input schema, their types, known categories (as an ``enum`` where an
unknown category is refused) and accepted ranges (``minimum``/``maximum`` where an outlier is refused).
Every status the server answers with is listed, each error with its JSON body. The document is what a
client generator or a fuzzer (the test suite runs schemathesis with it) needs to talk to this server.
"""

from __future__ import annotations

from typing import Any

from leanml._version import __version__

OPENAPI_VERSION = "3.0.3"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERRORS = {
    "400": "Malformed JSON, or text that is not UTF-8.",
    "401": "Missing or wrong API key.",
    "404": "No such model, version or route.",
    "413": "Body or row count over the limit.",
    "415": "The body is not JSON (Content-Type).",
    "422": "Invalid values: one entry per row and field.",
    "503": "The queue is full; retry after Retry-After seconds.",
    "504": "No answer within the request timeout.",
}
TIMING_HEADERS = {
    "X-Model-Version": {"description": "The version that answered.", "schema": {"type": "string"}},
    "X-Queue-Ms": {"description": "Time spent queued.", "schema": {"type": "string"}},
    "X-Preprocess-Ms": {"description": "Time spent preprocessing.", "schema": {"type": "string"}},
    "X-Model-Ms": {"description": "Time spent in the model.", "schema": {"type": "string"}},
}


def openapi_document(models: list[dict[str, Any]], max_rows: int, api_key: bool = False) -> dict[str, Any]:
    """The OpenAPI 3 document of a server serving ``models``.

    Each model is a dict with ``name``, ``version``, ``task``, ``labels``, ``inputs`` (the bundle's input
    schema), ``tensors`` and ``outputs`` (its V2 tensor metadata).
    """
    paths: dict[str, Any] = {
        "/v2/health/live": _get("Server live", _object({"live": {"type": "boolean"}}), secured=False),
        "/v2/health/ready": _get("Server ready", _object({"ready": {"type": "boolean"}}), secured=False),
        "/v2": _get("Server metadata", {"$ref": "#/components/schemas/ServerMetadata"}),
        "/v1/models": _get(
            "Served models", _object({"models": {"type": "array", "items": {"type": "string"}}})
        ),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Prometheus text", "content": {"text/plain": {}}}},
            }
        },
        "/openapi.json": _get("This document", {"type": "object"}),
    }
    for model in models:
        paths.update(_model_paths(model, max_rows))
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "leanml model server",
            "version": __version__,
            "description": "KServe V1 and Open Inference Protocol (KServe V2) REST for each served model.",
        },
        "paths": paths,
        "components": {"schemas": _shared_schemas()},
    }
    if api_key:
        document["components"]["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        }
        document["security"] = [{"ApiKey": []}, {"Bearer": []}]
    return document


def _model_paths(model: dict[str, Any], max_rows: int) -> dict[str, Any]:
    name = model["name"]
    version_param = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    v2_metadata = {"$ref": "#/components/schemas/ModelMetadata"}
    ready = _object({"name": {"type": "string"}, "ready": {"type": "boolean"}}, required=["name", "ready"])
    infer = _v2_infer(model, max_rows)
    return {
        f"/v1/models/{name}": _get(f"{name}: V1 metadata", _v1_metadata_schema(), errors=("404",)),
        f"/v1/models/{name}:predict": {"post": _v1_predict(model, max_rows)},
        f"/v1/models/{name}/drift": _get(f"{name}: input drift (PSI)", {"type": "object"}, errors=("404",)),
        f"/v2/models/{name}": _get(f"{name}: V2 metadata", v2_metadata, errors=("404",)),
        f"/v2/models/{name}/versions/{{version}}": {
            "parameters": [version_param],
            **_get(f"{name}: V2 metadata of a version", v2_metadata, errors=("404",)),
        },
        f"/v2/models/{name}/ready": _get(f"{name}: ready", ready, errors=("404",)),
        f"/v2/models/{name}/versions/{{version}}/ready": {
            "parameters": [version_param],
            **_get(f"{name}: ready (a version)", ready, errors=("404",)),
        },
        f"/v2/models/{name}/infer": {"post": infer},
        f"/v2/models/{name}/versions/{{version}}/infer": {"parameters": [version_param], "post": infer},
    }


def _v1_predict(model: dict[str, Any], max_rows: int) -> dict[str, Any]:
    columns = {column["name"]: _column_schema(column) for column in model["inputs"]}
    instance = _object(columns, required=list(columns))
    request = _object(
        {"instances": {"type": "array", "items": instance, "minItems": 1, "maxItems": max_rows}},
        required=["instances"],
    )
    prediction = _prediction_schema(model)
    body: dict[str, Any] = {
        "predictions": {"type": "array", "items": prediction},
        "model_version": {"type": "string"},
        "flags": {"type": "array", "items": {}},
    }
    if model["task"] != "regression":
        body["probabilities"] = {
            "type": "array",
            "items": {"type": "array", "items": {"type": "number"}, "minItems": len(model["labels"])},
        }
    return {
        "summary": f"{model['name']}: predict (KServe V1)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {
                "description": "One prediction per instance.",
                "headers": TIMING_HEADERS,
                "content": {
                    "application/json": {"schema": _object(body, required=["predictions", "model_version"])}
                },
            },
            **_errors("400", "401", "404", "413", "415", "422", "503", "504"),
        },
    }


def _v2_infer(model: dict[str, Any], max_rows: int) -> dict[str, Any]:
    tensors = [
        _tensor_schema(tensor, column, max_rows)
        for tensor, column in zip(model["tensors"], model["inputs"], strict=True)
    ]
    output_names = [output["name"] for output in model["outputs"]]
    requested = _object(
        {"name": {"type": "string", "enum": output_names}, "parameters": {"type": "object"}},
        required=["name"],
    )
    request = _object(
        {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": {"oneOf": tensors}, "minItems": 1},
            "outputs": {"type": "array", "items": requested},
        },
        required=["inputs"],
    )
    return {
        "summary": f"{model['name']}: infer (Open Inference Protocol)",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": request},
            },
        },
        "responses": {
            "200": {
                "description": "The output tensors (binary after a JSON header when the request asked so).",
                "headers": TIMING_HEADERS,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/InferResponse"}},
                    "application/octet-stream": {},
                },
            },
            **_errors("400", "401", "404", "413", "415", "422", "503", "504"),
        },
    }


def _column_schema(column: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of one input column's value in a V1 instance (null is a missing value)."""
    kind = column["type"]
    if kind == "numeric":
        schema: dict[str, Any] = {"type": "number", "nullable": True}
        lower, upper = column.get("bounds") or (None, None)
        if column.get("out_of_bounds") == "reject":
            if lower is not None:
                schema["minimum"] = lower
            if upper is not None:
                schema["maximum"] = upper
        return schema
    if kind == "categorical":
        categories = [str(c) for c in column.get("categories", [])]
        if column.get("unknown") == "error":
            return {"type": "string", "nullable": True, "enum": [*categories, None]}
        return {"type": "string", "nullable": True, "description": f"known: {', '.join(categories[:50])}"}
    return {"type": "string", "format": "date-time", "nullable": True}


def _tensor_schema(tensor: dict[str, Any], column: dict[str, Any], max_rows: int) -> dict[str, Any]:
    element = _column_schema(column)
    numeric = tensor["datatype"] != "BYTES"
    return _object(
        {
            "name": {"type": "string", "enum": [tensor["name"]]},
            "datatype": {
                "type": "string",
                "enum": ["FP64", "FP32", "INT64", "INT32"] if numeric else ["BYTES"],
            },
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0},
                "minItems": 1,
                "maxItems": 2,
            },
            "parameters": {"type": "object"},
            "data": {"type": "array", "items": element, "maxItems": max_rows},
        },
        required=["name", "datatype", "shape", "data"],
    )


def _prediction_schema(model: dict[str, Any]) -> dict[str, Any]:
    labels = model["labels"]
    if model["task"] == "regression":
        return {"type": "number"}
    if labels and all(isinstance(v, bool) for v in labels):
        return {"type": "boolean"}
    if labels and all(isinstance(v, int) for v in labels):
        return {"type": "integer"}
    if labels and all(isinstance(v, (int, float)) for v in labels):
        return {"type": "number"}
    return {"type": "string"}


def _v1_metadata_schema() -> dict[str, Any]:
    return _object(
        {
            "name": {"type": "string"},
            "ready": {"type": "boolean"},
            "version": {"type": "string"},
            "task": {"type": "string"},
            "labels": {"type": "array", "nullable": True, "items": {}},
            "inputs": {"type": "array", "items": {"type": "object"}},
        },
        required=["name", "ready", "version", "inputs"],
    )


def _shared_schemas() -> dict[str, Any]:
    tensor_metadata = _object(
        {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
        required=["name", "datatype", "shape"],
    )
    output = _object(
        {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array", "items": {}},
            "parameters": {"type": "object"},
        },
        required=["name", "datatype", "shape"],
    )
    detail = _object(
        {
            "row": {"type": "integer", "nullable": True},
            "field": {"type": "string", "nullable": True},
            "error": {"type": "string"},
        },
        required=["row", "field", "error"],
    )
    return {
        "Error": _object(
            {"error": {"type": "string"}, "details": {"type": "array", "items": detail}}, required=["error"]
        ),
        "ServerMetadata": _object(
            {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
            required=["name", "version", "extensions"],
        ),
        "ModelMetadata": _object(
            {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": tensor_metadata},
                "outputs": {"type": "array", "items": tensor_metadata},
            },
            required=["name", "platform", "inputs", "outputs"],
        ),
        "InferResponse": _object(
            {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": output},
            },
            required=["model_name", "outputs"],
        ),
    }


def _get(
    summary: str, schema: dict[str, Any], errors: tuple[str, ...] = (), secured: bool = True
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
            **_errors(*errors, *(("401",) if secured else ())),
        },
    }
    if not secured:
        operation["security"] = []
    return {"get": operation}


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        status: {"description": ERRORS[status], "content": {"application/json": {"schema": ERROR_REF}}}
        for status in statuses
    }


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema
