"""What every KIKI Serve application shares: the FastAPI app factory with exact-decimal JSON,
errors mapped to `{"error": {...}}` bodies, API-key auth, `/health`, request metrics, and the
per-replica runtime (settings, database pool, key cache).

The FastAPI app is an ordinary ASGI app: Serve hosts it through `@serve.ingress`, and the
benchmarks can host the very same app on plain uvicorn for comparison.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import asyncpg
import grpc
import ray
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from ray.util import metrics
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiki import __version__
from kiki.auth import ApiKeyCache, Tenant, authenticate, hash_api_key
from kiki.billing import metering
from kiki.clock import WallClock
from kiki.config import Settings, get_settings
from kiki.db.embedded import EmbeddedPostgres
from kiki.db.pool import create_pool, redact
from kiki.errors import (
    Conflict,
    FailedPrecondition,
    InvalidInput,
    KikiError,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from kiki.model_registry import LoadCheck
from kiki.money import Money
from kiki.shield.ratelimit import RateLimiter

logger = logging.getLogger("kiki.serve")

# Domain error → (HTTP status, gRPC status). Anything not listed is a 500 / INTERNAL.
ERROR_STATUS: dict[type[KikiError], tuple[int, grpc.StatusCode]] = {
    InvalidInput: (400, grpc.StatusCode.INVALID_ARGUMENT),
    Unauthenticated: (401, grpc.StatusCode.UNAUTHENTICATED),
    NotFound: (404, grpc.StatusCode.NOT_FOUND),
    Conflict: (409, grpc.StatusCode.ABORTED),
    FailedPrecondition: (409, grpc.StatusCode.FAILED_PRECONDITION),
    RateLimited: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Unavailable: (503, grpc.StatusCode.UNAVAILABLE),
}


def status_for(exc: KikiError) -> tuple[int, grpc.StatusCode]:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500, grpc.StatusCode.INTERNAL


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


class MoneyOut(BaseModel):
    """An amount at the public edge: exact decimal string, integer micros and currency."""

    amount: str = Field(description="exact decimal in major units")
    micros: int
    currency: str

    @classmethod
    def of(cls, micros: int, currency: str) -> MoneyOut:
        return cls(**Money(micros, currency).to_json())


class HealthReport(BaseModel):
    status: str
    service: str
    version: str
    checks: dict[str, str]


class WhoAmI(BaseModel):
    tenant_id: str
    tenant: str
    service: str


# A dependency check of /health: its named checks, each "ok" or "failed: <why>".
Probe = Callable[[], Awaitable[dict[str, str]]]


class ServiceRuntime:
    """Per-replica state: created once per process, the database pool opened on first use."""

    def __init__(self, service: str, settings: Settings | None = None) -> None:
        self.service = service
        self.settings = settings or get_settings()
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._keys = ApiKeyCache(self.settings.auth_cache_ttl_s)
        # Service-specific objects (clients, scorers) shared by the ingress class and the app.
        self.extras: dict[str, Any] = {}
        self._meters: dict[str, UsageMeter] = {}
        self.key_limits = RateLimiter(
            self.settings.api_rate_per_s, self.settings.api_burst, WallClock()
        )
        # What the app depends on besides the database (actors, models), by check name.
        self.probes: dict[str, Probe] = {}
        self.started = time.monotonic()

    @property
    def database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        # Embedded PostgreSQL, started by `kiki up` on this host.
        return EmbeddedPostgres(self.settings.pgdata, self.settings.pg_port).url

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await create_pool(
                        self.database_url,
                        min_size=self.settings.db_pool_min,
                        max_size=self.settings.db_pool_max,
                    )
        return self._pool

    async def tenant(self, api_key: str | None) -> Tenant:
        """The key's tenant; each key also draws on its own token bucket (429 when empty)."""
        digest = hash_api_key(api_key or "")  # once per request: cache and bucket share it
        tenant = self._keys.get(digest) if api_key else None
        if tenant is None:
            pool = await self.pool()
            async with pool.acquire() as conn:
                tenant = await authenticate(conn, api_key)
            self._keys.put(digest, tenant)
        wait = self.key_limits.check(digest)
        if wait > 0:
            raise RateLimited(
                f"too many requests for this API key; retry in {wait:.2f}s",
                retry_after_s=wait,
            )
        return tenant

    async def check_database(self) -> str:
        try:
            pool = await self.pool()
            async with pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1", timeout=2)
        except KikiError as exc:
            return f"failed: {exc.message}"
        except Exception as exc:
            return f"failed: {exc.__class__.__name__}: {exc} ({redact(self.database_url)})"
        return "ok"

    async def _probe(self, name: str, probe: Probe) -> dict[str, str]:
        timeout = self.settings.health_probe_timeout_s
        try:
            return await asyncio.wait_for(probe(), timeout)
        except TimeoutError:
            return {name: f"failed: no answer within {timeout:g} s"}
        except Exception as exc:
            return {name: f"failed: {getattr(exc, 'message', None) or repr(exc)}"}

    async def health(self) -> HealthReport:
        """The database and every registered probe, checked at once."""
        found = await asyncio.gather(
            self.check_database(), *(self._probe(n, p) for n, p in self.probes.items())
        )
        checks = {"database": found[0]}
        for more in found[1:]:
            checks.update(more)
        ok = all(v == "ok" for v in checks.values())
        return HealthReport(
            status="ok" if ok else "unavailable",
            service=self.service,
            version=__version__,
            checks=checks,
        )

    def watch_models(self, name: str, check: LoadCheck) -> None:
        """Probe, on /health, that every serving version of a model family loads here."""

        async def probe() -> dict[str, str]:
            pool = await self.pool()
            async with pool.acquire() as conn:
                return {name: await check.check(conn)}

        self.probes[name] = probe

    def meter(self, metric: str) -> UsageMeter:
        """The replica's meter of a billable metric (kiki.billing.metering.PLATFORM_METRICS)."""
        if metric not in self._meters:
            self._meters[metric] = UsageMeter(self, metric)
        return self._meters[metric]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class UsageMeter:
    """A replica's billable usage of one metric, per tenant, reported to Billing every
    `flush_s` in one idempotent write (kiki.billing.metering). A report that fails is retried
    with the same transaction ids, so it is counted once; counts not yet reported are lost
    if the replica dies, at most `flush_s` of them."""

    def __init__(self, runtime: ServiceRuntime, metric: str, flush_s: float = 5.0) -> None:
        self.runtime, self.metric, self.flush_s = runtime, metric, flush_s
        self.counts: Counter[UUID] = Counter()
        self._origin = uuid.uuid4().hex  # this replica's reports never collide with another's
        self._sequence = 0
        self._task: asyncio.Task | None = None

    def add(self, tenant_id: UUID, quantity: int) -> None:
        if quantity <= 0:
            return
        self.counts[tenant_id] += quantity
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._report_forever())

    async def _report_forever(self) -> None:
        pending: list[metering.Usage] = []
        while True:
            await asyncio.sleep(self.flush_s)
            if not pending and self.counts:
                self._sequence += 1
                counts, self.counts = self.counts, Counter()
                at = datetime.now(UTC)
                pending = [
                    metering.Usage(
                        tenant_id=tenant,
                        metric_code=self.metric,
                        quantity=n,
                        transaction_id=f"{self.metric}:{self._origin}:{self._sequence}:{tenant}",
                        at=at,
                    )
                    for tenant, n in counts.items()
                ]
            if not pending:
                continue
            try:
                pool = await self.runtime.pool()
                async with pool.acquire() as conn:
                    await metering.record_many(conn, pending)
                pending = []
            except Exception as exc:  # the next round retries the same report
                extra = {"metric": self.metric, "error": repr(exc)}
                logger.warning("usage report failed", extra=extra)


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
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) + " (see the API docs at <prefix>/docs)"


