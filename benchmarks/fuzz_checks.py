"""What the fuzz checks besides the status: every error in the one shape, and nothing written
by a request that was refused.

The second needs a fingerprint of one tenant's data that is cheap enough to take before and
after every request: for each table with a `tenant_id` column (found in information_schema,
so new tables are covered without listing them), the tenant's row count and the newest
`xmin` (the id of the transaction that wrote a row version: an INSERT or UPDATE raises it, a
DELETE lowers the count), in one query. A refused request whose fingerprints differ wrote
something.

Some writers of the fuzz tenant's rows run in the background, not in the request, and are
left out here, each for the reason given in BACKGROUND; the usage meters of the replicas
write under the platform's own billing tenant, never the fuzz tenant's, and need nothing.
"""

from __future__ import annotations

import json
from uuid import UUID

import asyncpg

# table -> (the rows to compare: a WHERE clause on top of the tenant's, "count" to compare
# only the row count, or None to leave the table out; why).
BACKGROUND: dict[str, tuple[str | None, str]] = {
    "flow_decisions": (None, "the bid loop's audit trail of running campaigns; no route writes it"),
    "budget_ledger": (
        "kind <> 'expired' AND coalesce(idempotency_key, '') NOT LIKE 'lease:%' "
        "AND coalesce(idempotency_key, '') NOT LIKE 'commit:%'",
        "the bid loop renews its budget leases (idempotency keys lease:... and commit:...) and "
        "the budget actors expire unclaimed reservations; every other row is a request's",
    ),
    "billing_webhook_deliveries": (
        "count",
        "the billing worker updates delivery attempts (never inserts or deletes a delivery)",
    ),
    "api_keys": (None, "authenticating a request may record the key's last use"),
}

Fingerprint = dict[str, tuple[int, int]]


def shape_problem(status: int, content_type: str, body: bytes) -> str | None:
    """Why an answer >= 400 is not `{"error": {"code": str, "message": str}}`; None if it is.
    A HEAD answer has no body to check."""
    if status < 400:
        return None
    if not content_type.startswith("application/json"):
        return f"content-type {content_type or 'missing'}, not application/json"
    try:
        data = json.loads(body)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(data, dict) or set(data) != {"error"}:
        return 'not an object with the one key "error"'
    error = data["error"]
    if not isinstance(error, dict):
        return '"error" is not an object'
    missing = [k for k in ("code", "message") if not isinstance(error.get(k), str)]
    return f'"error" lacks a string {" and ".join(missing)}' if missing else None


class TenantFingerprint:
    """The one query that fingerprints a tenant's rows, built once from the schema."""

    def __init__(self, query: str, tables: list[str], tenant_id: UUID) -> None:
        self.query, self.tables, self.tenant_id = query, tables, tenant_id

    @classmethod
    async def build(cls, conn: asyncpg.Connection, tenant_id: UUID) -> TenantFingerprint:
        rows = await conn.fetch(
            """SELECT c.table_name FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_schema, table_name)
               WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id'
                 AND t.table_type = 'BASE TABLE'
                 AND c.table_name NOT IN (SELECT relname FROM pg_class WHERE relispartition)
               ORDER BY c.table_name"""
        )
        parts, tables = [], []
        for (table,) in rows:
            rule, _ = BACKGROUND.get(table, ("", ""))
            if rule is None:
                continue
            newest = "0" if rule == "count" else "coalesce(max(xmin::text::bigint), 0)"
            where = f" AND ({rule})" if rule and rule != "count" else ""
            # Table names come from the catalogue, values are bound ($1): nothing is spliced
            # from input.
            parts.append(
                f"SELECT '{table}', count(*), {newest} FROM {table} "  # nosec B608
                f"WHERE tenant_id = $1{where}"
            )
            tables.append(table)
        return cls(" UNION ALL ".join(parts), tables, tenant_id)

    async def take(self, conn: asyncpg.Connection) -> Fingerprint:
        return {r[0]: (r[1], r[2]) for r in await conn.fetch(self.query, self.tenant_id)}


def changed(before: Fingerprint, after: Fingerprint) -> list[str]:
    """The tables whose rows of the tenant differ, each as `table (rows a->b)`."""
    out = []
    for table, was in before.items():
        now = after.get(table, was)
        if now != was:
            out.append(f"{table} (rows {was[0]}->{now[0]})")
    return out
