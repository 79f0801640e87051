"""Incremental CRM sync: contacts into `engage_customers`, orders into `transactions`.

Dedupe: a CRM record is linked once to a customer (`engage_crm_links`); a new record whose
email an existing customer already has joins that customer, and the merge is recorded
(`engage_crm_merges`), so one person in HubSpot and Shopify is one customer. Otherwise the
customer id is `<source>-<record id>`. Orders land under `<source>:<order id>` (unique per
tenant), so reading an order again inserts nothing; amounts are exact micros.

A person erased at their request (kiki.gdpr) is not brought back: a contact whose record,
email, phone or would-be customer id is suppressed is skipped, and so is an order whose buyer's
record or email is; both are counted.

Each page is written in its own transaction under a per-tenant advisory lock, so two sources
syncing at once cannot both create a customer for one email. The cursor moves only after
every page of a kind is in: a failure mid-way re-reads from the old cursor, harmlessly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import asyncpg
import httpx
from pydantic import BaseModel

from kiki.engage.crm import sources
from kiki.engage.crm.base import CrmContact, CrmOrder, CrmSource
from kiki.gdpr import Identifier, IdentifierKind, Suppressions
from kiki.value import Transaction, insert_transactions
from kiki.vault import Vault

Kind = Literal["contacts", "orders"]


class SyncResult(BaseModel):
    source: str
    contacts: int = 0
    customers_created: int = 0
    customers_merged: int = 0
    contacts_suppressed: int = 0  # records of people erased at their request, skipped
    orders: int = 0
    orders_new: int = 0
    orders_unmatched: int = 0  # the buyer is no customer yet (no linked contact, no email)
    orders_suppressed: int = 0  # orders of erased people, skipped
    contacts_cursor: datetime | None = None
    orders_cursor: datetime | None = None


async def cursor(
    conn: asyncpg.Connection, tenant_id: UUID, source: str, kind: Kind
) -> datetime | None:
    return await conn.fetchval(
        "SELECT cursor FROM engage_crm_cursors WHERE tenant_id = $1 AND source = $2 AND kind = $3",
        tenant_id,
        source,
        kind,
    )


async def _advance(
    conn: asyncpg.Connection, tenant_id: UUID, source: str, kind: Kind, to: datetime
) -> None:
    await conn.execute(
        """INSERT INTO engage_crm_cursors (tenant_id, source, kind, cursor)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (tenant_id, source, kind) DO UPDATE
               SET cursor = GREATEST(engage_crm_cursors.cursor, $4), synced_at = now()""",
        tenant_id, source, kind, to,
    )  # fmt: skip


async def _lock(conn: asyncpg.Connection, tenant_id: UUID) -> None:
    sql = "SELECT pg_advisory_xact_lock(hashtext('engage_crm:' || $1::uuid::text))"
    await conn.execute(sql, tenant_id)


async def _linked(
    conn: asyncpg.Connection, tenant_id: UUID, source: str, external_id: str | None
) -> str | None:
    if external_id is None:
        return None
    return await conn.fetchval(
        """SELECT customer_id FROM engage_crm_links
           WHERE tenant_id = $1 AND source = $2 AND external_id = $3""",
        tenant_id,
        source,
        external_id,
    )


async def _by_email(conn: asyncpg.Connection, tenant_id: UUID, email: str | None) -> str | None:
    if email is None:
        return None
    return await conn.fetchval(
        """SELECT customer_id FROM engage_customers
           WHERE tenant_id = $1 AND lower(email) = $2 ORDER BY customer_id LIMIT 1""",
        tenant_id,
        email,
    )


def _names(*pairs: tuple[IdentifierKind, str | None]) -> set[Identifier]:
    return {(kind, value) for kind, value in pairs if value}


def _contact_names(source: str, c: CrmContact) -> set[Identifier]:
    """What the contact would be stored as or under: any one suppressed skips it."""
    return _names(
        ("crm", f"{source}:{c.external_id}"),
        ("customer", f"{source}-{c.external_id}"),
        ("email", c.email),
        ("phone", c.phone),
    )


def _buyer_names(source: str, o: CrmOrder) -> set[Identifier]:
    return _names(("crm", o.contact_id and f"{source}:{o.contact_id}"), ("email", o.email))


async def _contact(
    conn: asyncpg.Connection, tenant_id: UUID, source: str, c: CrmContact, result: SyncResult
) -> None:
    customer = await _linked(conn, tenant_id, source, c.external_id)
    if customer is None:
        customer = await _by_email(conn, tenant_id, c.email)
        if customer is not None:
            await conn.execute(
                """INSERT INTO engage_crm_merges
                       (tenant_id, source, external_id, customer_id, email)
                   VALUES ($1, $2, $3, $4, $5)""",
                tenant_id, source, c.external_id, customer, c.email,
            )  # fmt: skip
            result.customers_merged += 1
        else:
            customer = f"{source}-{c.external_id}"
            result.customers_created += 1
    await conn.execute(
        """INSERT INTO engage_customers (tenant_id, customer_id, email, phone, first_name)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (tenant_id, customer_id) DO UPDATE
               SET email = COALESCE($3, engage_customers.email),
                   phone = COALESCE($4, engage_customers.phone),
                   first_name = COALESCE($5, engage_customers.first_name),
                   updated_at = now()""",
        tenant_id, customer, c.email, c.phone, c.first_name,
    )  # fmt: skip
    await conn.execute(
        """INSERT INTO engage_crm_links (tenant_id, source, external_id, customer_id)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
        tenant_id, source, c.external_id, customer,
    )  # fmt: skip


