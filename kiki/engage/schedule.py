"""One scheduled round of SyncEngage automation, what the engage actor runs every N seconds:
each tenant's enabled CRM sources synced, then each tenant's enabled retention rules run.

One failing source or tenant (a vendor down, no churn model yet) is reported and skipped;
the others still run, and the next round retries it from its stored cursor.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import asyncpg
import httpx
from pydantic import BaseModel

from kiki.artifacts import ArtifactStore
from kiki.engage import messaging, retention
from kiki.engage.channels.base import Channel, MessageChannel
from kiki.engage.crm import sources
from kiki.engage.crm.sync import SyncResult, sync_configured
from kiki.errors import KikiError
from kiki.gdpr import Suppressions
from kiki.vault import Vault


class RoundReport(BaseModel):
    syncs: list[SyncResult]
    runs: list[retention.RunResult]
    errors: list[str]  # "<tenant> <source or rules>: why"


async def run_round(
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    vault: Vault,
    channels: Mapping[Channel, MessageChannel],
    caps: messaging.Caps,
    day: date,
    store: ArtifactStore,
) -> RoundReport:
    report = RoundReport(syncs=[], runs=[], errors=[])
    async with pool.acquire() as conn:
        configured = await sources.due(conn)
    for tenant_id, name in configured:
        try:
            report.syncs.append(await sync_configured(pool, tenant_id, name, client, vault))
        except KikiError as exc:
            report.errors.append(f"{tenant_id} {name}: {exc.message}")
    async with pool.acquire() as conn:
        tenants = await retention.tenants_with_rules(conn)
    for tenant_id in tenants:
        runs, errors = await retention.run_rules(
            pool, tenant_id, channels, caps, Suppressions.of(vault), day, store, dry_run=False
        )
        report.runs += runs
        report.errors += [f"{tenant_id} {e}" for e in errors]
    return report
