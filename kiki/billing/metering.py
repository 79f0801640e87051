"""Usage events in: batches from tenants (`ingest`) and KIKI's own services (`record`).

Exactly once: the key table's primary key (tenant_id, transaction_id) is the guarantee. A
batch is COPYed into a temporary table and moved with `INSERT ... ON CONFLICT DO NOTHING`, so a
retried batch, or two overlapping batches at once, count each transaction once, and the answer
says how many were new and how many were duplicates.

Late events: an event lands in the period its timestamp belongs to. Every ingest holds the
tenant's billing lock in shared mode and stamps `received_at = clock_timestamp()` under it;
closing a period holds it exclusively. So an event committed before a close is seen by that
close, and one received after it carries a later `received_at`: at the next close it is found
as late and billed as an adjustment line (kiki.billing.closing). A closed invoice never changes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import AwareDatetime

from kiki.auth import ensure_tenant
from kiki.billing.aggregation import Event, Identifier, dedupe
from kiki.billing.catalog import Aggregation, BillableMetric, Code, ExactDecimal, FrozenModel
from kiki.billing.repository import metrics
from kiki.errors import InvalidInput
from kiki.money import to_decimal

MAX_BATCH = 10_000
PLATFORM_TENANT = "kiki"
"""The tenant that bills KIKI's own customers (the other tenants) for their usage."""

# KIKI's own metrics: each a sum over the event property "quantity".
PREDICTIONS_SERVED = "predictions_served"
CREATIVES_GENERATED = "creatives_generated"
BID_DECISIONS = "bid_decisions"
MESSAGES_SENT = "messages_sent"
PLATFORM_METRICS = (PREDICTIONS_SERVED, CREATIVES_GENERATED, BID_DECISIONS, MESSAGES_SENT)


class IngestResult(FrozenModel):
    accepted: int
    duplicates: int


def lock_key(tenant_id: UUID) -> str:
    """Argument of the tenant's billing advisory lock (through hashtextextended)."""
    return f"billing:{tenant_id}"


_TEMP = """CREATE TEMP TABLE IF NOT EXISTS billing_events_in (
    transaction_id text, customer_id text, metric_code text, occurred_at timestamptz,
    properties jsonb) ON COMMIT DELETE ROWS"""
_COLUMNS = ("transaction_id", "customer_id", "metric_code", "occurred_at", "properties")
# Exactly once across days: a batch's new keys go into billing_event_keys (its primary key is
# the guarantee; billing_events is partitioned by day, see migration 0021) and only those
# events into billing_events, set-based. The flag, for this transaction only, spares the
# per-row trigger that does the same for any other writer.
_KEYS_WRITTEN = "SELECT set_config('kiki.billing_event_keys', 'written', true)"


def _json(properties: dict[str, Any]) -> str:
    """Exact numbers stay exact: Decimals are stored as decimal strings."""
    return json.dumps(properties, default=str, separators=(",", ":"))


def _check(events: Sequence[Event], known: dict[str, BillableMetric]) -> None:
    if len(events) > MAX_BATCH:
        raise InvalidInput(f"a batch holds at most {MAX_BATCH:,} events; got {len(events):,}")
    for index, event in enumerate(events):
        metric = known.get(event.metric_code)
        if metric is None:
            raise InvalidInput(
                f"events[{index}]: unknown metric {event.metric_code!r}; create it first "
                "(POST /billing/api/v1/metrics)"
            )
        numeric = metric.aggregation in (Aggregation.SUM, Aggregation.MAX, Aggregation.LATEST)
        value = event.properties.get(metric.field_name or "")
        if numeric and value is not None:
            try:
                to_decimal(value)
            except InvalidInput as exc:
                raise InvalidInput(
                    f"events[{index}].properties.{metric.field_name}: {exc.message}"
                ) from None


async def ingest(
    conn: asyncpg.Connection, tenant_id: UUID, events: Sequence[Event]
) -> IngestResult:
    """Store a batch of usage events once each; all or nothing on bad input."""
    _check(events, await metrics(conn, tenant_id))
    first = dedupe(events)
    customers = sorted({event.customer for event in first})
    found = await conn.fetch(
        """SELECT customer_id FROM billing_customers
           WHERE tenant_id = $1 AND customer_id = ANY($2::text[])""",
        tenant_id,
        customers,
    )
    unknown = sorted(set(customers) - {r["customer_id"] for r in found})
    if unknown:
        raise InvalidInput(
            f"unknown customers {unknown[:5]}{' ...' if len(unknown) > 5 else ''}; "
            "create them first (POST /billing/api/v1/customers)"
        )
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", lock_key(tenant_id)
        )
        await conn.execute(_TEMP)
        await conn.copy_records_to_table(
            "billing_events_in",
            columns=_COLUMNS,
            records=[
                (e.transaction_id, e.customer, e.metric_code, e.timestamp, _json(e.properties))
                for e in first  # a transaction_id twice in one batch: the first one counts
            ],
        )
        await conn.execute(_KEYS_WRITTEN)
        status = await conn.execute(
            """WITH fresh AS (
                   INSERT INTO billing_event_keys (tenant_id, transaction_id, received_at)
                   SELECT $1::uuid, transaction_id, clock_timestamp() FROM billing_events_in
                   ORDER BY transaction_id  -- one key order for every batch: no deadlocks
                   ON CONFLICT DO NOTHING
                   RETURNING transaction_id, received_at)
               INSERT INTO billing_events (tenant_id, transaction_id, customer_id, metric_code,
                                           occurred_at, properties, received_at)
               SELECT $1::uuid, transaction_id, i.customer_id, i.metric_code, i.occurred_at,
                      i.properties, fresh.received_at
               FROM billing_events_in i JOIN fresh USING (transaction_id)""",
            tenant_id,
        )
    accepted = int(status.rsplit(" ", 1)[1])
    return IngestResult(accepted=accepted, duplicates=len(events) - accepted)


