"""A customer's rights over their data: export (access, portability) and erasure.

Every table that holds a customer's personal data is registered in `CUSTOMER_TABLES`, so one
export or one erasure covers them all; a service that adds such a table adds one line there.
Each request leaves a `gdpr_audit` row that names the customer only by a hash, so the trail of
an erasure does not keep the erased identifier.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Literal
from uuid import UUID

import asyncpg


@dataclass(frozen=True)
class CustomerTable:
    """A table with personal data, and the columns that say whose it is."""

    table: str
    customer_column: str = "customer_id"
    tenant_column: str = "tenant_id"

    def where(self) -> str:
        """The filter on tenant ($1) and customer ($2); names come only from this registry."""
        return f"{_quote(self.tenant_column)} = $1 AND {_quote(self.customer_column)} = $2"


# Billing's customers are the tenants' business customers, whose invoices the law requires to
# be kept; they are not registered here. Erasure deletes in this order (rows that point to
# another table's rows first).
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
) -> None:
    await conn.execute(
        """INSERT INTO gdpr_audit (tenant_id, action, subject_hash, requested_by, detail)
           VALUES ($1, $2, $3, $4, $5::jsonb)""",
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
    conn: asyncpg.Connection, tenant_id: UUID, customer_id: str, requested_by: str
) -> dict[str, int]:
    """Delete the customer from every registered table and audit it, all or nothing; returns
    the rows deleted per table (zeros for a customer already gone)."""
    counts: dict[str, int] = {}
    async with conn.transaction():
        for t in CUSTOMER_TABLES:
            status = await conn.execute(
                f"DELETE FROM {_quote(t.table)} WHERE {t.where()}", tenant_id, customer_id
            )
            counts[t.table] = int(status.rsplit(" ", 1)[1])
        await _audit(conn, "erase", tenant_id, customer_id, requested_by, counts)
    return counts
