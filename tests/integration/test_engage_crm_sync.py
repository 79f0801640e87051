"""CRM sync into the real PostgreSQL: customers deduped by email across sources (and the merge
recorded), orders as exact micros, re-syncs idempotent, cursors per (tenant, source, kind).
A second database on the same server plays the customer's PostgreSQL CRM. No Ray."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from kiki.auth import Tenant, ensure_tenant
from kiki.db import migrate
from kiki.db.pool import create_pool
from kiki.engage.crm.hubspot import HubSpotSettings, HubSpotSource
from kiki.engage.crm.postgres import PostgresSettings, PostgresSource
from kiki.engage.crm.sync import cursor, sync
from tests.conftest import SUPPRESSIONS
from tests.fakes.fake_hubspot import FakeHubSpot

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


async def migrated(pool: asyncpg.Pool, name: str) -> Tenant:
    async with pool.acquire() as conn:
        await migrate.migrate(conn, migrate.discover())
        return await ensure_tenant(conn, name)


CRM_SCHEMA = """
CREATE TABLE crm.people (id int PRIMARY KEY, email text, phone text, first_name text,
                         updated_at timestamptz NOT NULL);
CREATE TABLE crm.sales (id int PRIMARY KEY, contact_id int, occurred_at timestamptz,
                        amount numeric(12, 2), currency text, updated_at timestamptz NOT NULL);
