"""SyncEngage's CRM sources (HubSpot, Salesforce, Shopify, PostgreSQL): configured with
their secrets sealed, synced on demand or by the automation actor on its schedule."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from deployments._serve import Admin, Connection, DecimalJSONRoute, Reader, Writer
from deployments.engage.context import Context
from deployments.engage.schemas import SourceIn, SourcePath
from kiki.engage.crm import sources
from kiki.engage.crm.sync import SyncResult, sync_configured

router = APIRouter(prefix="/api/v1/crm", route_class=DecimalJSONRoute, tags=["crm"])


@router.put("/{source}", response_model=sources.SourceConfig)
async def put_crm_source(
    source: SourcePath, body: SourceIn, tenant: Admin, ctx: Context, conn: Connection
) -> sources.SourceConfig:
    """Configure a CRM source; its secrets are stored encrypted and answered masked."""
    return await sources.put(conn, tenant.id, source, body.config, body.enabled, ctx.vault)


@router.get("", response_model=list[sources.SourceConfig])
async def list_crm_sources(tenant: Reader, conn: Connection) -> list[sources.SourceConfig]:
    return await sources.listed(conn, tenant.id)


@router.delete("/{source}", status_code=204)
async def delete_crm_source(source: SourcePath, tenant: Admin, conn: Connection) -> None:
    await sources.remove(conn, tenant.id, source)


@router.post("/{source}/sync", response_model=SyncResult)
async def sync_crm_source(
    source: SourcePath,
    tenant: Writer,
    ctx: Context,
    full: Annotated[
        bool, Query(description="read everything again, not just changes since the cursors")
    ] = False,
) -> SyncResult:
    """Sync now: contacts and orders changed since the stored cursors (or all, `full`)."""
    pool = await ctx.service.pool()
    return await sync_configured(pool, tenant.id, source, ctx.service.client, ctx.vault, full=full)
