"""Cohorts, RFM and rule segments evaluated by PostgreSQL on a small, hand-checked book."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import pytest
from pydantic import TypeAdapter

from kiki.auth import Tenant, ensure_tenant
from kiki.db import migrate
from kiki.db.pool import connect
from kiki.engage import cohorts, rfm, segments
from kiki.engage.rules import Rule
from kiki.errors import Conflict, InvalidInput, NotFound
from kiki.value.transactions import Transaction, insert
from tests.conftest import SUPPRESSIONS

AS_OF = date(2026, 3, 31)
PURCHASES = [  # customer, day, amount in micros, currency
    ("alice", "2026-01-05", 50_000_000, "USD"),
    ("alice", "2026-02-10", 20_000_000, "USD"),
    ("alice", "2026-03-15", 30_000_000, "USD"),
    ("bob", "2026-01-20", 10_000_000, "USD"),
    ("bob", "2026-01-20", 5_000_000, "EUR"),  # same day, other currency
    ("carol", "2026-02-01", 200_000_000, "USD"),
    ("carol", "2026-03-30", 15_000_000, "USD"),
    ("dan", "2026-02-28", 7_000_000, "USD"),
    ("erin", "2026-04-02", 9_000_000, "USD"),  # after AS_OF: never counted
]


def run_with_book(pg_url: str, work: Callable[[asyncpg.Connection, Tenant], Awaitable[Any]]):
    async def scenario() -> Any:
        conn = await connect(pg_url)
        try:
            await migrate.migrate(conn, migrate.discover())
            tenant = await ensure_tenant(conn, "engage_book")
            rows = [
                Transaction(f"o{i}", c, datetime.fromisoformat(d).replace(tzinfo=UTC), m, cur, 1)
                for i, (c, d, m, cur) in enumerate(PURCHASES)
            ]
            async with conn.transaction():
                await insert(conn, tenant.id, rows, SUPPRESSIONS)
            await conn.execute(
                """INSERT INTO engage_customers (tenant_id, customer_id, email, attributes)
                   VALUES ($1, 'alice', 'alice@example.com', '{"tier": "gold"}'),
                          ($1, 'zoe', 'zoe@example.com', '{}')
                   ON CONFLICT DO NOTHING""",
                tenant.id,
            )
            return await work(conn, tenant)
        finally:
            await conn.close()

    return asyncio.run(scenario())


def test_cohort_matrices(fresh_db: str) -> None:
    async def work(conn: asyncpg.Connection, tenant: Tenant) -> None:
        found = await cohorts.cohorts(conn, tenant.id, AS_OF)
        assert [c.cohort_id for c in found] == ["cohort_jan_2026", "cohort_feb_2026"]
        jan, feb = found
        assert (jan.customers, jan.active) == (2, [2, 1, 1])
        assert jan.retention == [1.0, 0.5, 0.5]
        assert jan.revenue_micros == {
            "EUR": [5_000_000, 0, 0],
            "USD": [60_000_000, 20_000_000, 30_000_000],
        }
        assert (feb.customers, feb.active) == (2, [2, 1])
        one = await cohorts.cohort(conn, tenant.id, "cohort_feb_2026", AS_OF)
        assert one.revenue_micros == {"USD": [207_000_000, 15_000_000]}
        with pytest.raises(NotFound):
            await cohorts.cohort(conn, tenant.id, "cohort_dec_2025", AS_OF)
        with pytest.raises(InvalidInput, match="cohort_<month>_<year>"):
            await cohorts.cohort(conn, tenant.id, "january", AS_OF)

    run_with_book(fresh_db, work)


def test_rfm_scores_and_segments(fresh_db: str) -> None:
    async def work(conn: asyncpg.Connection, tenant: Tenant) -> None:
        found = {c.customer_id: c for c in await rfm.rfm_customers(conn, tenant.id, AS_OF, "USD")}
        assert set(found) == {"alice", "bob", "carol", "dan"}
        assert found["alice"].frequency == 3 and found["alice"].monetary_micros == 100_000_000
        assert found["carol"].recency_days == 1
        assert found["carol"].r == max(c.r for c in found.values())
        assert found["bob"].r == 1 and found["bob"].segment == "hibernating"
        assert found["alice"].segment in rfm.SEGMENTS
        summary = await rfm.rfm_summary(conn, tenant.id, AS_OF, "USD")
        assert sum(s.customers for s in summary) == 4

    run_with_book(fresh_db, work)


def test_rule_segments_are_stored_and_evaluated(fresh_db: str) -> None:
    rule = TypeAdapter(Rule).validate_python

    async def work(conn: asyncpg.Connection, tenant: Tenant) -> None:
        lapsed = segments.SegmentIn(
            name="lapsed spenders",
            rule=rule({"all": [
                {"field": "days_since_last", "op": ">=", "value": 30},
                {"field": "total_spend", "op": ">=", "value": "5"},
            ]}),
        )  # fmt: skip
        made = await segments.create(conn, tenant.id, "lapsed", lapsed)
        assert made.rule == lapsed.rule
        with pytest.raises(Conflict):
            await segments.create(conn, tenant.id, "lapsed", lapsed)
        members = await segments.evaluate(conn, tenant.id, made.rule, AS_OF)
        assert (members.total, members.customer_ids) == (2, ["bob", "dan"])
        gold = rule({"any": [
            {"field": "attributes.tier", "op": "=", "value": "gold"},
            {"field": "purchases", "op": "is_not_set"},
        ]})  # fmt: skip
        assert (await segments.evaluate(conn, tenant.id, gold, AS_OF)).customer_ids == ["alice"]
        no_orders = rule({"field": "purchases", "op": "=", "value": 0})
        assert (await segments.evaluate(conn, tenant.id, no_orders, AS_OF)).customer_ids == ["zoe"]
        everyone = rule({"field": "has_email", "op": "!=", "value": True})
        page = await segments.evaluate(conn, tenant.id, everyone, AS_OF, limit=2)
        assert (page.total, page.customer_ids, page.next_after) == (3, ["bob", "carol"], "carol")
        rest = await segments.evaluate(conn, tenant.id, everyone, AS_OF, limit=2, after="carol")
        assert (rest.customer_ids, rest.next_after) == (["dan"], None)  # erin buys after AS_OF
        changed = await segments.replace(
            conn, tenant.id, "lapsed", segments.SegmentIn(name="renamed", rule=no_orders)
        )
        assert changed.name == "renamed"
        assert [s.segment_id for s in await segments.list_segments(conn, tenant.id)] == ["lapsed"]
        await segments.delete(conn, tenant.id, "lapsed")
        with pytest.raises(NotFound):
            await segments.get(conn, tenant.id, "lapsed")

    run_with_book(fresh_db, work)
