"""The FastAPI app of a service: exact-decimal JSON, errors in one shape, request metrics,
`/health` and `whoami`. An ordinary ASGI app: Serve hosts it through `@serve.ingress`, and
the benchmarks and tests can host the very same app on uvicorn or in-process."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Coroutine
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_to_bytes

import ray
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from ray.util import metrics
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments._serve.deps import ANY_SCOPE, API_KEY, AnyKey, runtime_of
from deployments._serve.errors import error_body, status_for
from deployments._serve.runtime import ServiceRuntime, runtime_for
from deployments._serve.views import HealthReport, WhoAmI
from kiki import __version__
from kiki.config import get_settings
from kiki.errors import KikiError

logger = logging.getLogger("kiki.serve")


class _NotJSONNumber(ValueError):
    pass


def _refuse_constant(constant: str) -> Any:
    raise _NotJSONNumber(f"{constant} is not a JSON number; send a finite number or leave it out")


def parse_json(body: bytes) -> Any:
    """A request body as strict JSON (RFC 8259), numbers with a fraction or exponent as
    Decimal, so money never passes through float. What the standard refuses (bytes that are
    not UTF-8, NaN and Infinity), nesting past Python's recursion limit and integers past
    its 4,300-digit limit are JSONDecodeErrors, which FastAPI answers 422 with the reason."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = "not UTF-8; send the body encoded as UTF-8"
        raise json.JSONDecodeError(reason, "", exc.start) from None
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except json.JSONDecodeError:
        raise
    except _NotJSONNumber as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from None
    except RecursionError:
        reason = "arrays or objects nested too deeply; send a flatter body"
        raise json.JSONDecodeError(reason, text, 0) from None
    except ValueError:  # int() refuses integers past sys.get_int_max_str_digits()
        reason = "an integer has more than 4,300 digits; send a number within the field's range"
        raise json.JSONDecodeError(reason, text, 0) from None


class _DecimalJSONRequest(Request):
    """Parses the body with `parse_json`, so money in a request body never passes through
    float and malformed JSON is always a 422."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class DecimalJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def decimal_json_handler(request: Request) -> Response:
            return await handler(_DecimalJSONRequest(request.scope, request.receive))

        return decimal_json_handler


class _RequestMetrics:
    """Request count and latency per app, route template, method and status, via Ray's metrics
    agent (Prometheus). Created lazily: outside a Ray worker nothing is recorded."""

    def __init__(self) -> None:
        tags = ("app", "route", "method", "status")
        self.requests = metrics.Counter(
            "kiki_http_requests", description="HTTP requests served", tag_keys=tags
        )
        self.latency = metrics.Histogram(
            "kiki_http_request_latency_ms",
            description="HTTP request latency in milliseconds",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
            tag_keys=tags,
        )


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self._metrics: _RequestMetrics | None = None

    def _sink(self) -> _RequestMetrics | None:
        if self._metrics is None and ray.is_initialized():
            self._metrics = _RequestMetrics()
        return self._metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            sink = self._sink()
            if sink is not None:
                route = scope.get("route")
                tags = {
                    "app": self.service,
                    "route": getattr(route, "path", "unmatched"),
                    "method": scope.get("method", ""),
                    "status": str(status),
                }
                sink.requests.inc(1, tags=tags)
                sink.latency.observe((time.perf_counter() - started) * 1000, tags=tags)


class BodyTooLarge(StarletteHTTPException):
    """A request body past KIKI_MAX_BODY_BYTES; answered 413 in the error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is over {limit:,} bytes (KIKI_MAX_BODY_BYTES); send less per "
            "request, e.g. split a batch",
        )


def _path_problem(scope: Scope) -> str | None:
    """Why the request's path cannot name anything: percent-encoded bytes that are not UTF-8
    (decoded they would silently become U+FFFD) or a NUL, which no identifier holds
    (PostgreSQL text cannot)."""
    raw = scope.get("raw_path")
    try:
        path = unquote_to_bytes(raw).decode("utf-8") if raw else scope["path"]
    except UnicodeDecodeError:
        return "the path has percent-encoded bytes that are not UTF-8; encode it as UTF-8"
    return "the path has a NUL (%00); no identifier holds one" if "\x00" in path else None


