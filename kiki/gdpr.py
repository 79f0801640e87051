"""A customer's rights over their data: export (access, portability) and erasure, and the
suppression that keeps an erased person out.

Every table that holds a customer's personal data is registered in `CUSTOMER_TABLES`, so one
export or one erasure covers them all; a service that adds such a table adds one line there
(tests/integration/test_gdpr_coverage.py fails on a column that could hold a customer and is
neither registered nor exempted). Each request leaves a `gdpr_audit` row that names the
customer only by a hash, so the trail of an erasure does not keep the erased identifier.

An erasure also writes suppressions (`gdpr_suppressions`): keyed hashes of the customer id and
of the email addresses, phone numbers and CRM records the person had. Every path that could
bring them back asks `Suppressions` first: CRM sync skips their records, ingestion drops
their rows (and counts them), a message to them is refused before anything is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from uuid import UUID

import asyncpg

from kiki.errors import Conflict
from kiki.vault import Vault

if TYPE_CHECKING:
    from kiki.config import Settings

T = TypeVar("T")
IdentifierKind = Literal["customer", "email", "phone", "crm"]
Identifier = tuple[IdentifierKind, str]
KEY_PURPOSE = "kiki gdpr suppression v1"  # the vault's derived key for suppression digests
# Advisory-lock class of a tenant's erasures (the two-int key space, apart from the others).
_ERASURE_LOCK = 0x67647072


@dataclass(frozen=True)
class CustomerTable:
    """A table with personal data, and the columns that say whose it is."""

    table: str
    customer_column: str = "customer_id"
    tenant_column: str = "tenant_id"

    def where(self) -> str:
        """The filter on tenant ($1) and customer ($2); names come only from this registry."""
        return f"{_quote(self.tenant_column)} = $1 AND {_quote(self.customer_column)} = $2"


# Erasure deletes in this order (rows that point to another table's rows first).
CUSTOMER_TABLES: tuple[CustomerTable, ...] = (
    CustomerTable("consent_events"),
    CustomerTable("transactions"),
    CustomerTable("audience_segments"),
    CustomerTable("engage_inbox"),
    CustomerTable("engage_messages"),
    CustomerTable("engage_crm_links"),
    CustomerTable("engage_crm_merges"),
    CustomerTable("engage_customers"),
)


# What else names the person, read before their rows go: each is suppressed with the id, so a
# CRM record of theirs, or a new record with their email or phone, is not imported again.
_IDENTIFIERS = """
    SELECT 'email' AS kind, email AS value FROM engage_customers
        WHERE tenant_id = $1 AND customer_id = $2 AND email IS NOT NULL
    UNION SELECT 'phone', phone FROM engage_customers
        WHERE tenant_id = $1 AND customer_id = $2 AND phone IS NOT NULL
    UNION SELECT 'email', email FROM engage_crm_merges WHERE tenant_id = $1 AND customer_id = $2
    UNION SELECT 'crm', source || ':' || external_id FROM engage_crm_links
        WHERE tenant_id = $1 AND customer_id = $2
    UNION SELECT 'crm', source || ':' || external_id FROM engage_crm_merges
        WHERE tenant_id = $1 AND customer_id = $2"""


class Erased(Conflict):
    """A write or a message names a customer who was erased."""

    code = "customer_erased"


def identifier(kind: IdentifierKind, value: str) -> Identifier:
    """`value` as suppressions compare it: emails without case or surrounding blanks."""
    return kind, value.strip().lower() if kind == "email" else value


class Suppressions:
    """The erased people of every tenant, as HMAC-SHA256 digests of their identifiers under a
    key derived from the vault's (never stored in the database): a digest names the tenant
    and the kind of identifier too, so the same email in two tenants gives two digests."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> Suppressions:
        return cls.of(Vault.from_settings(settings))

    @classmethod
    def of(cls, vault: Vault) -> Suppressions:
        return cls(vault.derive(KEY_PURPOSE))

    def digest(self, tenant_id: UUID, kind: IdentifierKind, value: str) -> bytes:
        kind, value = identifier(kind, value)
        message = f"{tenant_id}\x1f{kind}\x1f{value}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    async def matching(
        self, conn: asyncpg.Connection, tenant_id: UUID, identifiers: Iterable[Identifier]
    ) -> set[Identifier]:
        """Those of `identifiers` (normalized by `identifier`) that name an erased person.

        Ask in the transaction that writes: it holds the tenant's erasure lock shared until
        commit, so an erasure running meanwhile waits for the write and deletes what it wrote,
        or the write waits for the erasure and sees its suppressions."""
        wanted = {self.digest(tenant_id, *i): identifier(*i) for i in identifiers}
        await conn.execute(
            "SELECT pg_advisory_xact_lock_shared($1, hashtext($2::uuid::text))", _ERASURE_LOCK,
            tenant_id,
        )  # fmt: skip
        if not wanted:
            return set()
        rows = await conn.fetch(
            """SELECT digest FROM gdpr_suppressions
               WHERE tenant_id = $1 AND digest = ANY($2::bytea[])""",
            tenant_id, list(wanted),
        )  # fmt: skip
        return {wanted[bytes(r["digest"])] for r in rows}

    async def erased(
        self, conn: asyncpg.Connection, tenant_id: UUID, customer_ids: Iterable[str]
    ) -> set[str]:
        """Those of these customer ids that were erased."""
        found = await self.matching(conn, tenant_id, (("customer", c) for c in set(customer_ids)))
        return {value for _, value in found}

    async def keep(
        self,
        conn: asyncpg.Connection,
        tenant_id: UUID,
        items: Sequence[T],
        customer: Callable[[T], str],
    ) -> tuple[list[T], int]:
        """The items whose customer was not erased, and how many were dropped: a batch goes
        in without them rather than failing whole."""
        return await self.keep_named(conn, tenant_id, items, lambda i: [("customer", customer(i))])

    async def keep_named(
        self,
        conn: asyncpg.Connection,
        tenant_id: UUID,
        items: Sequence[T],
        names: Callable[[T], Iterable[Identifier]],
    ) -> tuple[list[T], int]:
        """The items none of whose identifiers names an erased person, and how many were
        dropped."""
        named = [{identifier(*i) for i in names(item)} for item in items]
        erased = await self.matching(conn, tenant_id, set().union(*named))
        kept = [item for item, its in zip(items, named, strict=True) if not its & erased]
        return kept, len(items) - len(kept)

    async def refuse(self, conn: asyncpg.Connection, tenant_id: UUID, customer_id: str) -> None:
        """Raise Erased (409) when the customer was erased."""
        if await self.erased(conn, tenant_id, [customer_id]):
            raise Erased(
                f"customer {customer_id!r} was erased at their request (GDPR) and is "
                "suppressed: nothing about them is stored or sent again; remove them from the "
                "data you send"
            )

    async def add(
        self,
        conn: asyncpg.Connection,
        tenant_id: UUID,
        identifiers: Iterable[Identifier],
        audit_id: int,
    ) -> None:
        await conn.execute(
            """INSERT INTO gdpr_suppressions (tenant_id, digest, audit_id)
               SELECT $1, d, $3 FROM unnest($2::bytea[]) AS d
               ON CONFLICT (tenant_id, digest) DO NOTHING""",
            tenant_id, sorted({self.digest(tenant_id, *i) for i in identifiers}), audit_id,
        )  # fmt: skip


