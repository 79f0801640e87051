"""Usage events, the message delivery log and the webhook outbox partitioned by day
(migration 0021): the migration converts filled tables in place, idempotency keys still hold
across days, a row for a day without a partition is kept and moved, and retention exports old
days but keeps a day that an invoice or a pending delivery still needs."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import UUID

import asyncpg
import pyarrow.parquet as pq
import pytest

from kiki.artifacts import ArtifactStore
from kiki.auth import ensure_tenant
from kiki.billing import metering, subscriptions
from kiki.billing.closing import close_period
from kiki.db import migrate, retention
from kiki.db.pool import connect
from tests.integration.test_billing_close import JAN1, MAR1, calls, catalog, customer

DAYS = [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)]
TODAY = date(2026, 1, 4)
LOGS = ("billing_events", "engage_messages", "billing_webhook_deliveries")


def noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


async def per_partition(conn: asyncpg.Connection, table: str) -> dict[str, int]:
    rows = await conn.fetch(
        f"SELECT tableoid::regclass::text AS p, count(*) FROM {table} GROUP BY 1"  # nosec B608
    )
    return {r["p"]: r["count"] for r in rows}


async def old_rows(conn: asyncpg.Connection, tenant: UUID) -> None:
    """Rows written before 0021: alice's usage on the 1st, bob's on the 2nd; a message a day
    (an inbox item for the 3rd's); a pending and a delivered webhook on the 1st, one
    delivered on the 2nd."""
    for cid, day, n in (("alice", DAYS[0], 3), ("bob", DAYS[1], 2)):
        await conn.executemany(
            """INSERT INTO billing_events (tenant_id, transaction_id, customer_id, metric_code,
                                           occurred_at, received_at)
               VALUES ($1, $2, $3, 'api_calls', $4, $4)""",
            [(tenant, f"c-{cid}-{i}", cid, noon(day)) for i in range(n)],
        )
    for i, day in enumerate(DAYS, 1):
        message = await conn.fetchval(
            """INSERT INTO engage_messages (tenant_id, idempotency_key, customer_id, channel,
                                            template, status, created_at)
               VALUES ($1, $2, 'carol', 'in_app', 'welcome', 'sent', $3) RETURNING id""",
            tenant, f"k-{i}", noon(day),
        )  # fmt: skip
    await conn.execute(
        """INSERT INTO engage_inbox (tenant_id, customer_id, message_id, title, body)
           VALUES ($1, 'carol', $2, 'Hi', 'Welcome')""",
        tenant, message,
    )  # fmt: skip
    endpoint = await conn.fetchval(
        """INSERT INTO billing_webhook_endpoints (tenant_id, url, secret)
           VALUES ($1, 'https://hooks.example/kiki', 'sealed') RETURNING id"""
    , tenant)  # fmt: skip
    await conn.executemany(
        """INSERT INTO billing_webhook_deliveries (tenant_id, endpoint_id, event_type, payload,
                                                   status, created_at)
           VALUES ($1, $2, 'invoice.finalized', '{}', $3, $4)""",
        [(tenant, endpoint, "pending", noon(DAYS[0])),
         (tenant, endpoint, "delivered", noon(DAYS[0])),
         (tenant, endpoint, "delivered", noon(DAYS[1]))],
    )  # fmt: skip


def test_logs_partition_in_place_keys_hold_across_days_and_retention_spares_what_is_needed(
    fresh_db: str, tmp_path: Path
) -> None:
    store = ArtifactStore(url=(tmp_path / "store").as_uri(), cache_dir=tmp_path / "cache")

    async def scenario() -> None:
        conn = await connect(fresh_db)
        try:
            every = migrate.discover()
            await migrate.migrate(conn, [m for m in every if m.version < 21])
            tenant = await ensure_tenant(conn, "acme")
            await old_rows(conn, tenant.id)
            await migrate.migrate(conn, every)

            # In place, row for row, each day in its partition, every key in its key table.
            assert await per_partition(conn, "billing_events") == {
                "billing_events_20260101": 3, "billing_events_20260102": 2,
            }  # fmt: skip
            assert await per_partition(conn, "engage_messages") == {
                f"engage_messages_{d:%Y%m%d}": 1 for d in DAYS
            }
            assert await per_partition(conn, "billing_webhook_deliveries") == {
                "billing_webhook_deliveries_20260101": 2, "billing_webhook_deliveries_20260102": 1,
            }  # fmt: skip
            kinds = await conn.fetch(
                "SELECT relkind::text FROM pg_class WHERE relname = ANY($1::text[])", LOGS
            )
            assert [k[0] for k in kinds] == ["p"] * 3
            assert await conn.fetchval("SELECT count(*) FROM billing_event_keys") == 5
            assert await conn.fetchval("SELECT count(*) FROM engage_message_keys") == 3

            # Usage: a retry today of the 1st's transactions counts none of them again.
            await catalog(conn, tenant)
            for cid in ("alice", "bob"):
                await customer(conn, tenant, cid)
            await subscriptions.create(conn, tenant.id, "alice", "starter", None, JAN1)
            again = await metering.ingest(conn, tenant.id, calls("alice", 4, JAN1))
            assert (again.accepted, again.duplicates) == (1, 3)  # c-alice-3 is new
            retried = await metering.ingest(conn, tenant.id, calls("alice", 4, JAN1))
            assert (retried.accepted, retried.duplicates) == (0, 4)
            assert await conn.fetchval("SELECT count(*) FROM billing_events") == 6

            # A row for a day without a partition waits in DEFAULT, its key already taken.
            # Written by plain SQL (not metering): the trigger keeps the key, and skips a retry.
            raw = """INSERT INTO billing_events (tenant_id, transaction_id, customer_id,
                         metric_code, occurred_at, received_at)
                     VALUES ($1, 'future-1', 'bob', 'api_calls', $2, $2)"""
            future = datetime(2031, 5, 17, 8, tzinfo=UTC)
            assert await conn.execute(raw, tenant.id, future) == "INSERT 0 1"
            assert await conn.execute(raw, tenant.id, future + timedelta(days=1)) == "INSERT 0 0"
            assert (await per_partition(conn, "billing_events"))["billing_events_default"] == 1

            # Messages: the 1st's key refuses a message today, as the unique index did.
            insert = """INSERT INTO engage_messages (tenant_id, idempotency_key, customer_id,
                            channel, template, status) VALUES ($1, $2, 'carol', 'email', 'w',
                            'refused')"""
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(insert, tenant.id, "k-1")
            # Erasing a message frees its key and takes its inbox item, as before.
            await conn.execute("DELETE FROM engage_messages WHERE idempotency_key = 'k-3'")
            assert await conn.fetchval("SELECT count(*) FROM engage_inbox") == 0
            await conn.execute(insert, tenant.id, "k-3")

            keep = {"billing_events": 2, "engage_messages": 2, "billing_webhook_deliveries": 2}
            done = await retention.run(conn, store, TODAY, keep)
            assert "billing_events_20310517" in done.created
            assert {(h.partition, h.reason) for h in done.held} == {
                ("billing_events_20260101", "usage not invoiced yet"),
                ("billing_webhook_deliveries_20260101", "deliveries still pending"),
            }
            assert sorted((e.table, e.day, e.rows, e.dropped) for e in done.exported) == [
                ("billing_events", DAYS[1], 2, True),
                ("billing_webhook_deliveries", DAYS[1], 1, True),
                ("engage_messages", DAYS[0], 1, True),
                ("engage_messages", DAYS[1], 1, True),
            ]
            events = await per_partition(conn, "billing_events")
            assert events["billing_events_20310517"] == 1 and "billing_events_default" not in events
            assert "billing_events_20260102" not in events
            # The keys went with their day, and only those: the moved row's key still holds.
            keys = {r[0] for r in await conn.fetch("SELECT transaction_id FROM billing_event_keys")}
            assert keys == {f"c-alice-{i}" for i in range(4)} | {"future-1"}
            moved = metering.Event(transaction_id="future-1", customer="bob",
                                   metric_code="api_calls", timestamp=JAN1)  # fmt: skip
            assert (await metering.ingest(conn, tenant.id, [moved])).duplicates == 1
            # A message key is free again once its day left the database (the window is the
            # retention), and still taken while its day is kept.
            await conn.execute(insert, tenant.id, "k-1")
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(insert, tenant.id, "k-3")

            # Once alice's January is invoiced, her day goes too.
            await close_period(conn, tenant, MAR1)
            later = await retention.run(conn, store, TODAY, keep)
            assert [(e.table, e.day, e.rows) for e in later.exported] == [
                ("billing_events", DAYS[0], 3)
            ]
            assert [h.partition for h in later.held] == ["billing_webhook_deliveries_20260101"]
            table = pq.ParquetFile(io.BytesIO(store.get_bytes(later.exported[0].url))).read()
            assert sorted(table.column("transaction_id").to_pylist()) == [
                f"c-alice-{i}" for i in range(3)
            ]
            assert table.column("properties").to_pylist() == ["{}"] * 3
        finally:
            await conn.close()

    asyncio.run(scenario())
