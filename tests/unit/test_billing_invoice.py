"""Invoices: totals (coupons, tax, prepaid credits), plan-change lines, the lifecycle and
numbering. The lines of a closing period: test_billing_closing.py."""

from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kiki.billing.catalog import Coupon, Interval, Plan, Wallet
from kiki.billing.invoice import (
    InvoiceLine,
    InvoiceStatus,
    LineKind,
    base_fee_line,
    invoice_number,
    plan_change_lines,
    settle,
    transition,
)
from kiki.billing.periods import BillingPeriod
from kiki.billing.proration import change_plan
from kiki.errors import FailedPrecondition, InvalidInput

JANUARY = BillingPeriod(anchor=date(2026, 1, 1), interval=Interval.MONTHLY, timezone="UTC", index=0)
TEN_PERCENT = Coupon(code="welcome10", percent_off=10)
FIVE_DOLLARS = Coupon(code="five", amount_off_minor=5_00, currency="USD", duration="forever")


def _line(amount: int) -> InvoiceLine:
    return InvoiceLine(kind=LineKind.PRORATION, description="adjustment", amount_minor=amount)


def test_credits_never_push_totals_below_zero() -> None:
    invoice = settle("USD", [_line(10_00), _line(-25_00)], coupons=[FIVE_DOLLARS], tax_percent=20)
    assert (invoice.subtotal_minor, invoice.discount_minor, invoice.total_due_minor) == (0, 0, 0)
    assert invoice.credit_carried_minor == 15_00
    rich = settle("USD", [_line(10_00)], coupons=[FIVE_DOLLARS] * 3)
    assert (rich.discount_minor, rich.total_due_minor) == (10_00, 0)
    paid = settle("USD", [_line(10_00)], wallet=Wallet(balance_minor=50_00, currency="USD"))
    assert (paid.credits_applied_minor, paid.total_due_minor) == (10_00, 0)


def test_currency_tax_rate_and_coupon_shape_are_checked() -> None:
    with pytest.raises(InvalidInput, match="EUR"):
        settle("USD", [_line(1)], coupons=[Coupon(code="e", amount_off_minor=1, currency="EUR")])
    with pytest.raises(InvalidInput, match="wallet"):
        settle("USD", [_line(1)], wallet=Wallet(balance_minor=1, currency="EUR"))
    with pytest.raises(InvalidInput, match="above 100"):
        settle("USD", [_line(1)], tax_percent=101)
    with pytest.raises(InvalidInput, match="float"):
        settle("USD", [_line(1)], tax_percent=0.2)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Coupon(code="both", amount_off_minor=1, currency="USD", percent_off=5)
    with pytest.raises(ValidationError):
        Coupon(code="n", percent_off=5, duration="repeating")


def test_coupon_durations() -> None:
    three = Coupon(code="q1", percent_off=20, duration="repeating", duration_periods=3)
    assert [three.applies_in(n) for n in range(4)] == [True, True, True, False]
    assert [TEN_PERCENT.applies_in(n) for n in range(2)] == [True, False]
    assert FIVE_DOLLARS.applies_in(120)


def test_plan_change_lines_follow_each_plans_payment_timing() -> None:
    basic = Plan(
        code="basic", interval="monthly", currency="USD", base_fee_minor=30_00, pay_in_advance=True
    )
    pro = basic.model_copy(update={"code": "pro", "base_fee_minor": 90_00})
    at = datetime(2026, 1, 16, 12, tzinfo=UTC)
    change = change_plan(basic, pro, JANUARY, at)
    assert [line.amount_minor for line in plan_change_lines(change, basic, pro)] == [-15_48, 46_45]
    # In arrears: the old plan bills its 15 used days now, the new one its 16 at period end.
    old_late, new_late = (p.model_copy(update={"pay_in_advance": False}) for p in (basic, pro))
    late = change_plan(old_late, new_late, JANUARY, at)
    assert [line.amount_minor for line in plan_change_lines(late, old_late, new_late)] == [14_52]
    assert base_fee_line(new_late, JANUARY, bill_from=at).amount_minor == 46_45
    assert settle("USD", plan_change_lines(change, basic, pro)).total_due_minor == 30_97


ALLOWED = {
    (InvoiceStatus.DRAFT, InvoiceStatus.FINALIZED),
    (InvoiceStatus.FINALIZED, InvoiceStatus.PAID),
    (InvoiceStatus.FINALIZED, InvoiceStatus.VOID),
    (InvoiceStatus.FINALIZED, InvoiceStatus.UNCOLLECTIBLE),
    (InvoiceStatus.UNCOLLECTIBLE, InvoiceStatus.PAID),
}


@pytest.mark.parametrize(("current", "target"), list(product(InvoiceStatus, InvoiceStatus)))
def test_lifecycle_allows_exactly_its_transitions(
    current: InvoiceStatus, target: InvoiceStatus
) -> None:
    if (current, target) in ALLOWED:
        assert transition(current, target) is target
    else:
        with pytest.raises(FailedPrecondition, match=f"from {current} to {target}"):
            transition(current, target)


def test_invoice_numbers() -> None:
    assert invoice_number("KIKI", 2026, 1) == "KIKI-2026-000001"
    assert invoice_number("ACME2", 2027, 1_234_567) == "ACME2-2027-1234567"
    for bad in [("kiki", 2026, 1), ("KIKI", 2026, 0), ("KI-KI", 2026, 1)]:
        with pytest.raises(InvalidInput):
            invoice_number(*bad)


@settings(max_examples=80, deadline=None)
@given(
    amounts=st.lists(st.integers(-(10**6), 10**7), max_size=6),
    percent=st.decimals(min_value="0.01", max_value=100, places=2),
    amount_off=st.integers(1, 10**6),
    tax=st.decimals(min_value=0, max_value=30, places=3),
    balance=st.integers(0, 10**7),
)
def test_totals_are_integers_that_add_up_and_never_go_negative(
    amounts: list[int], percent: Decimal, amount_off: int, tax: Decimal, balance: int
) -> None:
    coupons = [
        Coupon(code="p", percent_off=percent),
        Coupon(code="f", amount_off_minor=amount_off, currency="USD"),
    ]
    wallet = Wallet(balance_minor=balance, currency="USD")
    invoice = settle(
        "USD", [_line(a) for a in amounts], coupons=coupons, wallet=wallet, tax_percent=tax
    )
    figures = invoice.model_dump(include={"subtotal_minor", "discount_minor", "tax_minor",
                                          "total_minor", "credits_applied_minor",
                                          "total_due_minor", "credit_carried_minor"})  # fmt: skip
    assert all(isinstance(v, int) and v >= 0 for v in figures.values())
    assert invoice.subtotal_minor - invoice.credit_carried_minor == sum(amounts)
    assert invoice.discount_minor <= invoice.subtotal_minor
    assert (
        invoice.total_minor == invoice.subtotal_minor - invoice.discount_minor + invoice.tax_minor
    )
    assert invoice.total_due_minor == invoice.total_minor - invoice.credits_applied_minor
