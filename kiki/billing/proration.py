"""Plan changes and cancellations inside a billing period, prorated by days.

Proration is by whole days in the customer's time zone (like Stripe's day-based option, not
by seconds): the day of a change belongs to the new plan, so a change on the first day of the
period leaves every day to the new plan and a change on the last day leaves one. A fee's share
of the remaining days is `fee × remaining / days in period`, rounded half up once.

An upgrade (a new base fee at least the old one) takes effect at once; a downgrade at the end
of the period, so nothing is prorated; a cancellation at the end of the period, or at once if
asked. Both plans must share currency and interval: an interval change starts a new
subscription.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from kiki.billing.catalog import FrozenModel, Plan
from kiki.billing.periods import BillingPeriod, local_date
from kiki.billing.rounding import share
from kiki.errors import InvalidInput


class ChangeKind(StrEnum):
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    CANCEL = "cancel"


class PlanChange(FrozenModel):
    """When a change takes effect and the base-fee shares it leaves, in minor units.

    `unused_old_minor` is what a plan paid in advance owes back for the days it will not
    serve; `used_old_minor` is what a plan paid in arrears has earned for the days it served
    (the two always add up to its fee); `new_remaining_minor` is the new plan's fee for the
    days left.
    """

    kind: ChangeKind
    effective_at: datetime
    days_in_period: int
    days_remaining: int
    unused_old_minor: int
    used_old_minor: int
    new_remaining_minor: int


def days_remaining(period: BillingPeriod, at: datetime) -> int:
    """Days from the local day of `at` (included) to the end of the period, within 0..days."""
    day = local_date(at, period.timezone)
    return min(max((period.end_date - day).days, 0), period.days)


def fee_for_days(fee_minor: int, period: BillingPeriod, days: int) -> int:
    """A period's fee for `days` of it, rounded half up."""
    return share(fee_minor, days, period.days)


def change_plan(old: Plan, new: Plan, period: BillingPeriod, at: datetime) -> PlanChange:
    """Switch from `old` to `new` at `at`: an upgrade now, a downgrade at period end."""
    if (old.currency, old.interval) != (new.currency, new.interval):
        raise InvalidInput(
            "a plan change keeps the currency and the interval; start a new subscription instead"
        )
    if new.base_fee_minor < old.base_fee_minor:
        return _at_period_end(ChangeKind.DOWNGRADE, old, period)
    return _now(ChangeKind.UPGRADE, old, new.base_fee_minor, period, at)


def cancel(plan: Plan, period: BillingPeriod, at: datetime, *, immediately: bool) -> PlanChange:
    """End the subscription at period end, or at `at` with the unused days prorated."""
    if immediately:
        return _now(ChangeKind.CANCEL, plan, 0, period, at)
    return _at_period_end(ChangeKind.CANCEL, plan, period)


def _now(
    kind: ChangeKind, old: Plan, new_fee_minor: int, period: BillingPeriod, at: datetime
) -> PlanChange:
    if not period.contains(at):
        raise InvalidInput(f"{at.isoformat()} is outside the current billing period")
    remaining = days_remaining(period, at)
    unused = fee_for_days(old.base_fee_minor, period, remaining)
    return PlanChange(
        kind=kind,
        effective_at=at,
        days_in_period=period.days,
        days_remaining=remaining,
        unused_old_minor=unused,
        used_old_minor=old.base_fee_minor - unused,
        new_remaining_minor=fee_for_days(new_fee_minor, period, remaining),
    )


def _at_period_end(kind: ChangeKind, old: Plan, period: BillingPeriod) -> PlanChange:
    return PlanChange(
        kind=kind,
        effective_at=period.end,
        days_in_period=period.days,
        days_remaining=0,
        unused_old_minor=0,
        used_old_minor=old.base_fee_minor,
        new_remaining_minor=0,
    )
