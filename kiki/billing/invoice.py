"""Draft invoices: lines, discounts, tax, prepaid credits and the total due, in minor units.

The order follows Lago: lines add up to the subtotal; coupons come off the subtotal, in the
order given, each on what the previous ones left; tax is the customer's rate, a Decimal
percent ("8.875" for 8.875 %), on the discounted subtotal, computed per invoice (one rate a
customer, so one rounding, half up, instead of one a line); prepaid credits pay the total
after tax. Nothing goes below zero: a subtotal that credit lines (a prorated downgrade of a
prepaid fee) push below zero bills nothing and reports the rest as `credit_carried_minor`,
for the customer's balance.

Also the invoice lifecycle (draft -> finalized -> paid | void | uncollectible) and numbering.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal, localcontext
from enum import StrEnum

from kiki.billing.aggregation import MetricUsage
from kiki.billing.catalog import Coupon, FrozenModel, Plan, Wallet, exact_decimal
from kiki.billing.periods import BillingPeriod
from kiki.billing.pricing import TierLine, price
from kiki.billing.proration import PlanChange, days_remaining, fee_for_days
from kiki.billing.rounding import EXACT, round_half_up
from kiki.errors import FailedPrecondition, InvalidInput


class LineKind(StrEnum):
    BASE_FEE = "base_fee"
    USAGE = "usage"
    PRORATION = "proration"
    ADJUSTMENT = "adjustment"  # late usage of an already-invoiced period


class InvoiceLine(FrozenModel):
    kind: LineKind
    description: str
    amount_minor: int
    metric_code: str | None = None
    units: Decimal | None = None
    tiers: tuple[TierLine, ...] = ()


class DraftInvoice(FrozenModel):
    currency: str
    lines: tuple[InvoiceLine, ...]
    subtotal_minor: int
    discount_minor: int
    tax_percent: Decimal
    tax_minor: int
    total_minor: int
    credits_applied_minor: int
    total_due_minor: int
    credit_carried_minor: int


def base_fee_line(
    plan: Plan, period: BillingPeriod, *, bill_from: datetime | None = None
) -> InvoiceLine:
    """The plan's base fee for the period, prorated by days when it applies only from
    `bill_from` (a trial's end, a mid-period start)."""
    days = period.days if bill_from is None else days_remaining(period, bill_from)
    return InvoiceLine(
        kind=LineKind.BASE_FEE,
        description=f"{plan.name or plan.code} v{plan.version}, {days} of {period.days} days",
        amount_minor=fee_for_days(plan.base_fee_minor, period, days),
    )


def usage_lines(plan: Plan, usage: Mapping[str, MetricUsage]) -> tuple[InvoiceLine, ...]:
    """One line per charge of the plan; a metric without usage is priced at zero."""
    lines = []
    for charge in plan.charges:
        metered = usage.get(charge.metric_code)
        priced = price(
            charge,
            metered.quantity if metered else Decimal(0),
            plan.currency,
            transactions=metered.values if metered else (),
        )
        lines.append(
            InvoiceLine(
                kind=LineKind.USAGE,
                description=f"{charge.metric_code} ({charge.charge_model})",
                amount_minor=priced.amount_minor,
                metric_code=charge.metric_code,
                units=priced.units,
                tiers=priced.tiers,
            )
        )
    return tuple(lines)


def plan_change_lines(change: PlanChange, old: Plan, new: Plan) -> tuple[InvoiceLine, ...]:
    """What a plan change bills now: a prepaid old plan credits its unused days, an arrears
    old plan bills its used days, a prepaid new plan charges the days left (an arrears new
    plan bills them at period end, through `base_fee_line(..., bill_from=effective_at)`)."""
    old_line = (
        (f"unused time on {old.code} v{old.version}", -change.unused_old_minor)
        if old.pay_in_advance
        else (f"time used on {old.code} v{old.version}", change.used_old_minor)
    )
    new_line = (f"remaining time on {new.code} v{new.version}", change.new_remaining_minor)
    wanted = [old_line, new_line] if new.pay_in_advance else [old_line]
    return tuple(
        InvoiceLine(kind=LineKind.PRORATION, description=text, amount_minor=amount)
        for text, amount in wanted
        if amount
    )


def settle(
    currency: str,
    lines: Sequence[InvoiceLine],
    *,
    coupons: Sequence[Coupon] = (),
    wallet: Wallet | None = None,
    tax_percent: Decimal | str | int = 0,
) -> DraftInvoice:
    """The totals of a set of lines: subtotal, discounts, tax, credits, total due."""
    rate = exact_decimal(tax_percent)
    if rate > 100:
        raise InvalidInput(f"tax rate {rate} % is above 100 %")
    if wallet is not None and wallet.currency != currency:
        raise InvalidInput(f"a {wallet.currency} wallet cannot pay a {currency} invoice")
    net = sum(line.amount_minor for line in lines)
    subtotal = max(net, 0)
    discount = 0
    for coupon in coupons:
        discount += _discount(coupon, subtotal - discount, currency)
    with localcontext(EXACT):
        tax = round_half_up((subtotal - discount) * rate / 100)
    total = subtotal - discount + tax
    credits = min(wallet.balance_minor, total) if wallet else 0
    return DraftInvoice(
        currency=currency,
        lines=tuple(lines),
        subtotal_minor=subtotal,
        discount_minor=discount,
        tax_percent=rate,
        tax_minor=tax,
        total_minor=total,
        credits_applied_minor=credits,
        total_due_minor=total - credits,
        credit_carried_minor=max(-net, 0),
    )


def _discount(coupon: Coupon, remaining: int, currency: str) -> int:
    if coupon.amount_off_minor is not None:
        if coupon.currency != currency:
            raise InvalidInput(f"coupon {coupon.code!r} is in {coupon.currency}, not {currency}")
        return min(coupon.amount_off_minor, remaining)
    with localcontext(EXACT):
        return round_half_up(remaining * (coupon.percent_off or Decimal(0)) / 100)


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


_NEXT: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    InvoiceStatus.DRAFT: frozenset({InvoiceStatus.FINALIZED}),
    InvoiceStatus.FINALIZED: frozenset(
        {InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE}
    ),
    InvoiceStatus.UNCOLLECTIBLE: frozenset({InvoiceStatus.PAID}),
    InvoiceStatus.PAID: frozenset(),
    InvoiceStatus.VOID: frozenset(),
}


def transition(current: InvoiceStatus, target: InvoiceStatus) -> InvoiceStatus:
    """`target` if the lifecycle allows it from `current`; a late payment of an
    uncollectible invoice is allowed, anything out of a paid or void invoice is not."""
    if target not in _NEXT[current]:
        allowed = ", ".join(sorted(_NEXT[current])) or "nothing (it is final)"
        raise FailedPrecondition(
            f"an invoice cannot go from {current} to {target}; from {current}: {allowed}"
        )
    return target


_PREFIX = re.compile(r"^[A-Z0-9]{1,16}$")


def invoice_number(prefix: str, year: int, sequence: int) -> str:
    """`{PREFIX}-{YYYY}-{000001}`: the tenant's prefix, the year, its counter (from 1)."""
    if not _PREFIX.match(prefix):
        raise InvalidInput(
            f"invoice prefix {prefix!r} must be 1 to 16 upper-case letters or digits"
        )
    if not 1 <= year <= 9999 or sequence < 1:
        raise InvalidInput(f"invoice year {year} or sequence {sequence} is out of range")
    return f"{prefix}-{year:04d}-{sequence:06d}"
