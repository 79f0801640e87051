"""Subscriptions: create, upgrade (now, prorated), downgrade (at period end), cancel.

Renewal is closing a period (kiki.billing.closing): the subscription moves to its next period
and pending downgrades and cancellations take effect there. Prorations of a change are billed
on the subscription's next invoice, as Stripe's default `create_prorations` does; an
immediate cancellation issues that final invoice at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from kiki.billing import repository
from kiki.billing.catalog import Plan
from kiki.billing.invoice import base_fee_line, plan_change_lines
from kiki.billing.models import Subscription, SubscriptionStatus
from kiki.billing.periods import BillingPeriod, local_date, period_for
from kiki.billing.proration import (
    ChangeKind,
    PlanChange,
    cancel,
    change_plan,
    days_remaining,
    fee_for_days,
)
from kiki.errors import Conflict, FailedPrecondition, InvalidInput


def billing_since(sub: Subscription) -> datetime:
    """From when the current plan's base fee is due: its start, or the trial's end."""
    trial_end = sub.trial_ends_at or sub.plan_since
    return max(sub.plan_since, trial_end)


def current_period(sub: Subscription, plan: Plan) -> BillingPeriod:
    return BillingPeriod(
        anchor=sub.anchor, interval=plan.interval, timezone=sub.timezone, index=sub.period_index
    )


async def create(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    customer_id: str,
    plan_code: str,
    plan_version: int | None,
    start: datetime,
) -> Subscription:
    """Start a subscription at `start`; periods are anchored on that day in the customer's
    time zone. A pay-in-advance plan bills its first period's fee on the first invoice."""
    async with conn.transaction():
        customer = await repository.get_customer(conn, tenant_id, customer_id, for_update=True)
        plan = await repository.get_plan(conn, tenant_id, plan_code, plan_version)
        if plan.currency != customer.currency:
            raise InvalidInput(
                f"plan {plan.code!r} bills in {plan.currency}, customer {customer_id!r} in "
                f"{customer.currency}; choose a plan in the customer's currency"
            )
        anchor = local_date(start, customer.timezone)
        period = period_for(anchor, plan.interval, customer.timezone, start)
        trial_end = start + timedelta(days=plan.trial_days) if plan.trial_days else None
        try:
            row = await conn.fetchrow(
                f"""INSERT INTO billing_subscriptions (tenant_id, customer_id, status, plan_code,
                        plan_version, plan_since, started_at, trial_ends_at, anchor, timezone,
                        period_index, period_start, period_end)
                    VALUES ($1, $2, 'active', $3, $4, $5, $5, $6, $7, $8, 0, $9, $10)
                    RETURNING {repository.SUBSCRIPTION_COLUMNS}""",
                tenant_id, customer_id, plan.code, plan.version, start, trial_end, anchor,
                customer.timezone, period.start, period.end,
            )  # fmt: skip
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"customer {customer_id!r} already has an active subscription; change its plan "
                "(upgrade / downgrade) or cancel it first"
            ) from None
        sub = Subscription(**dict(row))
        await _open_plan(conn, tenant_id, sub.id, plan, start)
        if plan.pay_in_advance and plan.base_fee_minor:
            first = base_fee_line(plan, period, bill_from=billing_since(sub))
            await repository.add_pending_lines(conn, tenant_id, sub.id, [first])
    return sub


async def _open_plan(
    conn: asyncpg.Connection, tenant_id: UUID, sub_id: UUID, plan: Plan, at: datetime
) -> None:
    """Record the plan a subscription is on from `at` (MRR history), ending the previous one."""
    await _end_plan(conn, sub_id, at)
    await conn.execute(
        """INSERT INTO billing_subscription_plans
               (subscription_id, tenant_id, plan_code, plan_version, valid_from)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (subscription_id, valid_from) DO UPDATE
           SET plan_code = EXCLUDED.plan_code, plan_version = EXCLUDED.plan_version""",
        sub_id, tenant_id, plan.code, plan.version, at,
    )  # fmt: skip


async def _end_plan(conn: asyncpg.Connection, sub_id: UUID, at: datetime) -> None:
    await conn.execute(
        """UPDATE billing_subscription_plans SET valid_to = $2
           WHERE subscription_id = $1 AND valid_to IS NULL""",
        sub_id,
        at,
    )


async def _active(conn: asyncpg.Connection, tenant_id: UUID, sub_id: UUID) -> Subscription:
    sub = await repository.get_subscription(conn, tenant_id, sub_id, for_update=True)
    if sub.status is not SubscriptionStatus.ACTIVE:
        raise FailedPrecondition(f"subscription {sub_id} is {sub.status}; start a new one")
    return sub


