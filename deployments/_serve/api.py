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

import ray
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from ray.util import metrics
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments._serve.deps import CurrentTenant, runtime_of
from deployments._serve.errors import error_body, status_for
from deployments._serve.runtime import ServiceRuntime, runtime_for
from deployments._serve.views import HealthReport, WhoAmI
from kiki import __version__
from kiki.errors import KikiError

logger = logging.getLogger("kiki.serve")


class _DecimalJSONRequest(Request):
    """Parses JSON numbers as Decimal, so money in a request body never passes through float."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=Decimal)
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


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    # A default made from another field is not made when that field is invalid: the
    # invalid field is the error to name.
    errors = [e for e in exc.errors() if e.get("type") != "default_factory_not_called"]
    for err in errors[:5]:
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
        code = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; {where_to_look}"
        return JSONResponse(error_body(code, message), status_code=exc.status_code)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse(
            error_body("internal", "internal error; the service log has the details"),
            status_code=500,
        )


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
    api.add_middleware(MetricsMiddleware, service=service)

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
    async def whoami(tenant: CurrentTenant) -> WhoAmI:
        """The tenant your API key belongs to."""
        return WhoAmI(tenant_id=str(tenant.id), tenant=tenant.name, service=service)

    return api
