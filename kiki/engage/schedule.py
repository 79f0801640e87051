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

from kiki.engage import messaging, retention
from kiki.engage.connectors.base import Channel, MessageChannel
from kiki.engage.crm import sources
from kiki.engage.crm.sync import SyncResult, sync
from kiki.errors import KikiError


class RoundReport(BaseModel):
    syncs: list[SyncResult]
    runs: list[retention.RunResult]
    errors: list[str]  # "<tenant> <source or rules>: why"


async def run_round(
    pool: asyncpg.Pool,
    client: httpx.AsyncClient,
    channels: Mapping[Channel, MessageChannel],
    caps: messaging.Caps,
    day: date,
) -> RoundReport:
    report = RoundReport(syncs=[], runs=[], errors=[])
    async with pool.acquire() as conn:
        configured = await sources.due(conn)
    for tenant_id, name, config in configured:
        try:
            report.syncs.append(await sync(pool, tenant_id, sources.build(name, config, client)))
        except KikiError as exc:
            report.errors.append(f"{tenant_id} {name}: {exc.message}")
    async with pool.acquire() as conn:
        tenants = await retention.tenants_with_rules(conn)
    for tenant_id in tenants:
        try:
            async with pool.acquire() as conn:
                rules = await retention.list_rules(conn, tenant_id, enabled_only=True)
                table, currency = await retention.score(conn, tenant_id, day)
        except KikiError as exc:
            report.errors.append(f"{tenant_id} rules: {exc.message}")
            continue
        for rule in rules:
            try:
                report.runs.append(
                    await retention.run(
                        pool, tenant_id, rule, table, channels, caps, currency, dry_run=False
                    )
                )
            except KikiError as exc:
                report.errors.append(f"{tenant_id} rule {rule.rule_id}: {exc.message}")
    return report
