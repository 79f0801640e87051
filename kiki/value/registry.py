"""The LTV model registry: versions per tenant, which one serves, and an A/B candidate.

One version is `production`; at most one is a `candidate` that serves a fixed share of
customers, chosen by a stable hash of customer_id so a customer always sees the same model.
Promoting to 100% retires the previous production version, which `rollback` brings back.
"""

from __future__ import annotations

import hashlib
import json
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
    artifact_path: str
    reference: dict[str, Any]
    created_at: datetime
    promoted_at: datetime | None


_COLUMNS = """version, status, traffic_percent, metrics, feature_schema, config, calibration_end,
    horizon_days, data_window, artifact_path, reference, created_at, promoted_at"""


def _record(row: asyncpg.Record) -> ModelRecord:
    data = dict(row)
    for key in ("metrics", "feature_schema", "config", "data_window", "reference"):
        data[key] = json.loads(data[key])
    return ModelRecord(**data)


def ab_bucket(customer_id: str) -> int:
    """0..99, stable across processes and restarts."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % 100


async def register(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    metrics: dict[str, Any],
    feature_schema: list[str],
    config: dict[str, Any],
    calibration_end: date,
    horizon_days: int,
    data_window: dict[str, Any],
    artifact_path: str,
    reference: dict[str, Any],
) -> ModelRecord:
    """Record a trained model as the tenant's next version (status `registered`)."""
    async with conn.transaction():
        # Serialise version numbering per tenant.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1::text))", str(tenant_id))
        version = await conn.fetchval(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM ltv_models WHERE tenant_id = $1", tenant_id
        )
        row = await conn.fetchrow(
            f"""INSERT INTO ltv_models (tenant_id, version, metrics, feature_schema, config,
                    calibration_end, horizon_days, data_window, artifact_path, reference)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_COLUMNS}""",
            tenant_id,
            version,
            json.dumps(metrics),
            json.dumps(feature_schema),
            json.dumps(config),
            calibration_end,
            horizon_days,
            json.dumps(data_window),
            artifact_path,
            json.dumps(reference),
        )
    return _record(row)


async def list_models(conn: asyncpg.Connection, tenant_id: UUID) -> list[ModelRecord]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM ltv_models WHERE tenant_id = $1 ORDER BY version", tenant_id
    )
    return [_record(r) for r in rows]


async def get(conn: asyncpg.Connection, tenant_id: UUID, version: int) -> ModelRecord:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM ltv_models WHERE tenant_id = $1 AND version = $2",
        tenant_id,
        version,
    )
    if row is None:
        raise NotFound(f"no LTV model version {version}; see `kiki models list`")
    return _record(row)


async def serving(
    conn: asyncpg.Connection, tenant_id: UUID
) -> tuple[ModelRecord | None, ModelRecord | None]:
    """(production, candidate) for the tenant."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM ltv_models
            WHERE tenant_id = $1 AND status IN ('production', 'candidate')""",
        tenant_id,
    )
    found = {r["status"]: _record(r) for r in rows}
    return found.get("production"), found.get("candidate")


async def promote(
    conn: asyncpg.Connection, tenant_id: UUID, version: int, traffic_percent: int = 100
) -> ModelRecord:
    """Serve `version` to all customers (100), or as the A/B candidate to that share."""
    if not 1 <= traffic_percent <= 100:
        raise InvalidInput("traffic must be between 1 and 100 percent")
    async with conn.transaction():
        target = await get(conn, tenant_id, version)
        if target.status == "production":
            raise Conflict(f"version {version} is already in production")
        if traffic_percent == 100:
            await conn.execute(
                """UPDATE ltv_models SET status = 'retired', traffic_percent = 0
                   WHERE tenant_id = $1 AND status = 'production'""",
                tenant_id,
            )
            await conn.execute(
                """UPDATE ltv_models SET status = 'production', traffic_percent = 100,
                       promoted_at = now() WHERE tenant_id = $1 AND version = $2""",
                tenant_id,
                version,
            )
        else:
            await conn.execute(
                """UPDATE ltv_models SET status = 'registered', traffic_percent = 0
                   WHERE tenant_id = $1 AND status = 'candidate' AND version <> $2""",
                tenant_id,
                version,
            )
            await conn.execute(
                """UPDATE ltv_models SET status = 'candidate', traffic_percent = $3
                   WHERE tenant_id = $1 AND version = $2""",
                tenant_id,
                version,
                traffic_percent,
            )
        return await get(conn, tenant_id, version)


async def rollback(conn: asyncpg.Connection, tenant_id: UUID) -> ModelRecord:
    """Put back the version that served before the current production one."""
    async with conn.transaction():
        previous = await conn.fetchval(
            """SELECT version FROM ltv_models WHERE tenant_id = $1 AND status = 'retired'
               AND promoted_at IS NOT NULL ORDER BY promoted_at DESC LIMIT 1""",
            tenant_id,
        )
        if previous is None:
            raise Conflict("no earlier production version to roll back to")
        await conn.execute(
            """UPDATE ltv_models SET status = 'retired', traffic_percent = 0
               WHERE tenant_id = $1 AND status IN ('production', 'candidate')""",
            tenant_id,
        )
        await conn.execute(
            """UPDATE ltv_models SET status = 'production', traffic_percent = 100,
                   promoted_at = now() WHERE tenant_id = $1 AND version = $2""",
            tenant_id,
            previous,
        )
        return await get(conn, tenant_id, previous)
