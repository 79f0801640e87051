"""The pricing engine: Lago's documented examples, hand-computed cases, and properties."""

from decimal import ROUND_HALF_UP, Decimal
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kiki.billing.catalog import (
    Charge,
    GraduatedCharge,
    PackageCharge,
    PercentageCharge,
    Plan,
    StandardCharge,
    Tier,
    VolumeCharge,
)
from kiki.billing.pricing import price
from kiki.errors import InvalidInput

FEW = settings(max_examples=60, deadline=None)
prices = st.decimals(min_value=0, max_value=50, places=4)
quantities = st.decimals(min_value=0, max_value=100_000, places=2)


def _cents(exact: Decimal) -> int:
    return int((exact * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_lago_graduated_example() -> None:
    # $1 a unit for the first 100, $0.50 for the next 100, $0.10 beyond.
    charge = GraduatedCharge(
        metric_code="api_calls",
        tiers=[
            {"up_to": "100", "unit_price": "1"},
            {"up_to": "200", "unit_price": "0.50"},
            {"up_to": None, "unit_price": "0.10"},
        ],
    )
    result = price(charge, 250, "USD")
    assert result.amount_minor == 155_00
    assert [(t.from_units, t.units, t.amount) for t in result.tiers] == [
        (0, 100, 100),
        (100, 100, 50),
        (200, 50, 5),
    ]
    assert price(charge, 100, "USD").amount_minor == 100_00
    assert len(price(charge, 100, "USD").tiers) == 1


def test_lago_volume_example() -> None:
    # 65,000 API calls fall in the third tier: 65,000 x $0.0006 + $10 = $49.
    charge = VolumeCharge(
        metric_code="api_calls",
        tiers=[
            {"up_to": 10_000, "unit_price": "0.0010", "flat_fee": 10},
            {"up_to": 50_000, "unit_price": "0.0008", "flat_fee": 10},
            {"up_to": 100_000, "unit_price": "0.0006", "flat_fee": 10},
            {"up_to": None, "unit_price": "0.0004", "flat_fee": 10},
        ],
    )
    result = price(charge, 65_000, "USD")
    assert result.amount_minor == 49_00
    assert [(t.from_units, t.up_to, t.units) for t in result.tiers] == [(50_000, 100_000, 65_000)]
    assert price(charge, 10_000, "USD").amount_minor == 20_00  # the bound is inclusive
    assert price(charge, 0, "USD").amount_minor == 0  # no usage, no flat fee


def test_lago_package_example() -> None:
    # $5 per 100 units, the first 100 free: 201 units cost $0 + $5 + $5 (a started package).
    charge = PackageCharge(
        metric_code="api_calls", package_size=100, package_price=5, free_units=100
    )
    assert price(charge, 201, "USD").amount_minor == 10_00
    assert price(charge, 200, "USD").amount_minor == 5_00
    assert price(charge, 100, "USD").amount_minor == 0


def test_percentage_like_stripe_card_fees() -> None:
    # Lago's per-transaction template: 2.9 % + $0.30 a card payment.
    charge = PercentageCharge(metric_code="payments", rate="2.9", fixed_fee="0.30")
    amounts = [Decimal(100), Decimal(50), Decimal(10)]
    assert price(charge, 160, "USD", transactions=amounts).amount_minor == 4_64 + 90


def test_percentage_free_events_and_free_amount_end_when_either_runs_out() -> None:
    charge = PercentageCharge(
        metric_code="transfers", rate="1.2", fixed_fee="0.10", free_events=3, free_amount=500
    )
    # Three events fit in the $500: free; then 300 x 1.2 % + 0.10 and 50 x 1.2 % + 0.10.
    by_events = [Decimal(v) for v in (100, 150, 200, 300, 50)]
    assert price(charge, 800, "USD", transactions=by_events).amount_minor == 3_70 + 70
    # The second event crosses $500: only its $200 above is charged, then everything.
    by_amount = [Decimal(v) for v in (400, 300, 10)]
    assert price(charge, 710, "USD", transactions=by_amount).amount_minor == 2_50 + 22


def test_percentage_min_and_max_per_transaction() -> None:
    charge = PercentageCharge(
        metric_code="transfers", rate=1, per_transaction_min="0.50", per_transaction_max=5
    )
    amounts = [Decimal(10), Decimal(100), Decimal(1000)]
    assert price(charge, 1110, "USD", transactions=amounts).amount_minor == 50 + 1_00 + 5_00


def test_percentage_needs_transactions_that_add_up() -> None:
    charge = PercentageCharge(metric_code="transfers", rate=1)
    with pytest.raises(InvalidInput, match="each transaction"):
        price(charge, 100, "USD")
    with pytest.raises(InvalidInput, match="each transaction"):
        price(charge, 100, "USD", transactions=[Decimal(60)])


def test_sub_cent_prices_add_up_before_one_half_up_rounding() -> None:
    charge = StandardCharge(metric_code="predictions", unit_price="0.0015")
    assert price(charge, 3, "USD").amount_minor == 0  # $0.0045
    assert price(charge, 3333, "USD").amount_minor == 5_00  # $4.9995
    half = StandardCharge(metric_code="predictions", unit_price="0.0025")
    assert price(half, 2, "USD").amount_minor == 1  # $0.005: half up, not half even
    assert price(half, 2, "JPY").amount_minor == 0
    assert price(StandardCharge(metric_code="m", unit_price="0.0005"), 1, "KWD").amount_minor == 1


def test_floats_excess_precision_and_negative_usage_are_refused() -> None:
    with pytest.raises(InvalidInput, match="float"):
        StandardCharge(metric_code="m", unit_price=0.1)
    for too_fine in ("0.0000000000001", "1e-400000"):
        with pytest.raises(InvalidInput, match="12 decimal places"):
            StandardCharge(metric_code="m", unit_price=too_fine)
    for out_of_range in ("-0.01", "1e400000"):
        with pytest.raises(InvalidInput, match=r"10\^18"):
            StandardCharge(metric_code="m", unit_price=out_of_range)
    assert StandardCharge(metric_code="m", unit_price="0.100000000000000").unit_price == Decimal(
        "0.1"
    )
    with pytest.raises(InvalidInput, match="negative"):
        price(StandardCharge(metric_code="m", unit_price=1), -1, "USD")


@pytest.mark.parametrize(
    "tiers",
    [
        [{"up_to": 10}],
        [{"up_to": None}, {"up_to": None}],
        [{"up_to": 10}, {"up_to": 10}, {"up_to": None}],
        [{"up_to": 0}, {"up_to": None}],
    ],
)
def test_tiers_must_ascend_and_end_open(tiers: list[dict[str, object]]) -> None:
    with pytest.raises(ValidationError):
        GraduatedCharge(metric_code="m", tiers=tiers)


def test_a_plan_has_one_charge_per_metric_and_parses_by_charge_model() -> None:
    plan = Plan.model_validate(
        {
            "code": "growth",
            "interval": "monthly",
            "currency": "usd",
            "charges": [
                {"metric_code": "a", "charge_model": "standard", "unit_price": "0.0015"},
                {
                    "metric_code": "b",
                    "charge_model": "package",
                    "package_size": 100,
                    "package_price": 5,
                },
            ],
        }
    )
    assert plan.currency == "USD"
    assert [type(c) for c in plan.charges] == [StandardCharge, PackageCharge]
    with pytest.raises(ValidationError, match="one charge per"):
        Plan(code="p", interval="monthly", currency="USD", charges=[plan.charges[0]] * 2)


@st.composite
def tier_lists(draw: st.DrawFn, max_tiers: int = 5) -> tuple[Tier, ...]:
    widths = draw(
        st.lists(st.decimals(min_value="0.01", max_value=5000, places=2), max_size=max_tiers - 1)
    )
    bounds = [*accumulate(widths), None]
    return tuple(Tier(up_to=b, unit_price=draw(prices), flat_fee=draw(prices)) for b in bounds)


@FEW
@given(tiers=tier_lists(), quantity=quantities)
def test_graduated_total_is_the_sum_over_tiers_rounded_once(
    tiers: tuple[Tier, ...], quantity: Decimal
) -> None:
    result = price(GraduatedCharge(metric_code="m", tiers=tiers), quantity, "USD")
    assert sum(t.units for t in result.tiers) == quantity
    assert all(t.up_to is None or t.units <= t.up_to - t.from_units for t in result.tiers)
    exact = sum((t.units * t.unit_price + t.flat_fee for t in result.tiers), Decimal(0))
    assert result.amount == exact
    assert isinstance(result.amount_minor, int)
    assert result.amount_minor == _cents(exact) >= 0


@FEW
@given(unit_price=prices, flat_fee=prices, quantity=quantities)
def test_volume_and_graduated_agree_on_one_tier(
    unit_price: Decimal, flat_fee: Decimal, quantity: Decimal
) -> None:
    tiers = [Tier(up_to=None, unit_price=unit_price, flat_fee=flat_fee)]
    graduated = price(GraduatedCharge(metric_code="m", tiers=tiers), quantity, "USD")
    volume = price(VolumeCharge(metric_code="m", tiers=tiers), quantity, "USD")
    assert graduated.amount_minor == volume.amount_minor
    assert graduated.amount == volume.amount


@FEW
@given(tiers=tier_lists(), quantity=quantities)
def test_volume_prices_every_unit_in_the_reached_tier(
    tiers: tuple[Tier, ...], quantity: Decimal
) -> None:
    result = price(VolumeCharge(metric_code="m", tiers=tiers), quantity, "USD")
    if quantity == 0:
        assert result.amount_minor == 0
        return
    (line,) = result.tiers
    assert line.from_units < quantity and (line.up_to is None or quantity <= line.up_to)
    assert result.amount_minor == _cents(quantity * line.unit_price + line.flat_fee)


@FEW
@given(
    size=st.decimals(min_value="0.5", max_value=1000, places=1),
    package_price=prices,
    free=quantities,
    quantity=quantities,
)
def test_packages_round_up_after_free_units(
    size: Decimal, package_price: Decimal, free: Decimal, quantity: Decimal
) -> None:
    charge = PackageCharge(
        metric_code="m", package_size=size, package_price=package_price, free_units=free
    )
    packages = max(quantity - free, 0) / size
    started = int(packages.to_integral_value(rounding="ROUND_CEILING"))
    assert price(charge, quantity, "USD").amount_minor == _cents(started * package_price)


def _charges(tiers: tuple[Tier, ...], unit_price: Decimal) -> list[Charge]:
    return [
        StandardCharge(metric_code="m", unit_price=unit_price),
        GraduatedCharge(metric_code="m", tiers=tiers),
        PackageCharge(metric_code="m", package_size=7, package_price=unit_price, free_units=3),
    ]


@FEW
@given(tiers=tier_lists(), unit_price=prices, a=quantities, b=quantities)
def test_standard_graduated_and_package_are_monotone_in_quantity(
    tiers: tuple[Tier, ...], unit_price: Decimal, a: Decimal, b: Decimal
) -> None:
    low, high = sorted((a, b))
    for charge in _charges(tiers, unit_price):
        assert (
            0 <= price(charge, low, "USD").amount_minor <= price(charge, high, "USD").amount_minor
        )


@FEW
@given(
    amounts=st.lists(st.decimals(min_value=0, max_value=10_000, places=2), max_size=12),
    rate=st.decimals(min_value=0, max_value=10, places=3),
    fixed=st.decimals(min_value=0, max_value=1, places=2),
    bounds=st.tuples(prices, prices).map(sorted),
)
def test_percentage_fee_of_each_transaction_stays_within_min_and_max(
    amounts: list[Decimal], rate: Decimal, fixed: Decimal, bounds: list[Decimal]
) -> None:
    low, high = bounds
    charge = PercentageCharge(
        metric_code="m",
        rate=rate,
        fixed_fee=fixed,
        per_transaction_min=low,
        per_transaction_max=high,
    )
    result = price(charge, sum(amounts, Decimal(0)), "USD", transactions=amounts)
    expected = sum((min(max(v * rate / 100 + fixed, low), high) for v in amounts), Decimal(0))
    assert result.amount == expected
    assert len(amounts) * low <= result.amount <= len(amounts) * high
    assert result.amount_minor == _cents(expected) >= 0
