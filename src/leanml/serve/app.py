"""The ASGI app: KServe V1, Open Inference Protocol (V2) REST, drift, Prometheus metrics and OpenAPI.

Every answer to bad input is a 4xx with a JSON body ``{"error": ..., "details": [...]}``: malformed JSON
or text that is not UTF-8 400, missing or wrong API key 401, unknown model 404, body or row count over the
limit 413, a body that is not JSON (``Content-Type``) 415, invalid values 422 (one entry per row and
field); a full queue gives 503 with ``Retry-After``, a missed deadline 504. Two middlewares wrap the
router: :class:`ApiKeyGuard` (the optional key) and :class:`ErrorGuard` (any fault left in a handler
becomes a logged, counted JSON 500; a client that disconnects mid-request ends it quietly). Prediction
responses carry ``X-Model-Version`` and the time spent queued, preprocessing and in the model
(``X-Queue-Ms``, ``X-Preprocess-Ms``, ``X-Model-Ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leanml._version import __version__
from leanml.bundle.artifact import input_schema
from leanml.config import ServeConfig
from leanml.errors import ConfigError
from leanml.serve import protocol
from leanml.serve.batcher import RETRY_AFTER_S
from leanml.serve.engine import Answer, Job
from leanml.serve.metrics import UNKNOWN_MODEL, ServerMetrics
from leanml.serve.openapi import openapi_document
from leanml.serve.registry import ModelSlot, Registry
from leanml.serve.validation import RequestError, check_columns, instances_to_columns

OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
JSON_TYPES = ("application/json", "text/json")
BINARY_TYPE = "application/octet-stream"
"""The V2 binary tensor extension's body (a JSON header, then raw tensors)."""