class Usage(FrozenModel):
    """One report of a KIKI service's usage by a tenant."""

    tenant_id: UUID
    metric_code: Code
    quantity: ExactDecimal
    transaction_id: Identifier
    at: AwareDatetime


async def _platform_tenant(conn: asyncpg.Connection, name: str) -> UUID:
    """The billing tenant's id; it and KIKI's metrics are created on first use."""
    row = await conn.fetchrow(
        """SELECT t.id, count(m.code) AS metrics FROM tenants t
           LEFT JOIN billing_metrics m ON m.tenant_id = t.id AND m.code = ANY($2::text[])
           WHERE t.name = $1 GROUP BY t.id""",
        name,
        list(PLATFORM_METRICS),
    )
    if row is not None and row["metrics"] == len(PLATFORM_METRICS):
        return row["id"]
    tenant = await ensure_tenant(conn, name)
    await conn.executemany(
        """INSERT INTO billing_metrics (tenant_id, code, name, spec) VALUES ($1, $2, $2, $3)
           ON CONFLICT DO NOTHING""",
        [
            (tenant.id, code, BillableMetric(
                code=code, aggregation=Aggregation.SUM, field_name="quantity"
            ).model_dump_json())
            for code in PLATFORM_METRICS
        ],
    )  # fmt: skip
    return tenant.id


async def record_many(
    conn: asyncpg.Connection, usages: Sequence[Usage], *, platform_tenant: str = PLATFORM_TENANT
) -> int:
    """Report KIKI services' usage: each tenant is a customer (its id as customer_id) of the
    platform's billing tenant. Idempotent by transaction_id; returns how many were new."""
    if not usages:
        return 0
    owner = await _platform_tenant(conn, platform_tenant)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", lock_key(owner)
        )
        await conn.execute(_KEYS_WRITTEN)
        status = await conn.execute(
            """WITH u AS (
                   SELECT DISTINCT ON (transaction_id) * FROM unnest(
                       $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[])
                   AS u(transaction_id, customer_id, metric_code, occurred_at, quantity)
                   ORDER BY transaction_id),
               fresh AS (
                   INSERT INTO billing_event_keys (tenant_id, transaction_id, received_at)
                   SELECT $1, transaction_id, clock_timestamp() FROM u ORDER BY transaction_id
                   ON CONFLICT DO NOTHING
                   RETURNING transaction_id, received_at)
               INSERT INTO billing_events (tenant_id, transaction_id, customer_id, metric_code,
                                           occurred_at, properties, received_at)
               SELECT $1, transaction_id, u.customer_id, u.metric_code, u.occurred_at,
                      jsonb_build_object('quantity', u.quantity), fresh.received_at
               FROM u JOIN fresh USING (transaction_id)""",
            owner,
            [u.transaction_id for u in usages],
            [str(u.tenant_id) for u in usages],
            [u.metric_code for u in usages],
            [u.at for u in usages],
            [format(u.quantity, "f") for u in usages],
        )
    return int(status.rsplit(" ", 1)[1])


async def record(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    metric_code: str,
    quantity: Decimal | int | str,
    transaction_id: str,
    at: datetime,
    *,
    platform_tenant: str = PLATFORM_TENANT,
) -> bool:
    """Report one usage of a KIKI service by `tenant_id`; True when it was new."""
    usage = Usage(
        tenant_id=tenant_id,
        metric_code=metric_code,
        quantity=quantity,
        transaction_id=transaction_id,
        at=at,
    )
    return await record_many(conn, [usage], platform_tenant=platform_tenant) == 1


class StoredEvent(FrozenModel):
    event: Event
    received_at: datetime


async def events_of(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    customer_ids: Collection[str],
    start: datetime,
    end: datetime,
    *,
    received_after: datetime | None = None,
) -> dict[str, list[StoredEvent]]:
    """The customers' events with start <= timestamp < end (and, when given, received after
    `received_after`), by customer."""
    rows = await conn.fetch(
        """SELECT transaction_id, customer_id, metric_code, occurred_at, properties::text AS p,
                  received_at
           FROM billing_events
           WHERE tenant_id = $1 AND customer_id = ANY($2::text[])
             AND occurred_at >= $3 AND occurred_at < $4
             AND ($5::timestamptz IS NULL OR received_at > $5)""",
        tenant_id, list(customer_ids), start, end, received_after,
    )  # fmt: skip
    found: dict[str, list[StoredEvent]] = defaultdict(list)
    for r in rows:
        # Stored rows were validated on the way in: no second validation on the hot path.
        event = Event.model_construct(
            transaction_id=r["transaction_id"],
            customer=r["customer_id"],
            metric_code=r["metric_code"],
            timestamp=r["occurred_at"],
            properties=json.loads(r["p"], parse_float=Decimal),
        )
        found[r["customer_id"]].append(
            StoredEvent.model_construct(event=event, received_at=r["received_at"])
        )
    return found
