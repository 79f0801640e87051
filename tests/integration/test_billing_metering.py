"""Usage ingestion against PostgreSQL: exactly once under a concurrent duplicate flood, bad
batches refused whole, and KIKI's own usage reports."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import asyncpg
import pytest

from kiki.auth import ensure_tenant
from kiki.billing import metering, repository
from kiki.billing.aggregation import Event
from kiki.billing.catalog import BillableMetric
from kiki.billing.models import CustomerIn
from kiki.db import migrate
from kiki.db.pool import create_pool
from kiki.errors import InvalidInput

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def event(n: int, customer: str = "c0", **properties: object) -> Event:
    return Event(
        transaction_id=f"tx-{n}",
        customer=customer,
        metric_code="calls",
        timestamp=T0 + timedelta(seconds=n),
        properties=properties,
    )


async def setup(pool: asyncpg.Pool) -> object:
    async with pool.acquire() as conn:
        await migrate.migrate(conn, migrate.discover())
        tenant = await ensure_tenant(conn, "meter")
        await repository.create_metric(
            conn, tenant.id, BillableMetric(code="calls", aggregation="count")
        )
        await repository.create_metric(
            conn, tenant.id, BillableMetric(code="bytes", aggregation="sum", field_name="n")
        )
        for c in range(10):
            await repository.create_customer(
                conn, tenant.id, CustomerIn(customer_id=f"c{c}", currency="USD")
            )
    return tenant


def test_duplicate_flood_with_overlapping_concurrent_batches_counts_each_event_once(
    fresh_db: str,
) -> None:
    """5,000 distinct events sent as 40 overlapping batches of 500 from 16 connections at
    once (every event sent 4 times, plus repeats inside a batch): exactly 5,000 accepted."""

    async def main() -> None:
        pool = await create_pool(fresh_db, min_size=16, max_size=16)
        try:
            tenant = await setup(pool)
            distinct = [event(n, customer=f"c{n % 10}") for n in range(5_000)]
            rng = random.Random(7)
            batches = []
            for _ in range(4):
                shuffled = distinct[:]
                rng.shuffle(shuffled)
                batches += [shuffled[i : i + 500] for i in range(0, 5_000, 500)]
            batches = [b + b[:20] for b in batches]  # in-batch repeats too
            rng.shuffle(batches)

            async def send(batch: list[Event]) -> metering.IngestResult:
                async with pool.acquire() as conn:
                    return await metering.ingest(conn, tenant.id, batch)

            results = await asyncio.gather(*(send(b) for b in batches))
            sent = sum(len(b) for b in batches)
            assert sum(r.accepted for r in results) == 5_000
            assert sum(r.duplicates for r in results) == sent - 5_000
            assert all(
                r.accepted + r.duplicates == len(b) for r, b in zip(results, batches, strict=True)
            )
            stored = await pool.fetchval(
                "SELECT count(*) FROM billing_events WHERE tenant_id = $1", tenant.id
            )
            assert stored == 5_000
            retry = await send(batches[0])
            assert (retry.accepted, retry.duplicates) == (0, len(batches[0]))
        finally:
            await pool.close()

    asyncio.run(main())


def test_bad_batches_are_refused_whole_with_the_reason(fresh_db: str) -> None:
    async def main() -> None:
        pool = await create_pool(fresh_db, min_size=1, max_size=2)
        try:
            tenant = await setup(pool)
            async with pool.acquire() as conn:
                with pytest.raises(InvalidInput, match=r"unknown customers \['nobody'\]"):
                    await metering.ingest(conn, tenant.id, [event(1), event(2, "nobody")])
                bad_metric = event(3).model_copy(update={"metric_code": "nope"})
                with pytest.raises(InvalidInput, match=r"events\[1\]: unknown metric 'nope'"):
                    await metering.ingest(conn, tenant.id, [event(4), bad_metric])
                not_a_number = Event(transaction_id="b1", customer="c1", metric_code="bytes",
                                     timestamp=T0, properties={"n": "lots"})  # fmt: skip
                with pytest.raises(InvalidInput, match=r"events\[0\]\.properties\.n"):
                    await metering.ingest(conn, tenant.id, [not_a_number])
                with pytest.raises(InvalidInput, match="at most 10,000"):
                    await metering.ingest(conn, tenant.id, [event(n) for n in range(10_001)])
                assert await conn.fetchval("SELECT count(*) FROM billing_events") == 0
        finally:
            await pool.close()

    asyncio.run(main())


def test_kiki_services_report_usage_to_the_platform_tenant(fresh_db: str) -> None:
    async def main() -> None:
        pool = await create_pool(fresh_db, min_size=1, max_size=2)
        try:
            await setup(pool)
            tenant_id = uuid4()
            async with pool.acquire() as conn:
                assert await metering.record(conn, tenant_id, metering.PREDICTIONS_SERVED, 250,
                                             "value:req-1", T0)  # fmt: skip
                assert not await metering.record(conn, tenant_id, metering.PREDICTIONS_SERVED,
                                                 250, "value:req-1", T0)  # fmt: skip
                row = await conn.fetchrow(
                    """SELECT t.name, e.customer_id, e.properties->>'quantity' AS q
                       FROM billing_events e JOIN tenants t ON t.id = e.tenant_id"""
                )
                assert tuple(row) == ("kiki", str(tenant_id), "250")
                platform = await ensure_tenant(conn, "kiki")
                codes = set(await repository.metrics(conn, platform.id))
                assert codes == set(metering.PLATFORM_METRICS)
        finally:
            await pool.close()

    asyncio.run(main())
