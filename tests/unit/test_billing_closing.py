"""The lines a closing period bills (kiki.billing.closing.period_lines, what close_period
prices each subscription with), settled into totals as close_period settles them."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

from kiki.billing.aggregation import MetricUsage
from kiki.billing.catalog import Plan, Wallet
from kiki.billing.closing import period_lines
from kiki.billing.invoice import DraftInvoice, LineKind, settle
from kiki.billing.models import Subscription, SubscriptionStatus
from tests.unit.test_billing_invoice import FIVE_DOLLARS, JANUARY, TEN_PERCENT

GROWTH = Plan(
    code="growth",
    interval="monthly",
    currency="USD",
    base_fee_minor=49_00,
    trial_days=14,
    charges=[
        {"metric_code": "predictions", "charge_model": "standard", "unit_price": "0.0015"},
        {"metric_code": "creatives", "charge_model": "package", "package_size": 100,
         "package_price": 5, "free_units": 100},
        {"metric_code": "bids", "charge_model": "graduated", "tiers": [
            {"up_to": 1000}, {"up_to": None, "unit_price": "0.001"}]},
    ],
)  # fmt: skip
USAGE = {
    "predictions": MetricUsage(metric_code="predictions", quantity=Decimal(123_457), events=9),
    "creatives": MetricUsage(metric_code="creatives", quantity=Decimal(201), events=201),
    "bids": MetricUsage(metric_code="bids", quantity=Decimal(5_500), events=5_500),
}
LONG_AGO = datetime(2025, 6, 1, tzinfo=UTC)  # its trial long over by January


def _subscription(plan: Plan, started: datetime) -> Subscription:
    """A subscription in its January period, started as kiki.billing.subscriptions starts one."""
    trial_end = started + timedelta(days=plan.trial_days) if plan.trial_days else None
    return Subscription(
        id=uuid4(), customer_id="c1", status=SubscriptionStatus.ACTIVE,
        plan_code=plan.code, plan_version=plan.version, plan_since=started, started_at=started,
        trial_ends_at=trial_end, anchor=date(2026, 1, 1), timezone="UTC", period_index=0,
        period_start=JANUARY.start, period_end=JANUARY.end, pending_plan_code=None,
        pending_plan_version=None, cancel_at_period_end=False, canceled_at=None, ended_at=None,
        last_closed_at=None, created_at=started,
    )  # fmt: skip


def _close(
    plan: Plan, used: dict[str, MetricUsage], started: datetime, **totals: Any
) -> DraftInvoice:
    lines = period_lines(_subscription(plan, started), plan, JANUARY, used)
    return settle(plan.currency, lines, **totals)


def test_a_full_invoice_by_hand() -> None:
    invoice = _close(
        GROWTH,
        USAGE,
        LONG_AGO,
        coupons=[TEN_PERCENT, FIVE_DOLLARS],
        wallet=Wallet(balance_minor=20_00, currency="USD"),
        tax_percent="8.875",
    )
    # $49 base; 123,457 x $0.0015 = $185.1855 -> 18519; 2 started packages of 100 after 100
    # free -> $10; 4,500 bids above the free 1,000 at $0.001 -> $4.50.
    assert [line.amount_minor for line in invoice.lines] == [49_00, 185_19, 10_00, 4_50]
    assert invoice.subtotal_minor == 248_69
    assert invoice.discount_minor == 24_87 + 5_00  # 10 % of 248.69 = 24.869, then $5
    assert invoice.tax_minor == 19_42  # 8.875 % of 218.82 = 19.420275
    assert invoice.total_minor == 238_24
    assert (invoice.credits_applied_minor, invoice.total_due_minor) == (20_00, 218_24)
    assert invoice.lines[3].tiers[1].units == 4_500


def test_missing_usage_prices_at_zero_and_a_trial_prorates_the_base_fee() -> None:
    started = datetime(2026, 1, 1, 9, tzinfo=UTC)
    invoice = _close(GROWTH, {}, started)
    # Trial to Jan 15 09:00; billed from Jan 15: 17 of 31 days of $49 = 26.87.
    assert [line.amount_minor for line in invoice.lines] == [26_87, 0, 0, 0]
    assert invoice.lines[0].description.endswith("17 of 31 days")
    assert _close(GROWTH, {}, LONG_AGO).total_minor == 49_00


def test_pay_in_advance_bills_the_next_periods_fee_with_this_periods_usage() -> None:
    advance = GROWTH.model_copy(update={"pay_in_advance": True, "trial_days": 0})
    started = datetime(2026, 1, 20, tzinfo=UTC)  # a trial-free start late in January
    in_arrears = _close(GROWTH.model_copy(update={"trial_days": 0}), {}, started)
    in_advance = _close(advance, {}, started)

    def fee(invoice: DraftInvoice) -> int:
        (line,) = [line for line in invoice.lines if line.kind == LineKind.BASE_FEE]
        return line.amount_minor

    assert fee(in_arrears) == 18_97  # 12 of January's 31 days: 18.9677
    assert fee(in_advance) == 49_00  # all of February
