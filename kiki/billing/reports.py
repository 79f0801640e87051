"""Revenue and usage analytics from the database, computed by kiki.billing.analytics.

MRR counts recurring base fees only (usage is not recurring revenue), of subscriptions on a
plan at the instant (from `billing_subscription_plans`) and past any trial. Months are
calendar months in UTC: the report of a month compares the snapshot at its first instant with
the one at the first instant of the next month.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

import asyncpg

from kiki.billing.analytics import (
    MrrMovements,
    Snapshot,
    arpu,
    movements,
    mrr,
    mrr_by_customer,
    net_revenue_retention,
)
from kiki.billing.catalog import Aggregation, FrozenModel, Plan
from kiki.billing.repository import metrics
from kiki.errors import InvalidInput, NotFound


class MrrReport(FrozenModel):
    month: str
    currency: str
    mrr_minor: int
    arr_minor: int
    arpu_minor: int
    paying_customers: int
    movements: MrrMovements
    net_revenue_retention_percent: Decimal | None


def parse_month(text: str) -> date:
    """The first day of a YYYY-MM month; a month that does not exist, or whose next month
    does not (the report reads up to it), is a ValueError that says what to send."""
    try:
        day = date.fromisoformat(f"{text}-01")
        next_month(day)
    except ValueError:
        raise ValueError(f"{text!r} is not a month from 0001-01 to 9999-11 (YYYY-MM)") from None
    return day


def month_start(day: date) -> datetime:
    return datetime(day.year, day.month, 1, tzinfo=UTC)


def months_up_to(day: date, count: int) -> list[date]:
    """The first days of the `count` months ending with day's, oldest first."""
    index = day.year * 12 + day.month - 1
    if index - count + 1 < 12:
        raise InvalidInput(f"{count} months up to {day:%Y-%m} start before 0001-01: ask fewer")
    return [date((i // 12), i % 12 + 1, 1) for i in range(index - count + 1, index + 1)]


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


async def snapshots(conn: asyncpg.Connection, tenant_id: UUID, at: datetime) -> list[Snapshot]:
    """Each paying subscription's recurring fee at `at`."""
    rows = await conn.fetch(
        """SELECT s.customer_id, p.spec::text AS spec
           FROM billing_subscription_plans h
           JOIN billing_subscriptions s ON s.id = h.subscription_id
           JOIN billing_plans p ON p.tenant_id = h.tenant_id AND p.code = h.plan_code
                                AND p.version = h.plan_version
           WHERE h.tenant_id = $1 AND h.valid_from <= $2
             AND (h.valid_to IS NULL OR h.valid_to > $2)
             AND (s.trial_ends_at IS NULL OR s.trial_ends_at <= $2)""",
        tenant_id,
        at,
    )
    found = []
    for r in rows:
        plan = Plan.model_validate_json(r["spec"])
        found.append(
            Snapshot(
                customer=r["customer_id"],
                amount_minor=plan.base_fee_minor,
                interval=plan.interval,
                currency=plan.currency,
            )
        )
    return found


async def mrr_report(conn: asyncpg.Connection, tenant_id: UUID, month: date) -> list[MrrReport]:
    """The month's MRR movements, one report per currency billed."""
    start, end = month_start(month), month_start(next_month(month))
    before, after = await snapshots(conn, tenant_id, start), await snapshots(conn, tenant_id, end)
    past = await conn.fetch(
        """SELECT DISTINCT s.customer_id FROM billing_subscription_plans h
           JOIN billing_subscriptions s ON s.id = h.subscription_id
           WHERE h.tenant_id = $1 AND h.valid_from < $2""",
        tenant_id,
        start,
    )
    past_customers = {r["customer_id"] for r in past}
    reports = []
    for currency in sorted({s.currency for s in [*before, *after]}):
        previous = [s for s in before if s.currency == currency]
        current = [s for s in after if s.currency == currency]
        total = mrr(current)
        reports.append(
            MrrReport(
                month=f"{month.year:04d}-{month.month:02d}",
                currency=currency,
                mrr_minor=total,
                arr_minor=12 * total,
                arpu_minor=arpu(current),
                paying_customers=len(mrr_by_customer(current)),
                movements=movements(previous, current, past_customers=past_customers),
                net_revenue_retention_percent=net_revenue_retention(previous, current),
            )
        )
    return reports


class Granularity(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class UsagePoint(FrozenModel):
    start: datetime
    events: int
    quantity: Decimal


_AGGREGATE = {
    Aggregation.COUNT: "count(*)::numeric",
    Aggregation.SUM: "coalesce(sum((properties->>$7)::numeric), 0)",
    Aggregation.MAX: "coalesce(max((properties->>$7)::numeric), 0)",
    Aggregation.UNIQUE_COUNT: "count(DISTINCT properties->>$7)::numeric",
    Aggregation.LATEST: """coalesce((array_agg((properties->>$7)::numeric
                             ORDER BY occurred_at DESC, transaction_id DESC)
                             FILTER (WHERE properties->>$7 IS NOT NULL))[1], 0)""",
}


async def usage_series(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    metric_code: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    customer_id: str | None = None,
) -> list[UsagePoint]:
    """A metric's aggregate per day, week or month (UTC) over every customer, or one."""
    if end <= start:
        raise InvalidInput("`to` must be after `from`")
    metric = (await metrics(conn, tenant_id)).get(metric_code)
    if metric is None:
        raise NotFound(f"no billable metric {metric_code!r}")
    field = [] if metric.aggregation is Aggregation.COUNT else [metric.field_name]
    rows = await conn.fetch(
        f"""SELECT date_trunc($5, occurred_at, 'UTC') AS bucket, count(*) AS events,
                   {_AGGREGATE[metric.aggregation]} AS quantity
            FROM billing_events
            WHERE tenant_id = $1 AND metric_code = $2 AND occurred_at >= $3 AND occurred_at < $4
              AND ($6::text IS NULL OR customer_id = $6)
            GROUP BY bucket ORDER BY bucket""",
        tenant_id, metric_code, start, end, granularity.value, customer_id, *field,
    )  # fmt: skip
    return [UsagePoint(start=r["bucket"], events=r["events"], quantity=r["quantity"]) for r in rows]
