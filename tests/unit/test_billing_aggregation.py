"""Metering: deduplication by transaction_id and the five aggregations."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kiki.billing.aggregation import Event, aggregate, dedupe, usage
from kiki.billing.catalog import BillableMetric, Interval
from kiki.billing.periods import BillingPeriod
from kiki.errors import InvalidInput

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)
SPEND = BillableMetric(code="ad_spend", aggregation="sum", field_name="amount")


def _event(tid: str, minutes: int = 0, metric: str = "ad_spend", **properties: object) -> Event:
    return Event(
        transaction_id=tid,
        customer="cust_1",
        metric_code=metric,
        timestamp=T0 + timedelta(minutes=minutes),
        properties=properties,
    )


def test_each_aggregation_on_hand_made_events() -> None:
    events = [
        _event("t1", 0, amount="10.5", user="ann", seats=3),
        _event("t2", 1, amount=4, user="bob", seats=5),
        _event("t3", 2, amount="0.25", user="ann", seats=2),
        _event("t4", 3, metric="other", amount=1000),
    ]

    def agg(aggregation: str, field: str | None) -> Decimal:
        metric = BillableMetric(code="ad_spend", aggregation=aggregation, field_name=field)
        return aggregate(metric, events).quantity

    assert agg("count", None) == 3
    assert agg("sum", "amount") == Decimal("14.75")
    assert agg("max", "seats") == 5
    assert agg("unique_count", "user") == 2
    assert agg("latest", "seats") == 2
    assert aggregate(SPEND, events).values == (Decimal("10.5"), 4, Decimal("0.25"))


def test_a_retried_transaction_counts_once_and_the_first_copy_wins() -> None:
    events = [_event("t1", 0, amount=10), _event("t2", 1, amount=5), _event("t1", 2, amount=99)]
    assert [e.properties["amount"] for e in dedupe(events)] == [10, 5]
    assert aggregate(SPEND, events).quantity == 15


def test_latest_breaks_timestamp_ties_by_transaction_id() -> None:
    latest = BillableMetric(code="ad_spend", aggregation="latest", field_name="seats")
    tied = [_event("b", 5, seats=7), _event("a", 5, seats=1), _event("c", 1, seats=9)]
    assert aggregate(latest, tied).quantity == 7


def test_floats_are_refused_and_events_without_the_property_are_left_out() -> None:
    with pytest.raises(InvalidInput, match=r"'t9'.*float"):
        aggregate(SPEND, [_event("t9", amount=0.1)])
    result = aggregate(SPEND, [_event("t1", amount=3), _event("t2"), _event("t3", amount=None)])
    assert (result.quantity, result.events) == (3, 1)
    unique = BillableMetric(code="ad_spend", aggregation="unique_count", field_name="user")
    assert aggregate(unique, [_event("a", user=1), _event("b", user="1")]).quantity == 1
    with pytest.raises(InvalidInput, match="unique count"):
        aggregate(unique, [_event("a", user={"id": 1})])


def test_metrics_need_a_field_except_count() -> None:
    with pytest.raises(ValidationError):
        BillableMetric(code="m", aggregation="sum")
    with pytest.raises(ValidationError):
        BillableMetric(code="m", aggregation="count", field_name="x")
    with pytest.raises(ValidationError):
        Event(transaction_id="t", customer="c", metric_code="m", timestamp=datetime(2026, 1, 1))


def test_usage_takes_the_periods_events_by_timestamp_in_the_customers_zone() -> None:
    ny = ZoneInfo("America/New_York")
    january = BillingPeriod(
        anchor=date(2026, 1, 1), interval=Interval.MONTHLY, timezone="America/New_York", index=0
    )
    calls = BillableMetric(code="calls", aggregation="count")

    def at(moment: datetime, tid: str) -> Event:
        return Event(transaction_id=tid, customer="c", metric_code="calls", timestamp=moment)

    events = [
        at(datetime(2026, 1, 31, 23, 30, tzinfo=ny), "late_evening"),  # Feb 1 in UTC
        at(datetime(2026, 1, 1, 0, 0, tzinfo=ny), "first_minute"),
        at(datetime(2026, 2, 1, 0, 0, tzinfo=ny), "next_period"),
        at(datetime(2026, 1, 1, 4, 59, tzinfo=UTC), "december_in_ny"),
    ]
    result = usage([calls, SPEND], events, january)
    assert result["calls"].quantity == 2
    assert result["ad_spend"].quantity == 0
    with pytest.raises(InvalidInput, match="per customer"):
        usage([calls], [*events, _event("x", metric="calls")], january)


@settings(max_examples=40, deadline=None)
@given(
    amounts=st.lists(st.decimals(min_value=0, max_value=1000, places=3), min_size=1, max_size=20),
    data=st.data(),
)
def test_a_flood_of_retries_in_any_order_counts_each_transaction_once(
    amounts: list[Decimal], data: st.DataObject
) -> None:
    events = [_event(f"t{i}", i, amount=a) for i, a in enumerate(amounts)]
    copies = data.draw(st.lists(st.sampled_from(events), max_size=60))
    flood = data.draw(st.permutations([*events, *copies]))
    assert aggregate(SPEND, flood) == aggregate(SPEND, events)
    assert aggregate(SPEND, events).quantity == sum(amounts)
