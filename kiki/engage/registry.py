"""The churn model registry: versions per tenant, and the one in production.

Simpler than SyncValue's LTV registry (no A/B candidate): churn scores feed campaigns and
automation rules, which should all see one model at a time.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from kiki.errors import Conflict, NotFound

NO_CHURN_MODEL = (
    "no churn model is in production yet: train one with `kiki train churn --calibration-end "
    "DAY`, then `kiki engage promote VERSION`"
)


class ChurnModelRecord(BaseModel):
    version: int
    status: str
    metrics: dict[str, Any]
    feature_schema: list[str]
    config: dict[str, Any]
    calibration_end: date
    horizon_days: int
    data_window: dict[str, Any]
    artifact_path: str
    created_at: datetime
    promoted_at: datetime | None


_COLUMNS = """version, status, metrics, feature_schema, config, calibration_end, horizon_days,
    data_window, artifact_path, created_at, promoted_at"""
_JSON = ("metrics", "feature_schema", "config", "data_window")


def _record(row: asyncpg.Record) -> ChurnModelRecord:
    data = dict(row)
    for key in _JSON:
        data[key] = json.loads(data[key])
    return ChurnModelRecord(**data)


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
) -> ChurnModelRecord:
    """Record a trained model as the tenant's next version (status `registered`)."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('churn_models:' || $1::text))", str(tenant_id)
        )
        row = await conn.fetchrow(
            f"""INSERT INTO churn_models (tenant_id, version, metrics, feature_schema, config,
                    calibration_end, horizon_days, data_window, artifact_path)
                SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8
                FROM churn_models WHERE tenant_id = $1
                RETURNING {_COLUMNS}""",
            tenant_id,
            json.dumps(metrics),
            json.dumps(feature_schema),
            json.dumps(config),
            calibration_end,
            horizon_days,
            json.dumps(data_window),
            artifact_path,
        )
    return _record(row)


async def list_models(conn: asyncpg.Connection, tenant_id: UUID) -> list[ChurnModelRecord]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM churn_models WHERE tenant_id = $1 ORDER BY version", tenant_id
    )
    return [_record(r) for r in rows]


async def production(conn: asyncpg.Connection, tenant_id: UUID) -> ChurnModelRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM churn_models WHERE tenant_id = $1 AND status = 'production'",
        tenant_id,
    )
    return _record(row) if row else None


async def promote(conn: asyncpg.Connection, tenant_id: UUID, version: int) -> ChurnModelRecord:
    """Serve `version`; the version it replaces is retired."""
    async with conn.transaction():
        status = await conn.fetchval(
            "SELECT status FROM churn_models WHERE tenant_id = $1 AND version = $2 FOR UPDATE",
            tenant_id,
            version,
        )
        if status is None:
            raise NotFound(f"no churn model version {version}; see `kiki engage models`")
        if status == "production":
            raise Conflict(f"churn model version {version} is already in production")
        await conn.execute(
            """UPDATE churn_models SET status = 'retired'
               WHERE tenant_id = $1 AND status = 'production'""",
            tenant_id,
        )
        row = await conn.fetchrow(
            f"""UPDATE churn_models SET status = 'production', promoted_at = now()
                WHERE tenant_id = $1 AND version = $2 RETURNING {_COLUMNS}""",
            tenant_id,
            version,
        )
    return _record(row)