def runtime_of(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


async def require_tenant(
    request: Request,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key", description="your API key")] = None,
) -> Tenant:
    return await runtime_of(request).tenant(x_api_key)


CurrentTenant = Annotated[Tenant, Depends(require_tenant)]


_runtimes: dict[str, ServiceRuntime] = {}


def runtime_for(service: str) -> ServiceRuntime:
    """The process's one runtime for a service, shared by its HTTP routes and gRPC methods.

    Serve hosts the ingress class and the FastAPI app as separately deserialised objects, so
    state must be found by service name, not through the class."""
    if service not in _runtimes:
        _runtimes[service] = ServiceRuntime(service)
    return _runtimes[service]


StartupHook = Callable[[FastAPI, ServiceRuntime], None]


def create_service_api(
    service: str, title: str, description: str, on_startup: StartupHook | None = None
) -> FastAPI:
    """The FastAPI app of one service, with the routes every service has. `on_startup` runs
    once per process when the app starts (under Serve or plain uvicorn) to attach the
    service's own clients to `app.state`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if getattr(app.state, "runtime", None) is None:
            app.state.runtime = runtime_for(service)
        if on_startup is not None:
            on_startup(app, app.state.runtime)
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
            message = (
                f"no route {request.method} {request.url.path}; see the API docs at /{service}/docs"
            )
        return JSONResponse(error_body(code, message), status_code=exc.status_code)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse(
            error_body("internal", "internal error; the service log has the details"),
            status_code=500,
        )

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


class ServiceIngress:
    """Base of each app's ingress deployment: gives the replica its runtime.

    Subclasses set `service` and `api` and are decorated with `@serve.deployment` and
    `@serve.ingress(api)`; gRPC methods use `self.runtime`, HTTP routes `request.app.state`.
    """

    service: str
    api: FastAPI

    def __init__(self) -> None:
        self.runtime = runtime_for(self.service)

    async def check_health(self) -> None:
        """Serve's own health check of this replica: the probes of /health, so Serve replaces
        a replica that cannot reach what it depends on. A new replica is given
        `health_grace_s` first (its actors and pool may still be starting)."""
        report = await self.runtime.health()
        if report.status == "ok":
            return
        failing = {k: v for k, v in report.checks.items() if v != "ok"}
        if time.monotonic() - self.runtime.started < self.runtime.settings.health_grace_s:
            logger.warning("dependencies not ready yet", extra={"checks": failing})
            return
        raise RuntimeError(f"{self.service} cannot reach its dependencies: {failing}")
