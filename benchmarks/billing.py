"""`kiki bench billing`: usage ingestion and period closing, each next to a naive baseline.

Ingestion: the same batches of 1,000 events (a share of them retries of events already sent)
go through `kiki.billing.metering.ingest` (COPY into a temporary table, one
`INSERT ... SELECT ... ON CONFLICT DO NOTHING`) and through the naive way, one
`INSERT ... ON CONFLICT DO NOTHING` per event (one transaction per batch), from the same
number of connections. Closing: `close_period` for every customer of a tenant at once vs one
`close_period` call (one transaction) per subscription, on a sample.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from benchmarks.common import Result, percentiles
from kiki.auth import Tenant, ensure_tenant
from kiki.billing import metering, repository
from kiki.billing.aggregation import Event
from kiki.billing.catalog import BillableMetric, Plan
from kiki.billing.closing import close_period
from kiki.billing.periods import BillingPeriod

JAN1 = datetime(2026, 1, 1, tzinfo=UTC)
FEB1 = datetime(2026, 2, 1, tzinfo=UTC)
PLAN = Plan.model_validate(
    {"code": "usage", "interval": "monthly", "currency": "USD", "base_fee_minor": 29_00,
     "charges": [{"metric_code": "calls", "charge_model": "graduated", "tiers": [
         {"up_to": 3}, {"up_to": None, "unit_price": "0.0125"}]}]}
)  # fmt: skip


def event_batches(total: int, batch: int, duplicates: float, customers: int) -> list[list[Event]]:
    """`total` events in batches; `duplicates` of each batch after the first repeat events of
    earlier batches (retries), the rest are new."""
    # A seeded simulation, not a secret: the standard generator is right.
    rng = random.Random(0)  # nosec B311
    sent: list[Event] = []
    batches, n = [], 0
    while sum(len(b) for b in batches) < total:
        repeats = int(batch * duplicates) if sent else 0
        fresh = [
            Event(transaction_id=f"tx-{n + i}", customer=f"c{(n + i) % customers}",
                  metric_code="calls", timestamp=JAN1 + timedelta(seconds=n + i))
            for i in range(batch - repeats)
        ]  # fmt: skip
        n += len(fresh)
        batches.append(fresh + rng.sample(sent, repeats))
        sent += fresh
    return batches


async def _tenant_with_customers(pool: asyncpg.Pool, name: str, customers: int) -> Tenant:
    async with pool.acquire() as conn:
        tenant = await ensure_tenant(conn, name)
        metric = BillableMetric(code="calls", aggregation="count")
        await repository.create_metric(conn, tenant.id, metric)
        await repository.create_plan(conn, tenant.id, PLAN)
        await conn.copy_records_to_table(
            "billing_customers",
            columns=("tenant_id", "customer_id", "currency"),
            records=[(tenant.id, f"c{i}", "USD") for i in range(customers)],
        )
    return tenant


async def ingestion(
    url: str, total: int, batch: int, duplicates: float, concurrency: int
) -> tuple[Result, Result]:
    """(naive baseline, ours); both must store the same events."""
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)
    batches = event_batches(total, batch, duplicates, customers=1_000)
    sent = sum(len(b) for b in batches)
    try:
        naive_tenant = await _tenant_with_customers(pool, "bench-naive", 1_000)
        ours_tenant = await _tenant_with_customers(pool, "bench-ingest", 1_000)

        async def naive(events: list[Event]) -> None:
            async with pool.acquire() as conn, conn.transaction():
                # In key order, as ours: overlapping batches in any order would deadlock.
                for e in sorted(events, key=lambda e: e.transaction_id):
                    await conn.execute(
                        """INSERT INTO billing_events (tenant_id, transaction_id, customer_id,
                               metric_code, occurred_at, properties, received_at)
                           VALUES ($1, $2, $3, $4, $5, '{}', clock_timestamp())
                           ON CONFLICT DO NOTHING""",
                        naive_tenant.id, e.transaction_id, e.customer, e.metric_code,
                        e.timestamp,
                    )  # fmt: skip

        async def ours(events: list[Event]) -> None:
            async with pool.acquire() as conn:
                await metering.ingest(conn, ours_tenant.id, events)

        results = []
        for label, send in (("naive: INSERT ... ON CONFLICT per event", naive),
                            ("ours: COPY + INSERT ... SELECT, batch", ours)):  # fmt: skip
            results.append(await _run_batches(label, send, batches, concurrency, batch))
        stored = await pool.fetchval(
            "SELECT count(*) FROM billing_events WHERE tenant_id = $1", ours_tenant.id
        )
        naive_stored = await pool.fetchval(
            "SELECT count(*) FROM billing_events WHERE tenant_id = $1", naive_tenant.id
        )
        if stored != naive_stored:
            raise AssertionError(f"ours stored {stored} events, the baseline {naive_stored}")
    finally:
        await pool.close()
    results[1].note = f"{sent:,} events sent, {stored:,} new, {sent - stored:,} duplicates"
    return results[0], results[1]


async def _run_batches(
    label: str,
    send: Callable[[list[Event]], Awaitable[None]],
    batches: list[list[Event]],
    concurrency: int,
    batch: int,
) -> Result:
    queue: asyncio.Queue[list[Event]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            events = queue.get_nowait()
            started = time.perf_counter()
            await send(events)
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    p50, p99 = percentiles(latencies)
    return Result(label, sum(len(b) for b in batches), elapsed, p50, p99,
                  f"latency per batch of {batch:,}")  # fmt: skip


async def _subscribed_tenant(pool: asyncpg.Pool, name: str, customers: int, events: int) -> Tenant:
    """`customers` subscribed on Jan 1 with `events` calls each in January, loaded in bulk."""
    tenant = await _tenant_with_customers(pool, name, customers)
    period = BillingPeriod(anchor=JAN1.date(), interval=PLAN.interval, timezone="UTC", index=0)
    ids = [uuid.uuid4() for _ in range(customers)]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "billing_subscriptions",
            columns=("id", "tenant_id", "customer_id", "status", "plan_code", "plan_version",
                     "plan_since", "started_at", "anchor", "timezone", "period_index",
                     "period_start", "period_end"),
            records=[(ids[i], tenant.id, f"c{i}", "active", PLAN.code, PLAN.version, JAN1, JAN1,
                      period.start_date, "UTC", 0, period.start, period.end)
                     for i in range(customers)],
        )  # fmt: skip
        await conn.copy_records_to_table(
            "billing_subscription_plans",
            columns=("subscription_id", "tenant_id", "plan_code", "plan_version", "valid_from"),
            records=[(i, tenant.id, PLAN.code, PLAN.version, JAN1) for i in ids],
        )
    stream = [
        Event(transaction_id=f"{c}-{k}", customer=f"c{c}", metric_code="calls",
              timestamp=JAN1 + timedelta(hours=k))
        for c in range(customers) for k in range(events)
    ]  # fmt: skip
    for start in range(0, len(stream), 10_000):
        async with pool.acquire() as conn:
            await metering.ingest(conn, tenant.id, stream[start : start + 10_000])
    return tenant


async def closing(url: str, customers: int, events: int, sample: int) -> tuple[Result, Result]:
    """(one close per subscription on `sample` customers, one close for all `customers`)."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        naive_tenant = await _subscribed_tenant(pool, "bench-close-naive", sample, events)
        tenant = await _subscribed_tenant(pool, "bench-close", customers, events)
        async with pool.acquire() as conn:
            ids = await conn.fetch(
                "SELECT id FROM billing_subscriptions WHERE tenant_id = $1", naive_tenant.id
            )
            began = time.perf_counter()
            latencies = []
            for row in ids:
                started = time.perf_counter()
                await close_period(conn, naive_tenant, FEB1, subscription_ids=[row["id"]])
                latencies.append((time.perf_counter() - started) * 1000)
            naive_s = time.perf_counter() - began
            began = time.perf_counter()
            report = await close_period(conn, tenant, FEB1)
            ours_s = time.perf_counter() - began
        if report.invoices != customers:
            raise AssertionError(f"{report.invoices} invoices for {customers} customers")
    finally:
        await pool.close()
    p50, p99 = percentiles(latencies)
    naive = Result(f"naive: one close per subscription ({sample:,})", sample, naive_s, p50, p99,
                   "latency per subscription")  # fmt: skip
    ours = Result(f"ours: one close for {customers:,} customers", customers, ours_s,
                  ours_s * 1000, ours_s * 1000,
                  f"{customers:,} invoices in {ours_s:.2f} s ({events} events each)")  # fmt: skip
    return naive, ours
