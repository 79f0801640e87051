"""Metering: one customer's usage events of a period, aggregated per billable metric.

Events are deduplicated by `transaction_id` first (the first one seen wins), so a retried
event never counts twice. Events are taken in time order, ties broken by `transaction_id`.
Numeric properties convert exactly (floats are refused); an event without the metric's
property is left out of that metric's sum, max, unique count and latest, as Lago's SQL
aggregations leave out NULLs, but still counts for a count metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, Field

from kiki.billing.catalog import Aggregation, BillableMetric, Code, FrozenModel
from kiki.billing.periods import BillingPeriod
from kiki.db.values import PgJson, PgText
from kiki.errors import InvalidInput
from kiki.money import to_decimal

Identifier = Annotated[PgText, Field(min_length=1, max_length=256)]


class Event(FrozenModel):
    transaction_id: Identifier
    customer: Identifier
    metric_code: Code
    timestamp: AwareDatetime
    properties: Annotated[dict[str, Any], PgJson] = Field(default_factory=dict)


class MetricUsage(FrozenModel):
    """A metric's aggregate for the period; `values` are the summed amounts, one per event
    in time order, which percentage charges price transaction by transaction."""

    metric_code: str
    quantity: Decimal
    events: int
    values: tuple[Decimal, ...] = ()


def dedupe(events: Iterable[Event]) -> list[Event]:
    """The first event of each transaction_id, in time order."""
    first: dict[str, Event] = {}
    for event in events:
        first.setdefault(event.transaction_id, event)
    return sorted(first.values(), key=lambda e: (e.timestamp, e.transaction_id))


def aggregate(metric: BillableMetric, events: Iterable[Event]) -> MetricUsage:
    """The metric's aggregate over the deduplicated events that carry its code."""
    return _aggregate(metric, [e for e in dedupe(events) if e.metric_code == metric.code])


def usage(
    metrics: Sequence[BillableMetric], events: Iterable[Event], period: BillingPeriod
) -> dict[str, MetricUsage]:
    """Every metric's aggregate over one customer's events that fall in the period (late
    events land by their own timestamp, not by when they arrived)."""
    unique = dedupe(events)
    customers = {event.customer for event in unique}
    if len(customers) > 1:
        raise InvalidInput(f"usage is per customer; got events of {sorted(customers)}")
    in_period = [event for event in unique if period.contains(event.timestamp)]
    return {
        metric.code: _aggregate(metric, [e for e in in_period if e.metric_code == metric.code])
        for metric in metrics
    }


def _aggregate(metric: BillableMetric, events: list[Event]) -> MetricUsage:
    if metric.aggregation is Aggregation.COUNT:
        return MetricUsage(
            metric_code=metric.code, quantity=Decimal(len(events)), events=len(events)
        )
    field = metric.field_name or ""
    carrying = [e for e in events if e.properties.get(field) is not None]
    values: tuple[Decimal, ...] = ()
    match metric.aggregation:
        case Aggregation.SUM:
            values = tuple(_number(e, field) for e in carrying)
            quantity = sum(values, Decimal(0))
        case Aggregation.MAX:
            quantity = max((_number(e, field) for e in carrying), default=Decimal(0))
        case Aggregation.UNIQUE_COUNT:
            quantity = Decimal(len({_distinct_key(e, field) for e in carrying}))
        case Aggregation.LATEST:
            quantity = _number(carrying[-1], field) if carrying else Decimal(0)
    return MetricUsage(
        metric_code=metric.code, quantity=quantity, events=len(carrying), values=values
    )


def _number(event: Event, field: str) -> Decimal:
    try:
        return to_decimal(event.properties[field])
    except InvalidInput as exc:
        raise InvalidInput(
            f"event {event.transaction_id!r}, property {field!r}: {exc.message}"
        ) from None


def _distinct_key(event: Event, field: str) -> str:
    """The value as text, as Lago's `properties->>field` compares it: "1" and 1 are one."""
    value = event.properties[field]
    if isinstance(value, str):
        return value
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)
    raise InvalidInput(
        f"event {event.transaction_id!r}, property {field!r}: a unique count needs a string "
        f"or an integer, got {type(value).__name__}"
    )
