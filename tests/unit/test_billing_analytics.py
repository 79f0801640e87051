"""Revenue analytics: MRR normalisation, movements between months, NRR, ARPU."""

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiki.billing.analytics import (
    Snapshot,
    arpu,
    arr,
    monthly_value,
    movements,
    mrr,
    net_revenue_retention,
)
from kiki.billing.reports import months_up_to
from kiki.errors import InvalidInput


def _snap(customer: str, amount: int, interval: str = "monthly", currency: str = "USD") -> Snapshot:
    return Snapshot(customer=customer, amount_minor=amount, interval=interval, currency=currency)


DECEMBER = [
    _snap("ann", 100_00),
    _snap("bob", 1200_00, "yearly"),
    _snap("cat", 50_00),
    _snap("dan", 30_00),
]
JANUARY = [
    _snap("ann", 150_00),
    _snap("bob", 600_00, "yearly"),
    _snap("dan", 30_00),
    _snap("eve", 10_00, "weekly"),
    _snap("fay", 20_00),
]


@pytest.mark.parametrize(
    ("amount", "interval", "monthly"),
    [
        (100_000, "yearly", 8_333),  # 8333.33
        (100_002, "yearly", 8_334),  # 8333.5: half up
        (99_990, "yearly", 8_333),  # 8332.5: half up
        (10_00, "weekly", 43_33),  # 52 weeks / 12 months
        (49_00, "monthly", 49_00),
    ],
)
def test_monthly_value_rounds_half_up_per_subscription(
    amount: int, interval: str, monthly: int
) -> None:
    assert monthly_value(_snap("c", amount, interval)) == monthly


def test_mrr_arr_and_arpu() -> None:
    assert mrr(DECEMBER) == 280_00
    assert mrr(JANUARY) == 293_33
    assert arr(JANUARY) == 12 * 293_33
    assert arpu(JANUARY) == 58_67  # 293.33 / 5 customers
    assert arpu([]) == 0
    assert mrr([_snap("ann", 10_00), _snap("ann", 5_00, "yearly")]) == 10_42  # one customer


def test_movements_between_two_months() -> None:
    moved = movements(DECEMBER, JANUARY, past_customers={"fay"})
    assert moved.model_dump() == {
        "starting_mrr": 280_00,
        "new": 43_33,  # eve
        "expansion": 50_00,  # ann
        "contraction": 50_00,  # bob halved his yearly plan
        "churned": 50_00,  # cat
        "reactivated": 20_00,  # fay paid before December
        "ending_mrr": 293_33,
    }
    assert moved.net_new == 13_33 == moved.ending_mrr - moved.starting_mrr
    assert movements(DECEMBER, JANUARY).new == 63_33


def test_net_revenue_retention_counts_only_last_months_customers() -> None:
    assert net_revenue_retention(DECEMBER, JANUARY) == Decimal("82.14")  # 230 / 280
    assert net_revenue_retention(JANUARY, JANUARY) == Decimal("100.00")
    assert net_revenue_retention([], JANUARY) is None


def test_currencies_do_not_mix() -> None:
    with pytest.raises(InvalidInput, match="per currency"):
        movements(DECEMBER, [_snap("ann", 1, currency="EUR")])
    with pytest.raises(InvalidInput, match="per currency"):
        mrr([*DECEMBER, _snap("zed", 1, currency="EUR")])


snapshots = st.lists(
    st.builds(
        _snap,
        customer=st.sampled_from(["a", "b", "c", "d", "e"]),
        amount=st.integers(0, 10**8),
        interval=st.sampled_from(["weekly", "monthly", "yearly"]),
    ),
    max_size=8,
)


@settings(max_examples=80, deadline=None)
@given(previous=snapshots, current=snapshots, past=st.sets(st.sampled_from(["a", "b", "c"])))
def test_movements_explain_the_whole_change_in_mrr(
    previous: list[Snapshot], current: list[Snapshot], past: set[str]
) -> None:
    moved = movements(previous, current, past_customers=past)
    assert moved.starting_mrr == mrr(previous) and moved.ending_mrr == mrr(current)
    assert moved.ending_mrr - moved.starting_mrr == moved.net_new
    assert min(moved.model_dump().values()) >= 0


def test_months_for_an_mrr_chart_cross_the_year_and_stop_at_year_one() -> None:
    assert months_up_to(date(2026, 2, 15), 3) == [
        date(2025, 12, 1),
        date(2026, 1, 1),
        date(2026, 2, 1),
    ]
    assert months_up_to(date(1, 6, 1), 6)[0] == date(1, 1, 1)
    with pytest.raises(InvalidInput, match="ask fewer"):
        months_up_to(date(1, 6, 1), 7)