async def _orders(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    source: str,
    page: list[CrmOrder],
    result: SyncResult,
    suppressions: Suppressions,
) -> None:
    kept, dropped = await suppressions.keep_named(
        conn, tenant_id, page, lambda o: _buyer_names(source, o)
    )
    result.orders_suppressed += dropped
    rows = []
    for o in kept:
        customer = await _linked(conn, tenant_id, source, o.contact_id) or await _by_email(
            conn, tenant_id, o.email
        )
        if customer is None:
            result.orders_unmatched += 1
            continue
        order_id = f"{source}:{o.external_id}"
        rows.append(Transaction(order_id, customer, o.occurred_at, o.amount_micros, o.currency, 1))
    loaded = await insert_transactions(conn, tenant_id, rows, suppressions)
    result.orders_new += loaded.inserted
    result.orders_suppressed += loaded.suppressed


async def sync(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    source: CrmSource,
    suppressions: Suppressions,
    *,
    full: bool = False,
) -> SyncResult:
    """Contacts first (orders name their buyers), then orders, each from its own cursor, or
    with `full` everything again (to repair data; the upserts keep it idempotent)."""
    result = SyncResult(source=source.name)
    async with pool.acquire() as conn:
        since = None if full else await cursor(conn, tenant_id, source.name, "contacts")
    latest = since
    async for contacts in source.contacts(since):
        async with pool.acquire() as conn, conn.transaction():
            await _lock(conn, tenant_id)
            kept, dropped = await suppressions.keep_named(
                conn, tenant_id, contacts, lambda c: _contact_names(source.name, c)
            )
            result.contacts_suppressed += dropped
            for c in kept:
                await _contact(conn, tenant_id, source.name, c, result)
        result.contacts += len(contacts)
        latest = _latest(latest, [c.updated_at for c in contacts])
    result.contacts_cursor = latest
    async with pool.acquire() as conn:
        if latest is not None:
            await _advance(conn, tenant_id, source.name, "contacts", latest)
        since = None if full else await cursor(conn, tenant_id, source.name, "orders")
    latest = since
    async for orders in source.orders(since):
        async with pool.acquire() as conn, conn.transaction():
            await _lock(conn, tenant_id)
            await _orders(conn, tenant_id, source.name, orders, result, suppressions)
        result.orders += len(orders)
        latest = _latest(latest, [o.updated_at for o in orders])
    result.orders_cursor = latest
    if latest is not None:
        async with pool.acquire() as conn:
            await _advance(conn, tenant_id, source.name, "orders", latest)
    return result


async def sync_configured(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    source: str,
    client: httpx.AsyncClient,
    vault: Vault,
    *,
    full: bool = False,
) -> SyncResult:
    """Sync the tenant's stored source now: what the HTTP API, the schedule and
    `kiki engage crm sync` run."""
    async with pool.acquire() as conn:
        name, config = await sources.stored(conn, tenant_id, source, vault)
    built = sources.build(name, config, client)
    return await sync(pool, tenant_id, built, Suppressions.of(vault), full=full)


def _latest(current: datetime | None, seen: list[datetime]) -> datetime | None:
    return max([t for t in (current, *seen) if t is not None], default=None)
