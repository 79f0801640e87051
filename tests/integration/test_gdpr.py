"""GDPR that sticks: an erasure leaves keyed-hash suppressions, and every path that could bring
the person back (CRM sync, ingestion, messaging) honours them; against a real PostgreSQL
(a fresh, migrated database per test; no Ray)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from kiki import gdpr
from kiki.auth import Tenant, ensure_tenant
from kiki.db import migrate
from kiki.db.pool import create_pool
from kiki.engage import messaging, retention
from kiki.engage.crm.hubspot import HubSpotSettings, HubSpotSource
from kiki.engage.crm.sync import sync
from kiki.flow.segments import replace_members
from kiki.shield.consent import ConsentRecord, Purpose, record_consent
from kiki.value import transactions
from tests.conftest import SUPPRESSIONS
from tests.fakes.fake_hubspot import FakeHubSpot
from tests.integration.test_engage_retention import DAY, table

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
Scenario = Callable[[asyncpg.Pool, Tenant], Awaitable[None]]


def run(url: str, scenario: Scenario) -> None:
    async def main() -> None:
        pool = await create_pool(url, min_size=1, max_size=3)
        try:
            async with pool.acquire() as conn:
                await migrate.migrate(conn, migrate.discover())
                tenant = await ensure_tenant(conn, "acme")
            await scenario(pool, tenant)
        finally:
            await pool.close()

    asyncio.run(main())


def purchase(order: str, customer: str) -> transactions.Transaction:
    return transactions.Transaction(order, customer, T0, 1_000_000, "USD", 1)


async def erase(pool: asyncpg.Pool, tenant: Tenant, customer_id: str) -> dict[str, int]:
    async with pool.acquire() as conn:
        return await gdpr.erase_customer(conn, tenant.id, customer_id, "test", SUPPRESSIONS)


async def count(pool: asyncpg.Pool, sql: str, *args: object) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval(sql, *args)


def test_erasure_suppresses_keyed_digests_of_every_identifier_not_the_person(
    fresh_db: str,
) -> None:
    async def scenario(pool: asyncpg.Pool, acme: Tenant) -> None:
        async with pool.acquire() as conn:
            beta = await ensure_tenant(conn, "beta")
            profile = messaging.ProfileIn(email="Ada@Example.com", phone="+442079460958")
            await messaging.upsert_profile(conn, acme.id, "ada", profile, SUPPRESSIONS)
            await conn.execute(
                """INSERT INTO engage_crm_links (tenant_id, source, external_id, customer_id)
                   VALUES ($1, 'hubspot', '7', 'ada'), ($1, 'shopify', 's9', 'ada')""",
                acme.id,
            )
        assert (await erase(pool, acme, "ada"))["engage_customers"] == 1

        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM gdpr_suppressions ORDER BY digest")
            audit_id = await conn.fetchval("SELECT id FROM gdpr_audit WHERE action = 'erase'")
            named = {
                ("customer", "ada"), ("email", "ada@example.com"), ("phone", "+442079460958"),
                ("crm", "hubspot:7"), ("crm", "shopify:s9"),
            }  # fmt: skip
            assert sorted(bytes(r["digest"]) for r in rows) == sorted(
                SUPPRESSIONS.digest(acme.id, *i) for i in named
            )
            assert {r["audit_id"] for r in rows} == {audit_id}
            # Keyed: neither the id nor its plain SHA-256 is stored; another key finds nothing.
            stored = b"".join(bytes(r["digest"]) for r in rows)
            assert b"ada" not in stored.lower()
            assert hashlib.sha256(f"{acme.id}:ada".encode()).digest() not in stored
            assert await SUPPRESSIONS.matching(conn, acme.id, named) == named
            other_key = gdpr.Suppressions(b"another key for another platform")
            assert await other_key.matching(conn, acme.id, named) == set()
            # Per tenant: beta's customer "ada" is someone else.
            assert await SUPPRESSIONS.erased(conn, beta.id, ["ada"]) == set()
            assert await SUPPRESSIONS.erased(conn, acme.id, ["ada", "bob"]) == {"ada"}
            # An email matches whatever its case.
            assert await SUPPRESSIONS.matching(conn, acme.id, [("email", " ADA@example.COM")])
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("UPDATE gdpr_suppressions SET audit_id = audit_id")
        # Erasing again is harmless: the same suppressions, one more audit row.
        await erase(pool, acme, "ada")
        assert await count(pool, "SELECT count(*) FROM gdpr_suppressions") == len(named)

    run(fresh_db, scenario)


def test_a_crm_sync_does_not_bring_an_erased_person_back(fresh_db: str) -> None:
    async def scenario(pool: asyncpg.Pool, acme: Tenant) -> None:
        async with pool.acquire() as conn:  # Ada came in through the API, then HubSpot merged
            profile = messaging.ProfileIn(email="ada@example.com")
            await messaging.upsert_profile(conn, acme.id, "ada", profile, SUPPRESSIONS)
        hubspot = FakeHubSpot(token="pat")
        hubspot.add_contact("1", T0, email="ada@example.com", firstname="Ada")
        hubspot.add_contact("2", T0, email="bob@example.com", firstname="Bob")
        hubspot.add_order("70", T0, contact="1", total="5.00", currency="USD")
        hubspot.add_order("71", T0, contact="2", total="6.00", currency="USD")
        crm = HubSpotSource(
            hubspot.client("https://api.hubapi.com"), HubSpotSettings(access_token="pat")
        )
        first = await sync(pool, acme.id, crm, SUPPRESSIONS)
        assert (first.customers_merged, first.customers_created, first.orders_new) == (1, 1, 2)

        erased = await erase(pool, acme, "ada")
        assert erased["engage_crm_links"] == 1 and erased["transactions"] == 1

        # Everything again, plus Ada signing up anew in the CRM under another record: skipped.
        hubspot.add_contact("3", T0 + timedelta(hours=1), email="ADA@example.com")
        hubspot.add_order("72", T0 + timedelta(hours=1), contact="3", total="7.00", currency="USD")
        again = await sync(pool, acme.id, crm, SUPPRESSIONS, full=True)
        assert (again.contacts, again.contacts_suppressed) == (3, 2)
        # The new record's order names a buyer never linked: unmatched, stored nowhere either.
        assert (again.orders_suppressed, again.orders_unmatched, again.orders_new) == (1, 1, 0)
        assert (again.customers_created, again.customers_merged) == (0, 0)
        async with pool.acquire() as conn:
            customers = await conn.fetch(
                "SELECT customer_id FROM engage_customers WHERE tenant_id = $1", acme.id
            )
            assert [r["customer_id"] for r in customers] == ["hubspot-2"]
            buyers = await conn.fetch("SELECT DISTINCT customer_id FROM transactions")
            assert [r["customer_id"] for r in buyers] == ["hubspot-2"]
            links = await conn.fetch("SELECT external_id FROM engage_crm_links")
            assert [r["external_id"] for r in links] == ["2"]

    run(fresh_db, scenario)


def test_ingestion_drops_erased_customers_from_batches_and_refuses_single_writes(
    fresh_db: str,
) -> None:
    async def scenario(pool: asyncpg.Pool, acme: Tenant) -> None:
        async with pool.acquire() as conn:
            await transactions.insert(conn, acme.id, [purchase("o1", "ada")], SUPPRESSIONS)
        await erase(pool, acme, "ada")

        async with pool.acquire() as conn:
            # SyncValue's transactions (POST /value/api/v1/transactions, `kiki ingest`).
            batch = [purchase("o1", "ada"), purchase("o2", "ada"), purchase("o3", "bob")]
            async with conn.transaction():
                loaded = await transactions.insert(conn, acme.id, batch, SUPPRESSIONS)
            assert loaded == transactions.Loaded(inserted=1, suppressed=2)
            # Consent events (POST /shield/api/v1/consent).
            consent = [
                ConsentRecord(customer_id=c, purpose=Purpose.EMAIL, granted=True, source="t")
                for c in ("ada", "bob")
            ]
            recorded = await record_consent(conn, acme.id, consent, SUPPRESSIONS)
            assert (recorded.recorded, recorded.suppressed) == (1, 1)
            # Audience segments (PUT /flow/api/v1/segments/{id}).
            members = await replace_members(conn, acme.id, "vip", ["ada", "bob"], SUPPRESSIONS)
            assert members == (1, 1)
            # Engage profiles (PUT /engage/api/v1/customers/{id}): one customer, refused.
            with pytest.raises(gdpr.Erased, match="'ada' was erased at their request"):
                await messaging.upsert_profile(
                    conn, acme.id, "ada", messaging.ProfileIn(first_name="Ada"), SUPPRESSIONS
                )
            found = await gdpr.export_customer(conn, acme.id, "ada", "test")
            assert all(rows == [] for rows in found.values()), found

    run(fresh_db, scenario)


def test_a_message_to_an_erased_customer_is_refused_or_skipped_and_never_logged(
    fresh_db: str,
) -> None:
    async def scenario(pool: asyncpg.Pool, acme: Tenant) -> None:
        await erase(pool, acme, "c_high")
        request = messaging.MessageRequest(
            customer_id="c_high", channel="in_app", template="win_back"
        )

        async def personalize(customer_id: str, profile: object) -> dict[str, object]:
            return {}

        with pytest.raises(gdpr.Erased):  # 409 customer_erased at POST /engage/api/v1/message
            await messaging.send_message(
                pool, acme.id, request, {}, personalize, messaging.Caps(), SUPPRESSIONS
            )
        # A retention rule (a batch send) skips them and counts them.
        async with pool.acquire() as conn:
            rule = await retention.create(
                conn, acme.id, "win-back",
                retention.RuleIn(name="win back", min_churn_risk=0.7, channel="email",
                                 template="win_back", period_days=30),
            )  # fmt: skip
        result = await retention.run(
            pool, acme.id, rule, table(DAY), {}, messaging.Caps(), SUPPRESSIONS, dry_run=True
        )
        assert result.suppressed == 1
        assert [t.customer_id for t in result.targets] == ["c_poor", "c_noconsent"]
        assert await count(pool, "SELECT count(*) FROM engage_messages") == 0

    run(fresh_db, scenario)
