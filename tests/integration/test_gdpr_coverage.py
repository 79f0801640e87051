"""Export and erasure cover every column that can hold a customer: after all migrations, each
column whose name says so (kiki.gdpr.PERSONAL_COLUMN) is in a registered table
(CUSTOMER_TABLES), checked below with real rows, or exempt with a reason (EXEMPT_COLUMNS).
A new column that is neither fails here. Real PostgreSQL, no Ray."""

from __future__ import annotations

import asyncio

import asyncpg

from kiki import gdpr
from kiki.auth import ensure_tenant
from kiki.db import migrate
from kiki.db.pool import connect
from tests.conftest import SUPPRESSIONS

# One row per registered table for a person ($1 tenant, $2 customer id), each of its personal
# columns holding something of theirs; in this order (rows others point to first).
SEED: dict[str, str] = {
    "engage_customers": """INSERT INTO engage_customers
        (tenant_id, customer_id, email, phone, push_token, first_name)
        VALUES ($1, $2, $2 || '@example.com', '+44' || $2, 'tok-' || $2, 'name-' || $2)""",
    "engage_messages": """INSERT INTO engage_messages
        (tenant_id, idempotency_key, customer_id, channel, template, status)
        VALUES ($1, 'rule:r:' || $2 || ':1', $2, 'in_app', 'win_back', 'sent')""",
    "engage_inbox": """INSERT INTO engage_inbox (tenant_id, customer_id, message_id, title, body)
        SELECT $1, $2, id, 'hi', 'hello' FROM engage_messages
        WHERE tenant_id = $1 AND customer_id = $2""",
    "engage_crm_links": """INSERT INTO engage_crm_links (tenant_id, source, external_id,
        customer_id) VALUES ($1, 'hubspot', 'x-' || $2, $2)""",
    "engage_crm_merges": """INSERT INTO engage_crm_merges (tenant_id, source, external_id,
        customer_id, email) VALUES ($1, 'shopify', 'y-' || $2, $2, $2 || '@example.com')""",
    "consent_events": """INSERT INTO consent_events (tenant_id, customer_id, purpose, granted,
        source, recorded_at) VALUES ($1, $2, 'email', true, 'web', now())""",
    "transactions": """INSERT INTO transactions (tenant_id, order_id, customer_id, occurred_at,
        amount_micros, currency) VALUES ($1, 'o-' || $2, $2, now(), 1000000, 'USD')""",
    "audience_segments": """INSERT INTO audience_segments (tenant_id, segment_id, customer_id)
        VALUES ($1, 'vip', $2)""",
}
ERASED, KEPT = "7000001", "7000002"  # digits: a phone number can hold them too


async def personal_columns(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        """SELECT c.table_name, c.column_name FROM information_schema.columns c
           JOIN information_schema.tables t USING (table_schema, table_name)
           WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
             AND c.table_name NOT IN (SELECT relname FROM pg_class WHERE relispartition)
           ORDER BY 1, 2"""
    )
    return [(r[0], r[1]) for r in rows if gdpr.PERSONAL_COLUMN.search(r[1])]


def test_every_column_that_can_hold_a_customer_is_erased_or_exempt(fresh_db: str) -> None:
    async def main() -> None:
        conn = await connect(fresh_db)
        try:
            await migrate.migrate(conn, migrate.discover())
            await check(conn)
        finally:
            await conn.close()

    asyncio.run(main())


async def check(conn: asyncpg.Connection) -> None:
    registered = {t.table: t for t in gdpr.CUSTOMER_TABLES}
    columns = await personal_columns(conn)
    names = {f"{table}.{column}" for table, column in columns}
    uncovered = sorted(n for n in names if n.split(".")[0] not in registered)
    assert set(uncovered) - set(gdpr.EXEMPT_COLUMNS) == set(), (
        "columns that can hold a customer but are neither erased nor exempt: register the "
        "table in kiki.gdpr.CUSTOMER_TABLES (and seed it in SEED here), or add the column to "
        "kiki.gdpr.EXEMPT_COLUMNS with the reason it is kept"
    )
    assert set(gdpr.EXEMPT_COLUMNS) - set(uncovered) == set(), "stale exemptions"
    assert list(SEED) and set(SEED) == set(registered), "seed one row per registered table"

    acme = await ensure_tenant(conn, "acme")
    beta = await ensure_tenant(conn, "beta")
    for tenant, person in ((acme, ERASED), (acme, KEPT), (beta, ERASED)):
        for sql in SEED.values():
            await conn.execute(sql, tenant.id, person)

    exported = await gdpr.export_customer(conn, acme.id, ERASED, "test")
    for table, t in registered.items():
        (row,) = exported[table]
        assert row[t.customer_column] == ERASED and row[t.tenant_column] == str(acme.id)
    erased = await gdpr.erase_customer(conn, acme.id, ERASED, "test", SUPPRESSIONS)
    assert erased == dict.fromkeys(registered, 1)

    # No personal column of a registered table still holds anything of the erased person in
    # that tenant, while the other customer and the other tenant's namesake keep their rows.
    for table, column in columns:
        if table not in registered:
            continue
        t = registered[table]
        holding = f"""SELECT count(*) FROM {table} WHERE {t.tenant_column} = $1
                      AND {column}::text LIKE '%' || $2 || '%'"""
        assert await conn.fetchval(holding, acme.id, ERASED) == 0, f"{table}.{column}"
        assert await conn.fetchval(holding, acme.id, KEPT) == 1, f"{table}.{column}"
        assert await conn.fetchval(holding, beta.id, ERASED) == 1, f"{table}.{column}"