async def change(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    sub_id: UUID,
    plan_code: str,
    plan_version: int | None,
    at: datetime,
    expected: ChangeKind,
) -> tuple[Subscription, PlanChange]:
    """Move to another plan: an upgrade at `at`, its prorations on the next invoice; a
    downgrade recorded for the end of the period. `expected` guards against a surprise."""
    async with conn.transaction():
        sub = await _active(conn, tenant_id, sub_id)
        old = await repository.get_plan(conn, tenant_id, sub.plan_code, sub.plan_version)
        new = await repository.get_plan(conn, tenant_id, plan_code, plan_version)
        if (old.code, old.version) == (new.code, new.version):
            raise Conflict(f"subscription {sub_id} is already on {new.code} v{new.version}")
        period = current_period(sub, old)
        proration = change_plan(old, new, period, at)
        if proration.kind is not expected:
            raise Conflict(
                f"{old.code} v{old.version} -> {new.code} v{new.version} is a "
                f"{proration.kind.value} (base fee {old.base_fee_minor} -> {new.base_fee_minor}"
                f" minor units); call /{proration.kind.value} instead"
            )
        if proration.kind is ChangeKind.DOWNGRADE:
            row = await conn.fetchrow(
                f"""UPDATE billing_subscriptions
                    SET pending_plan_code = $2, pending_plan_version = $3
                    WHERE id = $1 RETURNING {repository.SUBSCRIPTION_COLUMNS}""",
                sub_id, new.code, new.version,
            )  # fmt: skip
            return Subscription(**dict(row)), proration
        proration = _from_plan_start(proration, old, period, billing_since(sub))
        await repository.add_pending_lines(
            conn, tenant_id, sub_id, plan_change_lines(proration, old, new)
        )
        row = await conn.fetchrow(
            f"""UPDATE billing_subscriptions
                SET plan_code = $2, plan_version = $3, plan_since = $4,
                    pending_plan_code = NULL, pending_plan_version = NULL
                WHERE id = $1 RETURNING {repository.SUBSCRIPTION_COLUMNS}""",
            sub_id, new.code, new.version, at,
        )  # fmt: skip
        await _open_plan(conn, tenant_id, sub_id, new, at)
        return Subscription(**dict(row)), proration


def _from_plan_start(
    proration: PlanChange, old: Plan, period: BillingPeriod, since: datetime
) -> PlanChange:
    """An arrears plan that started billing inside this period (an earlier change, a trial)
    has earned only the days since then, not the whole period up to the change."""
    if since <= period.start:
        return proration
    served = max(days_remaining(period, since) - proration.days_remaining, 0)
    return proration.model_copy(
        update={"used_old_minor": fee_for_days(old.base_fee_minor, period, served)}
    )


async def cancel_subscription(
    conn: asyncpg.Connection, tenant_id: UUID, sub_id: UUID, at: datetime, *, immediately: bool
) -> Subscription:
    """Cancel at the end of the period, or now: the period then ends at `at`, with the
    base fee prorated, and the caller closes it (a final invoice)."""
    async with conn.transaction():
        sub = await _active(conn, tenant_id, sub_id)
        plan = await repository.get_plan(conn, tenant_id, sub.plan_code, sub.plan_version)
        period = current_period(sub, plan)
        proration = cancel(plan, period, at, immediately=immediately)
        if immediately:
            proration = _from_plan_start(proration, plan, period, billing_since(sub))
            await repository.add_pending_lines(
                conn, tenant_id, sub_id, plan_change_lines(proration, plan, plan)
            )
            await _end_plan(conn, sub_id, at)
        row = await conn.fetchrow(
            f"""UPDATE billing_subscriptions
                SET cancel_at_period_end = true, canceled_at = $2, period_end = $3,
                    pending_plan_code = NULL, pending_plan_version = NULL
                WHERE id = $1 RETURNING {repository.SUBSCRIPTION_COLUMNS}""",
            sub_id, at, at if immediately else sub.period_end,
        )  # fmt: skip
    return Subscription(**dict(row))


async def resume(conn: asyncpg.Connection, tenant_id: UUID, sub_id: UUID) -> Subscription:
    """Undo a cancellation at period end: the subscription renews again."""
    async with conn.transaction():
        sub = await _active(conn, tenant_id, sub_id)
        plan = await repository.get_plan(conn, tenant_id, sub.plan_code, sub.plan_version)
        if not sub.cancel_at_period_end or sub.period_end != current_period(sub, plan).end:
            raise FailedPrecondition(
                f"subscription {sub_id} is not waiting to end at its period end"
            )
        row = await conn.fetchrow(
            f"""UPDATE billing_subscriptions SET cancel_at_period_end = false, canceled_at = NULL
                WHERE id = $1 RETURNING {repository.SUBSCRIPTION_COLUMNS}""",
            sub_id,
        )
    return Subscription(**dict(row))