"""


def test_sync_dedupes_merges_and_is_idempotent(fresh_db: str) -> None:
    async def scenario() -> None:
        pool = await asyncpg.create_pool(fresh_db, min_size=1, max_size=3)
        assert pool is not None
        async with pool.acquire() as conn:
            await migrate.migrate(conn, migrate.discover())
            tenant = await ensure_tenant(conn, "crm")
            other = await ensure_tenant(conn, "crm_other")
            await conn.execute(
                """INSERT INTO engage_customers (tenant_id, customer_id, email)
                   VALUES ($1, 'alice', 'alice@example.com'), ($2, 'x', 'bob@example.com')""",
                tenant.id,
                other.id,
            )
            await conn.execute("CREATE SCHEMA crm;" + CRM_SCHEMA)
            await conn.execute(
                """INSERT INTO crm.people VALUES
                     (10, 'Bob@Example.com', '+44 20 7946 0958', 'Robert', $1),
                     (11, 'carol@example.com', '555-0100', 'Carol', $2)""",
                T0,
                T0 - timedelta(days=1),
            )
            await conn.execute(
                "INSERT INTO crm.sales VALUES (100, 11, $1, 5.25, 'usd', $1), "
                "(101, 99, $1, 1.00, 'USD', $1)",
                T0,
            )

        hubspot = FakeHubSpot(token="pat")
        hubspot.add_contact("1", T0, email="ALICE@example.com", firstname="Alice")
        hubspot.add_contact("2", T0 + timedelta(minutes=1), email="bob@example.com")
        hubspot.add_order("7", T0, contact="2", total="19.99", currency="USD")
        crm = HubSpotSource(
            hubspot.client("https://api.hubapi.com"), HubSpotSettings(access_token="pat")
        )
        first = await sync(pool, tenant.id, crm, SUPPRESSIONS)
        assert (first.contacts, first.customers_created, first.customers_merged) == (2, 1, 1)
        assert (first.orders_new, first.orders_unmatched) == (1, 0)
        again = await sync(
            pool, tenant.id, crm, SUPPRESSIONS
        )  # inclusive cursor: the newest is read again
        assert (again.contacts, again.customers_created, again.customers_merged) == (1, 0, 0)
        assert again.orders_new == 0

        table = PostgresSettings(
            url=fresh_db, contacts_table="crm.people", orders_table="crm.sales"
        )
        pg = await sync(pool, tenant.id, PostgresSource(table), SUPPRESSIONS)
        assert (pg.customers_created, pg.customers_merged) == (1, 1)  # carol new, bob merged
        assert (pg.orders_new, pg.orders_unmatched) == (1, 1)
        async with pool.acquire() as conn:
            await conn.execute("UPDATE crm.people SET first_name = 'Bobby', updated_at = $1 "
                               "WHERE id = 10", T0 + timedelta(hours=1))  # fmt: skip
        changed = await sync(pool, tenant.id, PostgresSource(table), SUPPRESSIONS)
        # only Bob changed after the contacts cursor; orders re-read at their cursor add nothing
        assert (changed.contacts, changed.orders, changed.orders_new) == (1, 2, 0)

        async with pool.acquire() as conn:
            customers = await conn.fetch(
                """SELECT customer_id, email, phone, first_name FROM engage_customers
                   WHERE tenant_id = $1 ORDER BY customer_id""",
                tenant.id,
            )
            assert [tuple(r) for r in customers] == [
                ("alice", "alice@example.com", None, "Alice"),
                ("hubspot-2", "bob@example.com", "+442079460958", "Bobby"),
                ("postgres-11", "carol@example.com", None, "Carol"),  # no country code: dropped
            ]
            merges = await conn.fetch(
                "SELECT source, external_id, customer_id FROM engage_crm_merges "
                "WHERE tenant_id = $1 ORDER BY id",
                tenant.id,
            )
            assert [tuple(r) for r in merges] == [
                ("hubspot", "1", "alice"),
                ("postgres", "10", "hubspot-2"),
            ]
            orders = await conn.fetch(
                "SELECT order_id, customer_id, amount_micros, currency FROM transactions "
                "WHERE tenant_id = $1 ORDER BY order_id",
                tenant.id,
            )
            assert [tuple(r) for r in orders] == [
                ("hubspot:7", "hubspot-2", 19_990_000, "USD"),
                ("postgres:100", "postgres-11", 5_250_000, "USD"),
            ]
            assert await cursor(conn, tenant.id, "postgres", "contacts") == T0 + timedelta(hours=1)
            assert await cursor(conn, tenant.id, "hubspot", "orders") == T0
            assert await cursor(conn, other.id, "hubspot", "contacts") is None
            # erasing a customer erases its links and merges
            await conn.execute(
                "DELETE FROM engage_customers WHERE tenant_id = $1 AND customer_id = 'alice'",
                tenant.id,
            )
            assert await conn.fetchval(
                "SELECT count(*) FROM engage_crm_links WHERE customer_id = 'alice'"
            ) == 0  # fmt: skip
        await pool.close()

    asyncio.run(scenario())


def test_hubspot_orders_sync_incrementally(fresh_db: str) -> None:
    """Only orders changed since the orders cursor are read again, through the search API
    on `hs_lastmodifieddate`; a re-read order inserts nothing; --full reads them all."""

    async def scenario() -> None:
        pool = await create_pool(fresh_db, min_size=1, max_size=3)
        tenant = await migrated(pool, "crm_orders")
        hubspot = FakeHubSpot(token="pat")
        hubspot.add_contact("1", T0, email="dana@example.com")
        for i in range(250):
            hubspot.add_order(str(100 + i), T0 + timedelta(seconds=i), contact="1",
                              total="2.50", currency="USD")  # fmt: skip
        crm = HubSpotSource(
            hubspot.client("https://api.hubapi.com"), HubSpotSettings(access_token="pat")
        )
        first = await sync(pool, tenant.id, crm, SUPPRESSIONS)
        assert (first.orders, first.orders_new, first.orders_unmatched) == (250, 250, 0)
        assert first.orders_cursor == T0 + timedelta(seconds=249)
        hubspot.requests.clear()
        hubspot.add_order("999", T0 + timedelta(hours=1), contact="1", total="7", currency="USD")
        second = await sync(pool, tenant.id, crm, SUPPRESSIONS)
        # inclusive cursor: the last order of the first sync, and the new one
        assert (second.orders, second.orders_new) == (2, 1)
        searches = [r.json() for r in hubspot.requests if r.path.endswith("orders/search")]
        assert [s["filterGroups"][0]["filters"][0]["value"] for s in searches] == [
            str(int((T0 + timedelta(seconds=249)).timestamp() * 1000))
        ]
        async with pool.acquire() as conn:
            assert await cursor(conn, tenant.id, "hubspot", "orders") == T0 + timedelta(hours=1)
            total = await conn.fetchval(
                "SELECT sum(amount_micros) FROM transactions WHERE tenant_id = $1", tenant.id
            )
            assert total == 250 * 2_500_000 + 7_000_000
        full = await sync(pool, tenant.id, crm, SUPPRESSIONS, full=True)
        assert (full.orders, full.orders_new) == (251, 0)
        await pool.close()

    asyncio.run(scenario())
