"""Billing periods in the customer's time zone.

A subscription's periods are counted from its anchor day: period k starts at local midnight
of the anchor moved k intervals on, and ends where period k+1 starts. Each boundary is
computed from the anchor, never from the previous boundary, so month ends behave as Stripe's
do: a Jan 31 anchor gives Feb 28 (29 in a leap year), then Mar 31, not Mar 28. A yearly Feb 29
anchor renews on Feb 28 in common years. An event at 23:30 in New York on the 31st belongs to
the period holding the 31st, although it is already the 1st in UTC.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator

from kiki.billing.catalog import FrozenModel, Interval
from kiki.errors import InvalidInput


@cache
def zone(name: str) -> ZoneInfo:
    """The IANA time zone, or InvalidInput naming the bad value."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"time zone {name!r} is not an IANA name such as 'Europe/Paris'"
        ) from None


def local_date(moment: datetime, tz: str) -> date:
    """The customer's calendar day at `moment`, which must carry its offset."""
    if moment.tzinfo is None:
        raise InvalidInput(f"moment {moment.isoformat()} has no time zone offset")
    return moment.astimezone(zone(tz)).date()


def _boundary(anchor: date, interval: Interval, k: int) -> date:
    if interval is Interval.WEEKLY:
        return anchor + timedelta(weeks=k)
    months = anchor.month - 1 + k * (12 if interval is Interval.YEARLY else 1)
    year, month = anchor.year + months // 12, months % 12 + 1
    return date(year, month, min(anchor.day, calendar.monthrange(year, month)[1]))


class BillingPeriod(FrozenModel):
    """Period number `index` of a subscription: [start, end) between local midnights."""

    anchor: date
    interval: Interval
    timezone: str
    index: int

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        zone(name)
        return name

    @property
    def start_date(self) -> date:
        return _boundary(self.anchor, self.interval, self.index)

    @property
    def end_date(self) -> date:
        """The first day of the next period (exclusive)."""
        return _boundary(self.anchor, self.interval, self.index + 1)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.start_date, time(), zone(self.timezone))

    @property
    def end(self) -> datetime:
        return datetime.combine(self.end_date, time(), zone(self.timezone))

    @property
    def days(self) -> int:
        return (self.end_date - self.start_date).days

    def contains(self, moment: datetime) -> bool:
        return self.start_date <= local_date(moment, self.timezone) < self.end_date

    def next(self) -> BillingPeriod:
        """The renewal: the period right after this one."""
        return self.model_copy(update={"index": self.index + 1})


def period_for(anchor: date, interval: Interval, tz: str, moment: datetime) -> BillingPeriod:
    """The billing period of a subscription anchored on `anchor` that holds `moment`."""
    day = local_date(moment, tz)
    if interval is Interval.WEEKLY:
        k = (day - anchor).days // 7
    else:
        months = (day.year - anchor.year) * 12 + day.month - anchor.month
        k = months // (12 if interval is Interval.YEARLY else 1)
        if day < _boundary(anchor, interval, k):
            k -= 1
    return BillingPeriod(anchor=anchor, interval=interval, timezone=tz, index=k)
