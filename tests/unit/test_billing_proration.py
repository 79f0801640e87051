"""Billing periods in the customer's time zone, and day-based proration of plan changes."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiki.billing.catalog import Interval, Plan
from kiki.billing.periods import BillingPeriod, period_for
from kiki.billing.proration import ChangeKind, cancel, change_plan
from kiki.errors import InvalidInput

NY = ZoneInfo("America/New_York")
BASIC = Plan(
    code="basic", interval="monthly", currency="USD", base_fee_minor=30_00, pay_in_advance=True
)
PRO = Plan(
    code="pro", interval="monthly", currency="USD", base_fee_minor=90_00, pay_in_advance=True
)
JANUARY = BillingPeriod(
    anchor=date(2026, 1, 1), interval=Interval.MONTHLY, timezone="America/New_York", index=0
)


def _span(period: BillingPeriod) -> tuple[date, date]:
    return period.start_date, period.end_date


def test_month_end_anchor_follows_stripe_jan31_feb28_or_29_mar31() -> None:
    leap = date(2024, 1, 31)
    assert _span(
        period_for(leap, Interval.MONTHLY, "UTC", datetime(2024, 2, 29, 12, tzinfo=UTC))
    ) == (
        date(2024, 2, 29),
        date(2024, 3, 31),
    )
    after = period_for(leap, Interval.MONTHLY, "UTC", datetime(2024, 3, 31, tzinfo=UTC))
    assert (after.index, _span(after)) == (2, (date(2024, 3, 31), date(2024, 4, 30)))
    common = period_for(
        date(2025, 1, 31), Interval.MONTHLY, "UTC", datetime(2025, 3, 1, tzinfo=UTC)
    )
    assert _span(common) == (date(2025, 2, 28), date(2025, 3, 31))
    assert common.days == 31


def test_yearly_leap_day_and_weekly_periods() -> None:
    leap_day = date(2024, 2, 29)
    year = period_for(leap_day, Interval.YEARLY, "UTC", datetime(2025, 3, 1, tzinfo=UTC))
    assert _span(year) == (date(2025, 2, 28), date(2026, 2, 28))
    assert (
        period_for(leap_day, Interval.YEARLY, "UTC", datetime(2028, 2, 29, tzinfo=UTC)).index == 4
    )
    week = period_for(date(2026, 1, 5), Interval.WEEKLY, "UTC", datetime(2026, 1, 18, tzinfo=UTC))
    assert (week.index, _span(week)) == (1, (date(2026, 1, 12), date(2026, 1, 19)))
    assert week.next().start_date == date(2026, 1, 19)


def test_an_evening_event_on_the_31st_belongs_to_that_days_period_in_new_york() -> None:
    moment = datetime(2026, 1, 31, 23, 30, tzinfo=NY)  # 04:30 UTC on Feb 1
    in_new_york = period_for(date(2026, 1, 1), Interval.MONTHLY, "America/New_York", moment)
    assert (in_new_york.index, in_new_york.end_date) == (0, date(2026, 2, 1))
    assert in_new_york.contains(moment) and not in_new_york.next().contains(moment)
    assert period_for(date(2026, 1, 1), Interval.MONTHLY, "UTC", moment).index == 1


def test_period_bounds_are_local_midnights_across_daylight_saving() -> None:
    march = JANUARY.model_copy(update={"index": 2})
    assert (march.start, march.end) == (
        datetime(2026, 3, 1, tzinfo=NY),
        datetime(2026, 4, 1, tzinfo=NY),
    )
    # Same-zone subtraction is wall time in Python; in UTC the month is an hour short.
    assert march.end.astimezone(UTC) - march.start.astimezone(UTC) == timedelta(days=31, hours=-1)
    assert march.days == 31


def test_bad_zones_and_naive_moments_are_refused() -> None:
    with pytest.raises(InvalidInput, match="IANA"):
        period_for(date(2026, 1, 1), Interval.MONTHLY, "Mars/Olympus", datetime.now(UTC))
    with pytest.raises(InvalidInput, match="no time zone"):
        JANUARY.contains(datetime(2026, 1, 5))


@pytest.mark.parametrize(
    ("at", "remaining", "unused", "new"),
    [
        (datetime(2026, 1, 1, 9, tzinfo=NY), 31, 30_00, 90_00),  # day 1: all of both fees
        (datetime(2026, 1, 16, 12, tzinfo=NY), 16, 15_48, 46_45),  # 3000×16/31=1548.39
        (datetime(2026, 1, 31, 23, 30, tzinfo=NY), 1, 97, 2_90),  # last day: 96.77, 290.32
        (datetime(2026, 1, 16, 3, tzinfo=UTC), 17, 16_45, 49_35),  # still Jan 15 in New York
    ],
)
def test_upgrade_credits_unused_days_and_charges_the_rest(
    at: datetime, remaining: int, unused: int, new: int
) -> None:
    change = change_plan(BASIC, PRO, JANUARY, at)
    assert change.kind is ChangeKind.UPGRADE and change.effective_at == at
    assert (change.days_in_period, change.days_remaining) == (31, remaining)
    assert (change.unused_old_minor, change.new_remaining_minor) == (unused, new)
    assert change.used_old_minor == 30_00 - unused


@pytest.mark.parametrize(("year", "days", "unused"), [(2024, 29, 15_52), (2023, 28, 15_00)])
def test_february_of_a_leap_year_has_29_days_to_prorate_over(
    year: int, days: int, unused: int
) -> None:
    february = BillingPeriod(
        anchor=date(year, 1, 1), interval=Interval.MONTHLY, timezone="UTC", index=1
    )
    change = change_plan(BASIC, PRO, february, datetime(year, 2, 15, 10, tzinfo=UTC))
    assert (change.days_in_period, change.unused_old_minor) == (days, unused)


def test_downgrade_and_cancel_take_effect_at_period_end_unless_immediate() -> None:
    at = datetime(2026, 1, 16, 12, tzinfo=NY)
    down = change_plan(PRO, BASIC, JANUARY, at)
    assert (down.kind, down.effective_at, down.unused_old_minor) == (
        ChangeKind.DOWNGRADE,
        JANUARY.end,
        0,
    )
    assert cancel(PRO, JANUARY, at, immediately=False).effective_at == JANUARY.end
    now = cancel(PRO, JANUARY, at, immediately=True)
    assert (now.kind, now.unused_old_minor, now.new_remaining_minor) == (
        ChangeKind.CANCEL,
        46_45,
        0,
    )


def test_changes_keep_interval_and_happen_inside_the_period() -> None:
    yearly = PRO.model_copy(update={"interval": Interval.YEARLY})
    with pytest.raises(InvalidInput, match="interval"):
        change_plan(BASIC, yearly, JANUARY, datetime(2026, 1, 5, tzinfo=NY))
    with pytest.raises(InvalidInput, match="outside"):
        change_plan(BASIC, PRO, JANUARY, datetime(2026, 2, 1, tzinfo=NY))


moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)
anchors = st.dates(min_value=date(2020, 1, 1), max_value=date(2020, 12, 31))


@settings(max_examples=80, deadline=None)
@given(
    anchor=anchors,
    interval=st.sampled_from(Interval),
    tz=st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Auckland"]),
    moment=moments,
)
def test_period_for_holds_the_moment_and_periods_tile(
    anchor: date, interval: Interval, tz: str, moment: datetime
) -> None:
    period = period_for(anchor, interval, tz, moment)
    assert period.contains(moment)
    assert period.start <= moment < period.end
    assert period.next().start_date == period.end_date
    if interval is not Interval.WEEKLY:
        assert period.start_date.day <= anchor.day


@settings(max_examples=60, deadline=None)
@given(
    old_fee=st.integers(0, 10**9),
    extra=st.integers(0, 10**9),
    day=st.integers(0, 30),
    hour=st.integers(0, 23),
)
def test_proration_shares_add_up_and_stay_within_the_fees(
    old_fee: int, extra: int, day: int, hour: int
) -> None:
    old = BASIC.model_copy(update={"base_fee_minor": old_fee})
    new = PRO.model_copy(update={"base_fee_minor": old_fee + extra})
    change = change_plan(old, new, JANUARY, datetime(2026, 1, 1 + day, hour, tzinfo=NY))
    assert change.days_remaining == 31 - day
    assert change.unused_old_minor + change.used_old_minor == old_fee
    assert 0 <= change.unused_old_minor <= old_fee
    assert 0 <= change.new_remaining_minor <= old_fee + extra