log = logging.getLogger("leanml.serve")


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
    api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
    if config.api_key_env and not api_key:
        raise ConfigError(
            f"api_key_env: the environment variable {config.api_key_env} is not set or empty "
            f"(set it to the API key, or leave out --api-key-env)"
        )
    registry.load()
    server = Server(registry, config, metrics)
    predict = Endpoint(server.predict)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await registry.start()
        # What is loaded by now lives as long as the server: out of the collector's sight, a full
        # collection no longer walks it (each one cost milliseconds of every request's latency under load).
        gc.collect()
        gc.freeze()
        yield
        await registry.stop()

    routes = [
        Route("/v1/models", server.v1_models, methods=["GET"]),
        Route("/v1/models/{target}", server.v1_metadata, methods=["GET"]),
        Route("/v1/models/{target}", predict, methods=["POST"]),
        Route("/v1/models/{name}/drift", server.drift, methods=["GET"]),
        Route("/v2", server.v2_server, methods=["GET"]),
        Route("/v2/", server.v2_server, methods=["GET"]),
        Route("/v2/health/live", server.live, methods=["GET"]),
        Route("/v2/health/ready", server.ready, methods=["GET"]),
        Route("/v2/models/{name}", server.v2_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", server.v2_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", server.v2_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", server.v2_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", predict, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", predict, methods=["POST"]),
        Route("/metrics", server.prometheus, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
    ]
    app = ServingApp(
        ErrorGuard(ApiKeyGuard(predict, api_key), metrics),
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(ErrorGuard, metrics=metrics), Middleware(ApiKeyGuard, api_key=api_key)],
        exception_handlers={HTTPException: _http_error, RequestError: _request_error},
    )
    app.state.registry = registry
    app.state.metrics = metrics
    return app


PREDICTION_PATH = re.compile(
    r"/v1/models/(?P<target>[^/]+)|/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer"
)
"""The two prediction endpoints (the same paths as their routes, whose ``{param}`` match ``[^/]+``)."""


class ServingApp(Starlette):
    """Starlette, with a short way in for predictions.

    A prediction request (``POST`` to V1 ``:predict`` or V2 ``infer``) goes straight to ``predict`` — the
    same endpoint its routes name, wrapped in the same :class:`ErrorGuard` and :class:`ApiKeyGuard` —
    without Starlette's outer error middleware, exception middleware and route matching, which cost more
    per request than the model. Everything else takes the routes.
    """

    def __init__(self, predict: ASGIApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.predict = predict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = PREDICTION_PATH.fullmatch(scope["path"])
            if match is not None:
                scope["app"] = self
                scope["path_params"] = {k: v for k, v in match.groupdict().items() if v is not None}
                await self.predict(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class Endpoint:
    """A plain ASGI endpoint as a route's app (Starlette takes a bound method for a request handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


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


class ErrorGuard:
    """Any exception a handler lets through becomes a JSON 500 (logged, counted in
    ``leanml_internal_errors_total``); a client that disconnects mid-request ends it without a log."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except ClientDisconnect:
            log.debug("%s %s: the client disconnected mid-request", scope["method"], scope["path"])
        except Exception as exc:
            self.metrics.internal_errors.inc()
            log.error("%s %s: internal error", scope["method"], scope["path"][:200], exc_info=exc)
            if not started:
                response = JSONResponse({"error": f"internal server error ({type(exc).__name__})"}, 500)
                await response(scope, receive, send)


class ApiKeyGuard:
    """With an API key set, every request but the health checks must send it, as ``X-API-Key: KEY`` or
    ``Authorization: Bearer KEY`` (compared in constant time); else 401."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.api_key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key")
        if given is None:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else b""
        if hmac.compare_digest(given, self.api_key):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"error": "missing or wrong API key (send it as X-API-Key: KEY or Authorization: Bearer KEY)"},
            401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


Handler = Callable[[Request], Awaitable[Response]]


class Server:
    """The request handlers, sharing the registry, config and metrics."""

    def __init__(self, registry: Registry, config: ServeConfig, metrics: ServerMetrics) -> None:
        self.registry = registry
        self.config = config
        self.metrics = metrics
        # Prometheus children by label values, looked up once: labels() per request showed in profiles.
        # The values come from loaded models and a fixed set of endpoints and statuses, so this is bounded.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def _count(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        counter = self._counters.get((model, endpoint, status))
        if counter is None:
            counter = self.metrics.requests.labels(model=model, endpoint=endpoint, status=str(status))
            self._counters[(model, endpoint, status)] = counter
        timer = self._timers.get((model, endpoint))
        if timer is None:
            timer = self.metrics.latency.labels(model=model, endpoint=endpoint)
            self._timers[(model, endpoint)] = timer
        counter.inc()
        timer.observe(seconds)

    # ------------------------------------------------------------------ helpers
    def _slot(self, name: str, version: str | None = None) -> ModelSlot:
        slot = self.registry.slots.get(name)
        if slot is None:
            known = ", ".join(sorted(self.registry.slots)) or "none"
            raise RequestError(404, f"no model '{name}' (served: {known})")
        if version is not None and version != slot.served.version:
            raise RequestError(404, f"model '{name}' serves version {slot.served.version}, not {version}")
        return slot

    async def _body(self, headers: dict[bytes, bytes], receive: Receive, *media: str) -> bytes:
        """The request body, of one of the ``media`` types or JSON (415 otherwise), within the size limit."""
        declared_type = headers.get(b"content-type")
        if declared_type is not None:
            text = declared_type.decode("latin-1")
            kind = text.partition(";")[0].strip().lower()
            if kind not in (*JSON_TYPES, *media) and not kind.endswith("+json"):
                accepted = " or ".join(("application/json", *media))
                raise RequestError(415, f"Content-Type {text[:60]!r} is not supported; send {accepted}")
        limit = self.config.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"body of {declared.decode()} bytes is over the limit of {limit}")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _run(self, slot: ModelSlot, columns: dict[str, list[Any]], rows: int) -> Answer:
        loop = asyncio.get_running_loop()
        timeout = self.config.timeout_ms / 1000.0
        job = Job(
            columns=columns, rows=rows, future=loop.create_future(), deadline=time.perf_counter() + timeout
        )
        slot.batcher.submit(job)
        # One timer handle per request instead of wait_for's extra task and future (visible in profiles).
        expiry = loop.call_later(timeout, _expire, job.future, self.config.timeout_ms)
        try:
            return await job.future
        finally:
            expiry.cancel()

    async def _measured(self, name: str, endpoint: str, work: Callable[[], Awaitable[Response]]) -> Response:
        """Run a prediction handler, counting and timing it under the model's name (when it is served)."""
        model = name if name in self.registry.slots else UNKNOWN_MODEL
        started = time.perf_counter()

        def count(status: int) -> None:
            self._count(model, endpoint, status, time.perf_counter() - started)

        try:
            response = await work()
        except RequestError as exc:
            response = _error(exc)
        except ClientDisconnect:  # nobody to answer: ErrorGuard ends the request quietly
            raise
        except Exception:  # answered 500 by ErrorGuard; counted here under its model too
            count(500)
            raise
        count(response.status_code)
        if response.status_code == 500:  # a fault reported as a value (e.g. by the model runtime)
            self.metrics.internal_errors.inc()
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

    # ------------------------------------------------------------------ predictions
    async def predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/models/{name}:predict`` and ``POST /v2/models/{name}[/versions/{version}]/infer``.

        A plain ASGI endpoint (no Starlette ``Request``): :class:`ServingApp` calls it without routing.
        """
        params = scope["path_params"]
        headers = dict(scope["headers"])
        if "target" in params:
            name, _, verb = params["target"].rpartition(":")
            if verb != "predict" or not name:
                response = _error(
                    RequestError(404, f"unknown verb in '{params['target']}'; use /v1/models/NAME:predict")
                )
            else:
                response = await self._measured(name, "v1", lambda: self._v1_predict(headers, receive, name))
        else:
            name, version = params["name"], params.get("version")
            response = await self._measured(
                name, "v2", lambda: self._v2_infer(headers, receive, name, version)
            )
        await response(scope, receive, send)

    # ------------------------------------------------------------------ V1
    async def v1_models(self, request: Request) -> Response:
        """``GET /v1/models``: the names of the served models (KServe V1's model list)."""
        return JSONResponse({"models": sorted(self.registry.slots)})

    async def v1_metadata(self, request: Request) -> Response:
        """``GET /v1/models/{name}``."""
        return JSONResponse(self._v1_metadata(self._slot(request.path_params["target"])))

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

    async def _v1_predict(self, headers: dict[bytes, bytes], receive: Receive, name: str) -> Response:
        slot = self._slot(name)
        payload = protocol.parse_json(await self._body(headers, receive))
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
        slot = self._slot(request.path_params["name"])
        monitor = slot.served.drift
        if monitor is None:
            raise RequestError(404, f"model '{slot.source.name}' has no training distribution for drift")
        return JSONResponse({"model": slot.source.name, "version": slot.served.version, **monitor.report()})

    # ------------------------------------------------------------------ V2
    async def v2_server(self, request: Request) -> Response:
        """``GET /v2``: server metadata."""
        return JSONResponse({"name": "leanml", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(self, request: Request) -> Response:
        """``GET /v2/health/live``."""
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        """``GET /v2/health/ready``: every model loaded."""
        return JSONResponse({"ready": bool(self.registry.slots)})

    async def v2_ready(self, request: Request) -> Response:
        """``GET /v2/models/{name}[/versions/{version}]/ready``."""
        slot = self._slot(request.path_params["name"], request.path_params.get("version"))
        return JSONResponse({"name": slot.source.name, "ready": True})

    async def v2_metadata(self, request: Request) -> Response:
        """``GET /v2/models/{name}[/versions/{version}]``."""
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

    async def _v2_infer(
        self, headers: dict[bytes, bytes], receive: Receive, name: str, version: str | None
    ) -> Response:
        slot = self._slot(name, version)
        body = await self._body(headers, receive, BINARY_TYPE)
        length = headers.get(protocol.HEADER_LENGTH.lower().encode())
        infer = protocol.parse_v2(body, None if length is None else length.decode("latin-1"))
        bundle = slot.served.bundle
        _, outputs = protocol.v2_tensor_metadata(bundle.state, bundle.labels, bundle.task)
        protocol.check_outputs(infer, [output["name"] for output in outputs])
        columns, rows = infer.columns, infer.rows
        errors = check_columns(columns, rows, bundle.state, self.config.max_rows)
        if errors:
            raise await self._all_problems(slot, columns, rows, errors, "invalid input tensors")
        answer = await self._run(slot, {c.name: columns[c.name] for c in bundle.state.columns}, rows)
        content, answer_headers = protocol.v2_response(
            slot.source.name,
            answer.version,
            infer,
            answer.predictions,
            answer.probabilities,
            bundle.labels,
            bundle.task,
        )
        answer_headers.update(self._timing_headers(answer))
        media = BINARY_TYPE if protocol.HEADER_LENGTH in answer_headers else "application/json"
        return Response(content, media_type=media, headers=answer_headers)

    # ------------------------------------------------------------------ metrics and schema
    async def prometheus(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text, with the drift PSI refreshed (rendered off the event loop)."""
        return Response(await asyncio.to_thread(self._render_metrics), media_type="text/plain; version=0.0.4")

    def _render_metrics(self) -> bytes:
        for name, slot in list(self.registry.slots.items()):
            if slot.served.drift is not None:
                for column, entry in slot.served.drift.report()["columns"].items():
                    self.metrics.drift.labels(model=name, column=column).set(entry["psi"])
        return self.metrics.render()

    async def openapi(self, request: Request) -> Response:
        """``GET /openapi.json``: OpenAPI 3 of V1 and V2 for each served model, with its real inputs."""
        return JSONResponse(
            openapi_document(
                self._models(), self.config.max_rows, api_key=self.config.api_key_env is not None
            )
        )

    def _models(self) -> list[dict[str, Any]]:
        """What :func:`openapi_document` needs of each served model."""
        models = []
        for name, slot in self.registry.slots.items():
            bundle = slot.served.bundle
            inputs, outputs = protocol.v2_tensor_metadata(bundle.state, bundle.labels, bundle.task)
            models.append(
                {
                    "name": name,
                    "version": bundle.version,
                    "task": bundle.task,
                    "labels": bundle.labels,
                    "inputs": input_schema(bundle.state),
                    "tensors": inputs,
                    "outputs": outputs,
                }
            )
        return models


def _expire(future: asyncio.Future[Any], timeout_ms: float) -> None:
    if not future.done():
        future.set_exception(RequestError(504, f"no answer within {timeout_ms:g} ms"))