class RequestLimitsMiddleware:
    """Refuses before routing what no route could take: a path that is not UTF-8 or holds a
    NUL (400), and a body over the replica's KIKI_MAX_BODY_BYTES (413): at once when
    Content-Length says so, else as soon as the streamed body passes it, so no replica ever
    reads an oversized body whole. The limit comes from the app's runtime (settings built in
    code apply), or the process's settings where the app is hosted without one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if problem := _path_problem(scope):
            response = JSONResponse(error_body("invalid_input", problem), status_code=400)
            await response(scope, receive, send)
            return
        runtime = getattr(scope["app"].state, "runtime", None)
        limit = (runtime.settings if runtime else get_settings()).max_body_bytes
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response = _error_response(BodyTooLarge(limit))
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)  # answered by the HTTPException handler
            return message

        await self.app(scope, limited_receive, send)


def _error_response(exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 413: "body_too_large"}.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return JSONResponse(error_body(code, message), status_code=exc.status_code)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    # A default made from another field is not made when that field is invalid: the
    # invalid field is the error to name.
    errors = [e for e in exc.errors() if e.get("type") != "default_factory_not_called"]
    for err in errors[:5]:
        if err.get("type") == "json_invalid":  # the reason is in ctx, the offset in loc
            offset = err["loc"][-1]
            at = f" at character {offset}" if isinstance(offset, int) and offset > 0 else ""
            parts.append(f"body: invalid JSON{at}: {err.get('ctx', {}).get('error', 'invalid')}")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) + " (see the API docs at <prefix>/docs)"


def handle_errors(api: FastAPI, where_to_look: str) -> None:
    """Every error answers `{"error": {"code", "message"}}`: domain errors with their status
    (and Retry-After), validation errors 422 naming the field, unknown routes 404 saying
    `where_to_look` (the docs), and anything unexpected 500 without its details (they go to
    the log)."""

    @api.exception_handler(KikiError)
    async def _kiki_error(request: Request, exc: KikiError) -> JSONResponse:
        status, _ = status_for(exc)
        headers = {}
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        if status >= 500:
            logger.warning("request failed", extra={"path": request.url.path, "error": exc.message})
        return JSONResponse(error_body(exc.code, exc.message), status_code=status, headers=headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("invalid_input", _validation_message(exc)), status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            route = f"{request.method} {request.url.path}"
            exc = StarletteHTTPException(404, f"no route {route}; {where_to_look}")
        return _error_response(exc)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse(
            error_body("internal", "internal error; the service log has the details"),
            status_code=500,
        )


def _openapi_with_alternatives(api: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, in which a route that takes any one of several scopes (`ANY_SCOPE`
    in its openapi_extra) lists each as an alternative security requirement."""
    if api.openapi_schema is None:
        schema = FastAPI.openapi(api)
        for item in schema["paths"].values():
            for operation in item.values():
                if alternatives := operation.pop(ANY_SCOPE, None):
                    operation["security"] = [{API_KEY.scheme_name: [s]} for s in alternatives]
    return api.openapi_schema


# Runs once per process when the app starts; what it returns is the app's typed context.
StartupHook = Callable[[FastAPI, ServiceRuntime], object]


def create_service_api(
    service: str, title: str, description: str, on_startup: StartupHook | None = None
) -> FastAPI:
    """The FastAPI app of one service, with the routes every service has. `on_startup` runs
    once per process when the app starts (under Serve or plain uvicorn) and makes the
    service's context (its clients and use cases), kept as `runtime.context`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if getattr(app.state, "runtime", None) is None:
            app.state.runtime = runtime_for(service)
        if on_startup is not None:
            context = on_startup(app, app.state.runtime)
            if context is not None:
                app.state.runtime.context = context
        yield
        await app.state.runtime.close()

    api = FastAPI(
        title=title,
        description=description,
        version=__version__,
        lifespan=lifespan,
        responses={
            401: {"description": "missing, unknown or revoked X-API-Key"},
        },
    )
    api.router.route_class = DecimalJSONRoute
    api.add_middleware(RequestLimitsMiddleware)
    api.add_middleware(MetricsMiddleware, service=service)  # outermost: counts the 413s too
    api.openapi = lambda: _openapi_with_alternatives(api)  # type: ignore[method-assign]

    handle_errors(api, f"see the API docs at /{service}/docs")

    @api.get(
        "/health",
        response_model=HealthReport,
        responses={503: {"model": HealthReport, "description": "a check failed"}},
        tags=["ops"],
    )
    async def health(request: Request) -> JSONResponse:
        """Liveness and dependencies; no API key needed. 503 names the failing check."""
        report = await runtime_of(request).health()
        return JSONResponse(report.model_dump(), status_code=200 if report.status == "ok" else 503)

    @api.get("/api/v1/whoami", response_model=WhoAmI, tags=["ops"])
    async def whoami(grant: AnyKey) -> WhoAmI:
        """The tenant your API key belongs to, and what the key may do."""
        return WhoAmI.of(grant, service)

    return api
