"""Per-replica state of an app: settings, its typed args and context, the database pool, the
API-key cache and rate limit, the health probes and the usage meters."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import cached_property, partial
from typing import TYPE_CHECKING, TypeVar

import asyncpg
import ray
from pydantic import BaseModel
from ray import serve
from ray.serve.exceptions import RayServeException
from ray.util import metrics

from actors.keyrates import key_rates
from deployments._serve.keyrates import ClusterKeyLimit
from deployments._serve.metering import UsageMeter
from deployments._serve.views import HealthReport
from kiki import __version__
from kiki.artifacts import ArtifactStore, Loadable
from kiki.auth import ApiKeyCache, Grant, authenticate, hash_api_key, session_grant
from kiki.clock import WallClock
from kiki.config import Settings, get_settings
from kiki.db.embedded import EmbeddedPostgres
from kiki.db.pool import create_pool, redact
from kiki.errors import KikiError, RateLimited
from kiki.gdpr import Suppressions
from kiki.model_registry import LoadCheck, ModelRegistry
from kiki.shield import RateLimiter

if TYPE_CHECKING:
    from deployments._serve.builder import AppArgs

log = logging.getLogger(__name__)

C = TypeVar("C")
A = TypeVar("A", bound="AppArgs")

# A dependency check of /health: its named checks, each "ok" or "failed: <why>".
Probe = Callable[[], Awaitable[dict[str, str]]]


class ServiceRuntime:
    """Per-replica state: created once per process, the database pool opened on first use."""

    def __init__(
        self, service: str, settings: Settings | None = None, args: BaseModel | None = None
    ) -> None:
        self.service = service
        self.settings = settings or get_settings()
        # The app's own options, validated by its builder (serve_config.yaml `args:`).
        self.args = args
        self._args_resolved = False
        # The app's clients and use cases, made once per replica by its startup hook.
        self.context: object | None = None
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._keys = ApiKeyCache(self.settings.auth_cache_ttl_s)
        self._meters: dict[str, UsageMeter] = {}
        # Each key's rate limit: one bucket for the whole cluster in the key-rate actor, the
        # process's own bucket outside a Serve replica or while that actor cannot answer.
        self.key_limits = RateLimiter(
            self.settings.api_rate_per_s, self.settings.api_burst, WallClock()
        )
        self._cluster_limit: ClusterKeyLimit | None = None
        # What the app depends on besides the database (actors, models), by check name.
        self.probes: dict[str, Probe] = {}
        self.started = time.monotonic()
        self._background: set[asyncio.Task[None]] = set()

    @cached_property
    def artifacts(self) -> ArtifactStore:
        """Where this app reads and writes models and files (KIKI_ARTIFACTS_URL)."""
        return ArtifactStore.from_settings(self.settings)

    @cached_property
    def suppressions(self) -> Suppressions:
        """Who was erased (kiki.gdpr), under the key derived from the vault's: every app
        that stores or contacts customers asks it first."""
        return Suppressions.from_settings(self.settings)

    def args_as(self, kind: type[A]) -> A:
        """The app's options in force: those its builder was given (serve_config.yaml
        `args:`), the rest from this replica's KIKI_* settings (all of them when hosted
        outside Serve: tests, benchmarks)."""
        if self.args is not None and not isinstance(self.args, kind):
            raise RuntimeError(f"{self.service} was built with {type(self.args).__name__}")
        if not self._args_resolved:
            self.args = kind.resolve(self.args, self.settings)
            self._args_resolved = True
        return self.args  # type: ignore[return-value]

    def context_as(self, kind: type[C]) -> C:
        if not isinstance(self.context, kind):
            raise RuntimeError(f"{self.service} has no {kind.__name__} (app not started?)")
        return self.context

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

    async def grant(self, api_key: str | None, session: str | None = None) -> Grant:
        """What the key grants or, with no key, the console session's key; each key draws on
        its own token bucket (429 when empty), shared by its console sessions, so opening
        sessions gets a key no more requests. A grant is cached for `auth_cache_ttl_s`, so a
        revoked key or a closed session stops working within it."""
        by_session = not api_key and bool(session)
        secret = session if by_session else api_key
        digest = hash_api_key(secret or "")  # once per request
        grant = self._keys.get(digest) if secret else None
        if grant is None:
            pool = await self.pool()
            async with pool.acquire() as conn:
                if by_session:
                    grant = await session_grant(conn, session or "")
                else:
                    grant = await authenticate(conn, api_key)
            self._keys.put(digest, grant)
        grant.check_live(datetime.now(UTC))
        wait = await self._rate_check(str(grant.key_id))
        if wait > 0:
            raise RateLimited(
                f"too many requests for this API key; retry in {wait:.2f}s",
                retry_after_s=wait,
            )
        return grant

    async def _rate_check(self, key_hash: str) -> float:
        if not _in_serve_replica():
            return self.key_limits.check(key_hash)
        if self._cluster_limit is None:
            s = self.settings
            self._cluster_limit = ClusterKeyLimit(
                partial(key_rates, s.api_rate_per_s, s.api_burst),
                self.key_limits,
                s.actor_call_timeout_s,
            )
        return await self._cluster_limit.check(key_hash)

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
        if ray.is_initialized():  # Serve checks every replica's health every few seconds
            gauge = _dependency_gauge()
            for name, result in checks.items():
                gauge.set(1.0 if result == "ok" else 0.0, tags={"app": self.service, "check": name})
        ok = all(v == "ok" for v in checks.values())
        return HealthReport(
            status="ok" if ok else "unavailable",
            service=self.service,
            version=__version__,
            checks=checks,
        )

    def watch_models(self, registry: ModelRegistry, kind: type[Loadable]) -> None:
        """Probe, on /health, that every serving version of a model family loads here."""
        name = registry.table
        check = LoadCheck(registry, partial(self.artifacts.load, kind=kind))

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

    def in_background(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Start work no request waits on (warming a cache): a failure is logged, not raised,
        and the work is cancelled when the app stops."""

        async def logged() -> None:
            try:
                await work()
            except Exception:
                log.exception("%s: %s failed", self.service, name)

        task = asyncio.get_running_loop().create_task(logged(), name=f"{self.service}: {name}")
        self._background.add(task)  # a reference, or the loop may drop the task unfinished
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _in_serve_replica() -> bool:
    """Whether this process is a Serve replica (the app hosted on plain uvicorn or in-process,
    as the benchmarks and unit tests do, limits per process even where Ray is running)."""
    if not ray.is_initialized():
        return False
    try:
        serve.get_replica_context()
    except RayServeException:
        return False
    return True


_runtimes: dict[str, ServiceRuntime] = {}


def runtime_for(service: str, args: BaseModel | None = None) -> ServiceRuntime:
    """The process's one runtime for a service, shared by its HTTP routes and gRPC methods.

    Serve hosts the ingress class and the FastAPI app as separately deserialised objects, so
    state must be found by service name, not through the class. The ingress deployment,
    constructed first, hands over the app's args."""
    if service not in _runtimes:
        _runtimes[service] = ServiceRuntime(service)
    if args is not None:
        _runtimes[service].args, _runtimes[service]._args_resolved = args, False
    return _runtimes[service]


@functools.cache
def _dependency_gauge() -> metrics.Gauge:
    """Each health check's last result, per app: PostgreSQL reachable or not (`database`),
    and the actors and models the app depends on."""
    return metrics.Gauge(
        "kiki_dependency_up",
        "1 when the app's last health check of the dependency passed, 0 when it failed",
        tag_keys=("app", "check"),
    )
