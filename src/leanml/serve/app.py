"""The ASGI app: KServe V1, Open Inference Protocol (V2) REST, drift and Prometheus metrics.

Every answer to bad input is a 4xx with a JSON body ``{"error": ..., "details": [...]}``: malformed JSON
400, missing or wrong API key 401, unknown model 404, body or row count over the limit 413, invalid
values 422 (one entry per row and field); a full queue gives 503 with ``Retry-After``, a missed deadline
504. Prediction responses carry ``X-Model-Version`` and the time spent queued, preprocessing and in the
model (``X-Queue-Ms``, ``X-Preprocess-Ms``, ``X-Model-Ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from leanml._version import __version__
from leanml.bundle.artifact import input_schema
from leanml.config import ServeConfig
from leanml.serve import protocol
from leanml.serve.batcher import RETRY_AFTER_S
from leanml.serve.engine import Answer, Job
from leanml.serve.metrics import ServerMetrics
from leanml.serve.registry import ModelSlot, Registry
from leanml.serve.validation import RequestError, check_columns, instances_to_columns

OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")


class JSONResponse(Response):
    """JSON via orjson (several times faster than the standard library on prediction payloads)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def create_app(reference: str, config: ServeConfig | None = None) -> Starlette:
    """Load every model behind ``reference`` (raising on a bad bundle) and return the app serving them."""
    config = config or ServeConfig()
    metrics = ServerMetrics()
    registry = Registry(reference, config, metrics)
    registry.load()
    api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
    if config.api_key_env and not api_key:
        raise RequestError(500, f"the API key variable {config.api_key_env} is not set")
    server = Server(registry, config, metrics, api_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await registry.start()
        yield
        await registry.stop()

    routes = [
        Route("/v1/models/{target}", server.v1, methods=["GET", "POST"]),
        Route("/v1/models/{name}/drift", server.drift, methods=["GET"]),
        Route("/v2", server.v2_server, methods=["GET"]),
        Route("/v2/health/live", server.live, methods=["GET"]),
        Route("/v2/health/ready", server.ready, methods=["GET"]),
        Route("/v2/models/{name}", server.v2_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", server.v2_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", server.v2_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", server.v2_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", server.v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", server.v2_infer, methods=["POST"]),
        Route("/metrics", server.prometheus, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, RequestError: _request_error},
    )
    app.state.registry = registry
    app.state.metrics = metrics
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return _error(exc)


def _error(exc: RequestError) -> Response:
    body: dict[str, Any] = {"error": exc.message}
    if exc.details:
        body["details"] = exc.details
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 503 else None
    return JSONResponse(body, status_code=exc.status, headers=headers)


Handler = Callable[[Request], Awaitable[Response]]


class Server:
    """The request handlers, sharing the registry, config and metrics."""

    def __init__(
        self, registry: Registry, config: ServeConfig, metrics: ServerMetrics, api_key: str | None
    ) -> None:
        self.registry = registry
        self.config = config
        self.metrics = metrics
        self.api_key = api_key

    # ------------------------------------------------------------------ helpers
    def _authorize(self, request: Request) -> None:
        if self.api_key is None or request.url.path in OPEN_PATHS:
            return
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix(
            "Bearer "
        )
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise RequestError(401, "missing or wrong API key (send it as X-API-Key)")

    def _slot(self, name: str, version: str | None = None) -> ModelSlot:
        slot = self.registry.slots.get(name)
        if slot is None:
            known = ", ".join(sorted(self.registry.slots)) or "none"
            raise RequestError(404, f"no model '{name}' (served: {known})")
        if version is not None and version != slot.served.version:
            raise RequestError(404, f"model '{name}' serves version {slot.served.version}, not {version}")
        return slot

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"body of {declared} bytes is over the limit of {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _run(self, slot: ModelSlot, columns: dict[str, list[Any]], rows: int) -> Answer:
        loop = asyncio.get_running_loop()
        timeout = self.config.timeout_ms / 1000.0
        job = Job(
            columns=columns, rows=rows, future=loop.create_future(), deadline=time.perf_counter() + timeout
        )
        slot.batcher.submit(job)
        try:
            return await asyncio.wait_for(job.future, timeout)
        except TimeoutError:
            raise RequestError(504, f"no answer within {self.config.timeout_ms:g} ms") from None

    async def _measured(self, model: str, endpoint: str, work: Callable[[], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        try:
            response = await work()
        except RequestError as exc:
            response = _error(exc)
        self.metrics.requests.labels(model=model, endpoint=endpoint, status=str(response.status_code)).inc()
        self.metrics.latency.labels(model=model, endpoint=endpoint).observe(time.perf_counter() - started)
        return response

    @staticmethod
    async def _all_problems(
        slot: ModelSlot, columns: dict[str, list[Any]], rows: int, errors: list[dict[str, Any]], message: str
    ) -> RequestError:
        """A 422 listing the structural problems and, with them, the value problems of the other fields."""
        reported = {(e["row"], e["field"]) for e in errors}
        found = await asyncio.to_thread(slot.served.check, columns, rows)
        errors = errors + [e for e in found if (e["row"], e["field"]) not in reported]
        errors.sort(key=lambda e: (-1 if e["row"] is None else e["row"], e["field"] or ""))
        return RequestError(422, message, errors)

    @staticmethod
    def _timing_headers(answer: Answer) -> dict[str, str]:
        headers = {
            f"X-{key.capitalize()}-Ms": f"{seconds * 1000:.3f}" for key, seconds in answer.timings.items()
        }
        headers["X-Model-Version"] = answer.version
        return headers

    # ------------------------------------------------------------------ V1
    async def v1(self, request: Request) -> Response:
        """``GET /v1/models/{name}`` (metadata) and ``POST /v1/models/{name}:predict``."""
        self._authorize(request)
        target = request.path_params["target"]
        if request.method == "GET":
            return JSONResponse(self._v1_metadata(self._slot(target)))
        name, _, verb = target.rpartition(":")
        if verb != "predict" or not name:
            raise RequestError(404, f"unknown verb in '{target}'; use /v1/models/NAME:predict")
        return await self._measured(name, "v1", lambda: self._v1_predict(request, name))

    def _v1_metadata(self, slot: ModelSlot) -> dict[str, Any]:
        bundle = slot.served.bundle
        return {
            "name": slot.source.name,
            "ready": True,
            "version": bundle.version,
            "task": bundle.task,
            "labels": bundle.labels,
            "inputs": input_schema(bundle.state),
        }

    async def _v1_predict(self, request: Request, name: str) -> Response:
        slot = self._slot(name)
        payload = protocol.parse_json(await self._body(request))
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError(
                422,
                "the body must be an object with 'instances'",
                [{"row": None, "field": "instances", "error": "required"}],
            )
        columns, rows, errors = instances_to_columns(
            payload["instances"], slot.served.bundle.state, self.config.max_rows
        )
        if errors:
            raise await self._all_problems(slot, columns, rows, errors, "invalid instances")
        answer = await self._run(slot, columns, rows)
        body = protocol.v1_response(answer.predictions, answer.probabilities, answer.version, answer.flags)
        return JSONResponse(body, headers=self._timing_headers(answer))

    async def drift(self, request: Request) -> Response:
        """``GET /v1/models/{name}/drift``: PSI per input column against the training distribution."""
        self._authorize(request)
        slot = self._slot(request.path_params["name"])
        monitor = slot.served.drift
        if monitor is None:
            raise RequestError(404, f"model '{slot.source.name}' has no training distribution for drift")
        return JSONResponse({"model": slot.source.name, "version": slot.served.version, **monitor.report()})

    # ------------------------------------------------------------------ V2
    async def v2_server(self, request: Request) -> Response:
        """``GET /v2``: server metadata."""
        self._authorize(request)
        return JSONResponse({"name": "leanml", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(self, request: Request) -> Response:
        """``GET /v2/health/live``."""
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        """``GET /v2/health/ready``: every model loaded."""
        return JSONResponse({"ready": bool(self.registry.slots)})

    async def v2_ready(self, request: Request) -> Response:
        """``GET /v2/models/{name}[/versions/{version}]/ready``."""
        self._authorize(request)
        self._slot(request.path_params["name"], request.path_params.get("version"))
        return JSONResponse({"ready": True})

    async def v2_metadata(self, request: Request) -> Response:
        """``GET /v2/models/{name}[/versions/{version}]``."""
        self._authorize(request)
        slot = self._slot(request.path_params["name"], request.path_params.get("version"))
        bundle = slot.served.bundle
        inputs, outputs = protocol.v2_tensor_metadata(bundle.state, bundle.labels, bundle.task)
        return JSONResponse(
            {
                "name": slot.source.name,
                "versions": [bundle.version],
                "platform": "leanml_onnx",
                "inputs": inputs,
                "outputs": outputs,
            }
        )

    async def v2_infer(self, request: Request) -> Response:
        """``POST /v2/models/{name}[/versions/{version}]/infer``."""
        self._authorize(request)
        name = request.path_params["name"]
        return await self._measured(name, "v2", lambda: self._v2_infer(request, name))

    async def _v2_infer(self, request: Request, name: str) -> Response:
        slot = self._slot(name, request.path_params.get("version"))
        body = await self._body(request)
        payload, columns, rows = protocol.parse_v2(body, request.headers.get(protocol.HEADER_LENGTH.lower()))
        state = slot.served.bundle.state
        errors = check_columns(columns, rows, state, self.config.max_rows)
        if errors:
            raise await self._all_problems(slot, columns, rows, errors, "invalid input tensors")
        answer = await self._run(slot, {c.name: columns[c.name] for c in state.columns}, rows)
        bundle = slot.served.bundle
        content, headers = protocol.v2_response(
            name,
            answer.version,
            payload,
            answer.predictions,
            answer.probabilities,
            bundle.labels,
            bundle.task,
        )
        headers.update(self._timing_headers(answer))
        media = "application/octet-stream" if protocol.HEADER_LENGTH in headers else "application/json"
        return Response(content, media_type=media, headers=headers)

    # ------------------------------------------------------------------ metrics
    async def prometheus(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text, with the drift PSI refreshed."""
        self._authorize(request)
        for name, slot in self.registry.slots.items():
            if slot.served.drift is not None:
                for column, entry in slot.served.drift.report()["columns"].items():
                    self.metrics.drift.labels(model=name, column=column).set(entry["psi"])
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")
