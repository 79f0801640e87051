"""The budget ledger in PostgreSQL: append events, and read them back to rebuild a book."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from uuid import UUID

import asyncpg

from kiki.shield.book import BudgetBook, CampaignKey, NewCampaign, shard_of
from kiki.shield.budget import EventKind, LedgerEvent

_COLUMNS = (
    "tenant_id",
    "campaign_id",
    "kind",
    "reservation_id",
    "platform",
    "amount_micros",
    "budget_day",
    "idempotency_key",
    "requested_micros",
    "expires_at",
    "over_delivered_micros",
    "data",
    "recorded_at",
)


async def append(
    conn: asyncpg.Connection,
    created: list[NewCampaign],
    events: list[tuple[CampaignKey, LedgerEvent]],
) -> None:
    """Write new campaigns and events in one transaction (COPY: one round trip for the batch)."""
    async with conn.transaction():
        if created:
            await conn.executemany(
                """INSERT INTO budget_campaigns (tenant_id, campaign_id, currency)
                   VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
                [(UUID(c.tenant_id), c.campaign_id, c.currency) for c in created],
            )
        if events:
            await conn.copy_records_to_table(
                "budget_ledger", columns=_COLUMNS, records=_records(events)
            )
            marks = [
                (UUID(tenant), campaign, platform, ref, date.fromisoformat(day), *totals)
                for (tenant, campaign), e in events
                for platform, ref, day, *totals in e.reports
            ]
            if marks:
                await conn.executemany(_UPSERT_MARK, marks)


# Running totals only grow: a commit retried after a later one never moves a mark back.
_UPSERT_MARK = """
INSERT INTO platform_spend_marks AS m (tenant_id, campaign_id, platform, ad_group_ref, day,
    spend_micros, clicks, conversions, value_micros)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (tenant_id, platform, ad_group_ref, day) DO UPDATE SET
    campaign_id = EXCLUDED.campaign_id,
    spend_micros = GREATEST(m.spend_micros, EXCLUDED.spend_micros),
    clicks = GREATEST(m.clicks, EXCLUDED.clicks),
    conversions = GREATEST(m.conversions, EXCLUDED.conversions),
    value_micros = GREATEST(m.value_micros, EXCLUDED.value_micros),
    updated_at = now()
"""


def _records(events: Iterable[tuple[CampaignKey, LedgerEvent]]) -> list[tuple]:
    # Ids stay text: asyncpg encodes a str into a uuid column itself, faster than UUID().
    return [
        (
            tenant,
            campaign,
            e.kind.value,
            e.reservation_id or None,
            e.platform,
            e.amount_micros,
            e.budget_day,
            e.idempotency_key,
            e.requested_micros,
            e.expires_at,
            e.over_delivered_micros,
            None if e.data is None else json.dumps(e.data),
            e.at,
        )
        for (tenant, campaign), e in events
    ]


async def rebuild(
    conn: asyncpg.Connection,
    book: BudgetBook,
    shard: int,
    shards: int,
    only: set[CampaignKey] | None = None,
) -> int:
    """Replay the ledger of this shard's campaigns (or just `only`) into `book`; returns the
    number of events replayed."""
    rows = await conn.fetch("SELECT tenant_id::text, campaign_id, currency FROM budget_campaigns")
    keys = {}
    for row in rows:
        key = (row["tenant_id"], row["campaign_id"])
        if shard_of(*key, shards) == shard and (only is None or key in only):
            keys[key] = row["currency"]
    book.forget(set(keys) if only is None else only)
    budgets = {key: book.load(*key, currency) for key, currency in keys.items()}
    if not budgets:
        return 0
    tenants = [UUID(t) for t, _ in budgets]
    campaigns = [c for _, c in budgets]
    count = 0
    async with conn.transaction():
        cursor = conn.cursor(
            """SELECT l.tenant_id::text, l.campaign_id, l.kind, l.reservation_id::text,
                      l.platform, l.amount_micros, l.budget_day, l.idempotency_key,
                      l.requested_micros, l.expires_at, l.over_delivered_micros, l.data,
                      l.recorded_at
               FROM budget_ledger l
               JOIN unnest($1::uuid[], $2::text[]) AS k(tenant_id, campaign_id)
                 ON l.tenant_id = k.tenant_id AND l.campaign_id = k.campaign_id
               ORDER BY l.seq""",
            tenants,
            campaigns,
            prefetch=5000,
        )
        async for r in cursor:
            budgets[(r[0], r[1])].apply(
                LedgerEvent(
                    kind=EventKind(r[2]),
                    at=r[12],
                    reservation_id=r[3],
                    platform=r[4],
                    amount_micros=r[5],
                    budget_day=r[6],
                    idempotency_key=r[7],
                    requested_micros=r[8],
                    expires_at=r[9],
                    over_delivered_micros=r[10],
                    data=None if r[11] is None else json.loads(r[11]),
                )
            )
            count += 1
    return count
