"""Model versions per tenant in PostgreSQL, shared by SyncValue (LTV) and SyncEngage (churn).

One version is `production`; where the registry allows it, at most one `candidate` serves a
fixed share of customers (an A/B test). Promoting to 100 % retires the production version,
which `rollback` brings back. Version numbers are dense per tenant, serialised by an
advisory lock so concurrent registrations never collide.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from kiki.errors import Conflict, InvalidInput, NotFound


class ModelRecord(BaseModel):
    version: int
    status: str
    traffic_percent: int
    metrics: dict[str, Any]
    feature_schema: list[str]
    config: dict[str, Any]
    calibration_end: date
    horizon_days: int
    data_window: dict[str, Any]
    artifact_url: str
    reference: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None


_COLUMNS = """version, status, traffic_percent, metrics, feature_schema, config, calibration_end,
    horizon_days, data_window, artifact_url, reference, created_at, promoted_at"""
_JSON = ("metrics", "feature_schema", "config", "data_window", "reference")


def _json(value: Any) -> str:
    """JSON that PostgreSQL accepts: a metric that came out infinite or NaN (a decile with no
    spend divides by zero) is stored as null, which JSON can say, instead of Infinity."""

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {k: finite(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [finite(v) for v in item]
        return item

    return json.dumps(finite(value), allow_nan=False)


def _record(row: asyncpg.Record) -> ModelRecord:
    data = dict(row)
    for key in _JSON:
        data[key] = json.loads(data[key])
    return ModelRecord(**data)


@dataclass(frozen=True)
class ModelRegistry:
    """The registry over one table (`ltv_models`, `churn_models`: same columns)."""

    table: str
    noun: str  # "LTV model", in messages
    list_command: str  # the CLI that lists versions, in messages
    candidates: bool  # may a version serve part of the traffic beside production?

    async def register(
        self,
        conn: asyncpg.Connection,
        tenant_id: UUID,
        *,
        metrics: dict[str, Any],
        feature_schema: list[str],
        config: dict[str, Any],
        calibration_end: date,
        horizon_days: int,
        data_window: dict[str, Any],
        artifact_url: str,
        reference: dict[str, Any] | None = None,
    ) -> ModelRecord:
        """Record a trained model as the tenant's next version (status `registered`)."""
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1 || ':' || $2::text))",
                self.table,
                str(tenant_id),
            )
            row = await conn.fetchrow(
                f"""INSERT INTO {self.table} (tenant_id, version, metrics, feature_schema,
                        config, calibration_end, horizon_days, data_window, artifact_url,
                        reference)
                    SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9
                    FROM {self.table} WHERE tenant_id = $1
                    RETURNING {_COLUMNS}""",
                tenant_id,
                _json(metrics),
                _json(feature_schema),
                _json(config),
                calibration_end,
                horizon_days,
                _json(data_window),
                artifact_url,
                _json(reference or {}),
            )
        return _record(row)

    async def list_models(self, conn: asyncpg.Connection, tenant_id: UUID) -> list[ModelRecord]:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM {self.table} WHERE tenant_id = $1 ORDER BY version",
            tenant_id,
        )
        return [_record(r) for r in rows]

    async def get(self, conn: asyncpg.Connection, tenant_id: UUID, version: int) -> ModelRecord:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM {self.table} WHERE tenant_id = $1 AND version = $2",
            tenant_id,
            version,
        )
        if row is None:
            raise NotFound(f"no {self.noun} version {version}; see `{self.list_command}`")
        return _record(row)

    async def serving(
        self, conn: asyncpg.Connection, tenant_id: UUID
    ) -> tuple[ModelRecord | None, ModelRecord | None]:
        """(production, candidate) for the tenant."""
        rows = await conn.fetch(
            f"""SELECT {_COLUMNS} FROM {self.table}
                WHERE tenant_id = $1 AND status IN ('production', 'candidate')""",
            tenant_id,
        )
        found = {r["status"]: _record(r) for r in rows}
        return found.get("production"), found.get("candidate")

    async def serving_everywhere(self, conn: asyncpg.Connection) -> list[tuple[UUID, int, str]]:
        """(tenant, version, artifact path) of every version that serves, across tenants."""
        rows = await conn.fetch(
            f"""SELECT tenant_id, version, artifact_url FROM {self.table}
                WHERE status IN ('production', 'candidate') ORDER BY tenant_id, version"""
        )
        return [(r["tenant_id"], r["version"], r["artifact_url"]) for r in rows]

    async def latest_promoted(self, conn: asyncpg.Connection, limit: int) -> list[UUID]:
        """The tenants with a production version, the most recently promoted first."""
        rows = await conn.fetch(
            f"""SELECT tenant_id FROM {self.table} WHERE status = 'production'
                ORDER BY promoted_at DESC NULLS LAST LIMIT $1""",
            limit,
        )
        return [r["tenant_id"] for r in rows]

    async def production(self, conn: asyncpg.Connection, tenant_id: UUID) -> ModelRecord | None:
        return (await self.serving(conn, tenant_id))[0]

    async def promote(
        self, conn: asyncpg.Connection, tenant_id: UUID, version: int, traffic_percent: int = 100
    ) -> ModelRecord:
        """Serve `version` to all customers (100), or as the A/B candidate to that share."""
        if not 1 <= traffic_percent <= 100:
            raise InvalidInput("traffic must be between 1 and 100 percent")
        if traffic_percent < 100 and not self.candidates:
            raise InvalidInput(f"{self.noun}s serve one version at a time: promote to 100%")
        async with conn.transaction():
            target = await self.get(conn, tenant_id, version)
            if target.status == "production":
                raise Conflict(f"{self.noun} version {version} is already in production")
            if traffic_percent == 100:
                await self._retire(conn, tenant_id, "production")
                await self._serve(conn, tenant_id, version, "production", 100)
            else:
                await conn.execute(
                    f"""UPDATE {self.table} SET status = 'registered', traffic_percent = 0
                        WHERE tenant_id = $1 AND status = 'candidate' AND version <> $2""",
                    tenant_id,
                    version,
                )
                await self._serve(conn, tenant_id, version, "candidate", traffic_percent)
            return await self.get(conn, tenant_id, version)

    async def rollback(self, conn: asyncpg.Connection, tenant_id: UUID) -> ModelRecord:
        """Put back the version that served before the current production one."""
        async with conn.transaction():
            previous = await conn.fetchval(
                f"""SELECT version FROM {self.table} WHERE tenant_id = $1
                    AND status = 'retired' AND promoted_at IS NOT NULL
                    ORDER BY promoted_at DESC LIMIT 1""",
                tenant_id,
            )
            if previous is None:
                raise Conflict("no earlier production version to roll back to")
            await self._retire(conn, tenant_id, "production", "candidate")
            await self._serve(conn, tenant_id, previous, "production", 100)
            return await self.get(conn, tenant_id, previous)

    async def _retire(self, conn: asyncpg.Connection, tenant_id: UUID, *statuses: str) -> None:
        await conn.execute(
            f"""UPDATE {self.table} SET status = 'retired', traffic_percent = 0
                WHERE tenant_id = $1 AND status = ANY($2::text[])""",
            tenant_id,
            list(statuses),
        )

    async def _serve(
        self, conn: asyncpg.Connection, tenant_id: UUID, version: int, status: str, percent: int
    ) -> None:
        stamp = ", promoted_at = now()" if status == "production" else ""
        await conn.execute(
            f"""UPDATE {self.table} SET status = $3, traffic_percent = $4{stamp}
                WHERE tenant_id = $1 AND version = $2""",
            tenant_id,
            version,
            status,
            percent,
        )


class LoadCheck:
    """Health of an app that serves models: can every serving version's files be loaded here?
    A version's files never change once registered, so each is loaded once per process
    (off the event loop) and remembered; only failures are tried again."""

    def __init__(self, registry: ModelRegistry, load: Callable[[str], object]) -> None:
        self.registry = registry
        self.load = load
        self._loaded: set[str] = set()

    async def check(self, conn: asyncpg.Connection) -> str:
        failures = []
        for tenant, version, path in await self.registry.serving_everywhere(conn):
            if path in self._loaded:
                continue
            try:
                await asyncio.to_thread(self.load, path)
            except Exception as exc:
                failures.append(f"{self.registry.noun} v{version} of tenant {tenant}: {exc!r}")
                continue
            self._loaded.add(path)
        if failures:
            return f"failed: {len(failures)} serving version(s) cannot be loaded: {failures[0]}"
        return "ok"
