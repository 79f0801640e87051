"""RFM segments: recency, frequency and monetary scores (quintiles, 5 = best) in SQL, named by
the usual R x F map (champions, loyal, at risk, hibernating, ...).

Scores are quintiles by rank within the tenant's customers who bought in one currency by `as_of`:
recency = days since the last purchase (fewer is better), frequency = purchase days,
monetary = total spend in micros.
"""

from __future__ import annotations

from datetime import date
from uuid import UUID

import asyncpg
from pydantic import BaseModel

# (segment, R scores, F scores): the common RFM segment map, on R and F only.
SEGMENT_MAP: tuple[tuple[str, str, str], ...] = (
    ("champions", "5", "45"),
    ("loyal_customers", "34", "45"),
    ("cant_lose_them", "12", "5"),
    ("at_risk", "12", "34"),
    ("hibernating", "12", "12"),
    ("about_to_sleep", "3", "12"),
    ("need_attention", "3", "3"),
    ("potential_loyalists", "45", "23"),
    ("promising", "4", "1"),
    ("new_customers", "5", "1"),
)
SEGMENTS = tuple(name for name, _, _ in SEGMENT_MAP)


def _segment_case() -> str:
    """The map as a CASE over r and f; built from the constant above, never from input."""
    arms = [
        f"WHEN r IN ({','.join(rs)}) AND f IN ({','.join(fs)}) THEN '{name}'"
        for name, rs, fs in SEGMENT_MAP
    ]
    return "CASE " + " ".join(arms) + " END"


def _quintile(order: str) -> str:
    """1..5 by rank: tied customers share the score of the first of them (ntile would split
    a tie, e.g. the many one-time buyers, across scores by an arbitrary order)."""
    return f"(1 + 5 * (rank() OVER (ORDER BY {order}) - 1) / count(*) OVER ())::int"


RFM_SQL = f"""
WITH stats AS (
    SELECT customer_id,
           ($2::date - max(occurred_at AT TIME ZONE 'UTC')::date) AS recency_days,
           count(DISTINCT (occurred_at AT TIME ZONE 'UTC')::date) AS frequency,
           sum(amount_micros)::bigint AS monetary_micros
    FROM transactions
    WHERE tenant_id = $1 AND currency = $3
      AND occurred_at < ($2::date + 1)::timestamp AT TIME ZONE 'UTC'
    GROUP BY customer_id
), scored AS (
    SELECT *,
           {_quintile("recency_days DESC")} AS r,
           {_quintile("frequency")} AS f,
           {_quintile("monetary_micros")} AS m
    FROM stats
)
SELECT customer_id, recency_days, frequency, monetary_micros, r, f, m,
       {_segment_case()} AS segment
FROM scored
"""


class RFMCustomer(BaseModel):
    customer_id: str
    recency_days: int
    frequency: int
    monetary_micros: int
    r: int
    f: int
    m: int
    segment: str


class RFMSegmentSummary(BaseModel):
    segment: str
    customers: int
    mean_recency_days: float
    mean_frequency: float
    monetary_micros: int


async def rfm_customers(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    as_of: date,
    currency: str,
    segment: str | None = None,
    limit: int = 100,
    after: str | None = None,
) -> list[RFMCustomer]:
    """Customers with their scores and segment, by customer_id, paged with `after`."""
    rows = await conn.fetch(
        f"""SELECT * FROM ({RFM_SQL}) x
            WHERE ($4::text IS NULL OR segment = $4) AND ($5::text IS NULL OR customer_id > $5)
            ORDER BY customer_id LIMIT $6""",
        tenant_id, as_of, currency, segment, after, limit,
    )  # fmt: skip
    return [RFMCustomer(**dict(r)) for r in rows]


async def rfm_summary(
    conn: asyncpg.Connection, tenant_id: UUID, as_of: date, currency: str
) -> list[RFMSegmentSummary]:
    """Per segment: customers, mean recency and frequency, total spend (micros of currency)."""
    rows = await conn.fetch(
        f"""SELECT segment, count(*) AS customers,
                   avg(recency_days)::float8 AS mean_recency_days,
                   avg(frequency)::float8 AS mean_frequency,
                   sum(monetary_micros)::bigint AS monetary_micros
            FROM ({RFM_SQL}) x GROUP BY segment ORDER BY customers DESC, segment""",
        tenant_id, as_of, currency,
    )  # fmt: skip
    return [RFMSegmentSummary(**dict(r)) for r in rows]
