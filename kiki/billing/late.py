"""Late usage: events received after their period was invoiced. They are billed on the next
invoice as adjustment lines: the period's charge recomputed with every event minus what it was
with the events the earlier invoice saw, so tiers stay right. Late events of a subscription
that has ended are not billed (the caller counts them as unbilled)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from uuid import UUID

import asyncpg

from kiki.billing import repository
from kiki.billing.aggregation import Event, usage
from kiki.billing.catalog import BillableMetric, Plan
from kiki.billing.invoice import InvoiceLine, LineKind, usage_lines
from kiki.billing.metering import events_of
from kiki.billing.models import Subscription
from kiki.billing.periods import BillingPeriod, period_for

# Plans by (code, version).
Plans = dict[tuple[str, int], Plan]


async def late_lines(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    subs: list[Subscription],
    plans: Plans,
    catalog: dict[str, BillableMetric],
) -> tuple[dict[UUID, list[InvoiceLine]], tuple[int, int]]:
    """Adjustment lines for events received since each subscription's last close that
    belong to periods already invoiced."""
    lines: dict[UUID, list[InvoiceLine]] = defaultdict(list)
    closed = [s for s in subs if s.last_closed_at is not None]
    if not closed:
        return lines, (0, 0)
    found = await events_of(
        conn, tenant_id, [s.customer_id for s in closed],
        min(s.started_at for s in closed), max(s.period_start for s in closed),
        received_after=min(s.last_closed_at for s in closed if s.last_closed_at),
    )  # fmt: skip
    billed = unbilled = 0
    for sub in closed:
        last = sub.last_closed_at
        late = [
            s.event
            for s in found.get(sub.customer_id, [])
            if last is not None
            and s.received_at > last
            and sub.started_at <= s.event.timestamp < sub.period_start
        ]
        by_period: dict[int, list[Event]] = defaultdict(list)
        plan = plans[(sub.plan_code, sub.plan_version)]
        for event in late:
            index = period_for(sub.anchor, plan.interval, sub.timezone, event.timestamp).index
            by_period[index].append(event)
        for index, events in sorted(by_period.items()):
            adjustments = await _adjust(conn, tenant_id, plans, catalog, sub, plan, index)
            if adjustments is None:
                unbilled += len(events)
                continue
            billed += len(events)
            lines[sub.id].extend(adjustments)
    return lines, (billed, unbilled)


async def _adjust(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    plans: Plans,
    catalog: dict[str, BillableMetric],
    sub: Subscription,
    plan: Plan,
    index: int,
) -> list[InvoiceLine] | None:
    """Period `index`'s usage lines priced with all its events minus with those its
    invoice saw; None when the period has no invoice to adjust."""
    period = BillingPeriod(
        anchor=sub.anchor, interval=plan.interval, timezone=sub.timezone, index=index
    )
    billed_with = await conn.fetchrow(
        """SELECT plan_code, plan_version FROM billing_invoices
           WHERE subscription_id = $1 AND period_start = $2""",
        sub.id,
        period.start,
    )
    if billed_with is None:
        return None
    key = (billed_with["plan_code"], billed_with["plan_version"])
    priced = plans.get(key) or (await repository.plans(conn, tenant_id, [key]))[key]
    stored = (await events_of(conn, tenant_id, [sub.customer_id], period.start, period.end)).get(
        sub.customer_id, []
    )
    metrics = [catalog[c.metric_code] for c in priced.charges]
    seen = [s.event for s in stored if s.received_at <= (sub.last_closed_at or s.received_at)]
    before = usage_lines(priced, usage(metrics, seen, period))
    now = usage_lines(priced, usage(metrics, [s.event for s in stored], period))
    out = []
    for old, new in zip(before, now, strict=True):
        if new.amount_minor != old.amount_minor or new.units != old.units:
            out.append(
                InvoiceLine(
                    kind=LineKind.ADJUSTMENT,
                    description=(
                        f"late usage of {new.metric_code}, {period.start_date} to {period.end_date}"
                    ),
                    amount_minor=new.amount_minor - old.amount_minor,
                    metric_code=new.metric_code,
                    units=(new.units or Decimal(0)) - (old.units or Decimal(0)),
                )
            )
    return out
