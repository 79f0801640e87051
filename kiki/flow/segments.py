"""Audience segments: the customers an ad group targets (table `audience_segments`)."""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

import asyncpg

from kiki.gdpr import Suppressions

# Enough members to value a segment to within a few percent; larger segments are sampled by
# a stable hash of the customer id, so the sample does not change from one call to the next.
MAX_MEMBERS_VALUED = 2_000


async def replace_members(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    segment_id: str,
    customer_ids: list[str],
    suppressions: Suppressions,
) -> tuple[int, int]:
    """Set a segment's members (all of them, in one transaction), less customers erased at
    their request. Returns the members and the erased ids dropped."""
    async with conn.transaction():
        unique, suppressed = await suppressions.keep(
            conn, tenant_id, sorted(set(customer_ids)), str
        )
        await conn.execute(
            "DELETE FROM audience_segments WHERE tenant_id = $1 AND segment_id = $2",
            tenant_id,
            segment_id,
        )
        await conn.copy_records_to_table(
            "audience_segments",
            columns=("tenant_id", "segment_id", "customer_id"),
            records=[(tenant_id, segment_id, c) for c in unique],
        )
    return len(unique), suppressed


async def member_count(conn: asyncpg.Connection, tenant_id: UUID, segment_id: str) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM audience_segments WHERE tenant_id = $1 AND segment_id = $2",
        tenant_id,
        segment_id,
    )


async def members(
    conn: asyncpg.Connection, tenant_id: UUID, segment_ids: list[str]
) -> dict[str, list[str]]:
    """Up to MAX_MEMBERS_VALUED members of each segment (a stable sample)."""
    rows = await conn.fetch(
        """SELECT segment_id, customer_id FROM (
               SELECT segment_id, customer_id, row_number() OVER (
                   PARTITION BY segment_id ORDER BY md5(customer_id)) AS n
               FROM audience_segments WHERE tenant_id = $1 AND segment_id = ANY($2)
           ) s WHERE n <= $3""",
        tenant_id,
        segment_ids,
        MAX_MEMBERS_VALUED,
    )
    out: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        out[r["segment_id"]].append(r["customer_id"])
    return dict(out)
