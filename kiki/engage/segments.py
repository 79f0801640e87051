"""Segments: named rules stored per tenant and evaluated in PostgreSQL.

Evaluation builds one relation `people` (every customer with a purchase or a contact profile:
purchase statistics as of a day in one currency, profile fields, RFM segment) and filters it
with the rule compiled by kiki.engage.rules; its bind values follow the fixed ones.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Annotated
from uuid import UUID

import asyncpg
from pydantic import BaseModel, Field

from kiki.db.values import PgText
from kiki.engage.rfm import RFM_SQL
from kiki.engage.rules import Rule, compile_rule
from kiki.errors import Conflict, NotFound

SegmentId = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$", description="a-z, 0-9, _ and -")]

# $1 tenant, $2 as_of (a day), $3 currency; the rule's parameters start at $4.
PEOPLE_SQL = f"""
WITH stats AS (
    SELECT customer_id,
           count(*) FILTER (WHERE currency = $3) AS orders,
           count(DISTINCT (occurred_at AT TIME ZONE 'UTC')::date) AS purchases,
           sum(amount_micros) FILTER (WHERE currency = $3)::bigint AS spend_micros,
           min(occurred_at AT TIME ZONE 'UTC')::date AS first_purchase,
           max(occurred_at AT TIME ZONE 'UTC')::date AS last_purchase
    FROM transactions
    WHERE tenant_id = $1 AND occurred_at < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'
    GROUP BY customer_id
), rfm AS ({RFM_SQL}
), people AS (
    SELECT coalesce(s.customer_id, c.customer_id) AS customer_id,
           coalesce(s.purchases, 0) AS purchases,
           coalesce(s.spend_micros, 0) AS spend_micros,
           s.spend_micros / nullif(s.orders, 0) AS avg_order_micros,
           $2::date - s.last_purchase AS days_since_last,
           $2::date - s.first_purchase AS days_since_first,
           s.first_purchase, s.last_purchase, r.segment AS rfm_segment,
           c.email, c.phone, c.first_name, c.push_token,
           coalesce(c.attributes, '{{}}'::jsonb) AS attributes
    FROM stats s
    FULL JOIN (SELECT * FROM engage_customers WHERE tenant_id = $1) c
        ON c.customer_id = s.customer_id
    LEFT JOIN rfm r ON r.customer_id = s.customer_id
)
"""


class SegmentIn(BaseModel):
    name: PgText = Field(min_length=1, max_length=200)
    rule: Rule


class Segment(SegmentIn):
    segment_id: str
    created_at: datetime
    updated_at: datetime


def _segment(row: asyncpg.Record) -> Segment:
    return Segment(
        segment_id=row["segment_id"],
        name=row["name"],
        rule=json.loads(row["rule"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _rule_json(rule: Rule) -> str:
    compile_rule(rule)  # refuse a rule that cannot be evaluated before it is stored
    return rule.model_dump_json(by_alias=True, exclude_none=False)


async def create(
    conn: asyncpg.Connection, tenant_id: UUID, segment_id: str, body: SegmentIn
) -> Segment:
    row = await conn.fetchrow(
        """INSERT INTO segments (tenant_id, segment_id, name, rule) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING RETURNING *""",
        tenant_id, segment_id, body.name, _rule_json(body.rule),
    )  # fmt: skip
    if row is None:
        raise Conflict(f"segment {segment_id} exists: PUT /segments/{segment_id} to change it")
    return _segment(row)


async def replace(
    conn: asyncpg.Connection, tenant_id: UUID, segment_id: str, body: SegmentIn
) -> Segment:
    row = await conn.fetchrow(
        """UPDATE segments SET name = $3, rule = $4, updated_at = now()
           WHERE tenant_id = $1 AND segment_id = $2 RETURNING *""",
        tenant_id, segment_id, body.name, _rule_json(body.rule),
    )  # fmt: skip
    if row is None:
        raise NotFound(f"no segment {segment_id}; create it with POST /segments")
    return _segment(row)


async def get(conn: asyncpg.Connection, tenant_id: UUID, segment_id: str) -> Segment:
    row = await conn.fetchrow(
        "SELECT * FROM segments WHERE tenant_id = $1 AND segment_id = $2", tenant_id, segment_id
    )
    if row is None:
        raise NotFound(f"no segment {segment_id}; GET /segments lists yours")
    return _segment(row)


async def list_segments(conn: asyncpg.Connection, tenant_id: UUID) -> list[Segment]:
    rows = await conn.fetch(
        "SELECT * FROM segments WHERE tenant_id = $1 ORDER BY segment_id", tenant_id
    )
    return [_segment(r) for r in rows]


async def delete(conn: asyncpg.Connection, tenant_id: UUID, segment_id: str) -> None:
    status = await conn.execute(
        "DELETE FROM segments WHERE tenant_id = $1 AND segment_id = $2", tenant_id, segment_id
    )
    if status == "DELETE 0":
        raise NotFound(f"no segment {segment_id}")


class Members(BaseModel):
    total: int
    customer_ids: list[str]
    next_after: str | None


async def evaluate(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    rule: Rule,
    as_of: date,
    currency: str = "USD",
    limit: int = 1000,
    after: str | None = None,
) -> Members:
    """The customers the rule holds for, by customer_id from `after`, and how many in all."""
    compiled = compile_rule(rule, first_param=4)
    fixed = [tenant_id, as_of, currency]
    page = len(compiled.params) + 4
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval(
            f"{PEOPLE_SQL} SELECT count(*) FROM people WHERE {compiled.sql}",
            *fixed,
            *compiled.params,
        )
        rows = await conn.fetch(
            f"""{PEOPLE_SQL} SELECT customer_id FROM people
                WHERE {compiled.sql} AND (${page}::text IS NULL OR customer_id > ${page}::text)
                ORDER BY customer_id LIMIT ${page + 1}::int""",
            *fixed,
            *compiled.params,
            after,
            limit,
        )
    ids = [r["customer_id"] for r in rows]
    return Members(total=total, customer_ids=ids, next_after=ids[-1] if len(ids) == limit else None)