# A column whose name says it can hold a person or their contact details; each one is in a
# registered table (exported and erased with the row) or exempt below, with the reason.
PERSONAL_COLUMN = re.compile(
    r"customer|e_?mail|phone|mobile|push_token|external_id|(first|last|full)_name|^name$"
    r"|address|birth"
)
_BILLING = (
    "billing's customers are the tenants' business customers (its own namespace of ids), "
    "whose invoices and what they were computed from the law requires to be kept"
)
EXEMPT_COLUMNS: dict[str, str] = {
    **{
        f"{table}.{column}": _BILLING
        for table, column in (
            ("billing_customers", "customer_id"), ("billing_customers", "name"),
            ("billing_customers", "email"), ("billing_customers", "stripe_customer_id"),
            ("billing_customers", "paypal_customer_id"),
            ("billing_subscriptions", "customer_id"), ("billing_invoices", "customer_id"),
            ("billing_events", "customer_id"), ("billing_coupon_redemptions", "customer_id"),
        )
    },
    "tenants.name": "the tenant's account name (a KIKI customer's company), not a person",
    "billing_metrics.name": "the name a tenant gives a billable metric",
    "segments.name": "the name a tenant gives a segment rule",
    "schema_migrations.name": "a migration file's name",
}  # fmt: skip


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def subject_hash(tenant_id: UUID, customer_id: str) -> str:
    """How the audit trail names a customer: findable by whoever knows the id, not reversible."""
    return hashlib.sha256(f"{tenant_id}:{customer_id}".encode()).hexdigest()


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)  # UUID, Decimal (every digit kept), ...


async def _audit(
    conn: asyncpg.Connection,
    action: Literal["export", "erase"],
    tenant_id: UUID,
    customer_id: str,
    requested_by: str,
    counts: dict[str, int],
) -> int:
    return await conn.fetchval(
        """INSERT INTO gdpr_audit (tenant_id, action, subject_hash, requested_by, detail)
           VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING id""",
        tenant_id, action, subject_hash(tenant_id, customer_id), requested_by,
        json.dumps({"tables": counts}),
    )  # fmt: skip


async def export_customer(
    conn: asyncpg.Connection, tenant_id: UUID, customer_id: str, requested_by: str
) -> dict[str, list[dict[str, Any]]]:
    """Every registered table's rows of the customer, read from one snapshot, as JSON-safe
    values; the request is audited in the same transaction."""
    export: dict[str, list[dict[str, Any]]] = {}
    async with conn.transaction(isolation="repeatable_read"):
        for t in CUSTOMER_TABLES:
            rows = await conn.fetch(
                f"SELECT * FROM {_quote(t.table)} WHERE {t.where()}", tenant_id, customer_id
            )
            export[t.table] = [{k: _json_safe(v) for k, v in r.items()} for r in rows]
        counts = {table: len(rows) for table, rows in export.items()}
        await _audit(conn, "export", tenant_id, customer_id, requested_by, counts)
    return export


async def erase_customer(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    customer_id: str,
    requested_by: str,
    suppressions: Suppressions,
) -> dict[str, int]:
    """Delete the customer from every registered table, suppress them and audit it, all or
    nothing; returns the rows deleted per table (zeros for a customer already gone)."""
    counts: dict[str, int] = {}
    async with conn.transaction():
        # Writes that checked the suppressions before this commits land first, then go here.
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2::uuid::text))", _ERASURE_LOCK, tenant_id
        )
        found = await conn.fetch(_IDENTIFIERS, tenant_id, customer_id)
        identifiers = [("customer", customer_id), *((r["kind"], r["value"]) for r in found)]
        for t in CUSTOMER_TABLES:
            status = await conn.execute(
                f"DELETE FROM {_quote(t.table)} WHERE {t.where()}", tenant_id, customer_id
            )
            counts[t.table] = int(status.rsplit(" ", 1)[1])
        audit_id = await _audit(conn, "erase", tenant_id, customer_id, requested_by, counts)
        await suppressions.add(conn, tenant_id, identifiers, audit_id)
    return counts
