"""Platform-side caps: the daily budget pushed for an allowance, per platform, and when a
change is worth a push."""

from __future__ import annotations

import pytest

from kiki.flow.caps import TERMS, daily_budget, most_delivered, push_due
from kiki.flow.connectors import CONNECTORS


def test_every_connector_has_budget_terms() -> None:
    assert set(TERMS) == set(CONNECTORS)


@pytest.mark.parametrize(
    ("platform", "budget"),
    [
        ("google_ads", 5_000_000),  # delivers up to 2x: 10.00 allowed -> 5.00 budget
        ("meta", 5_710_000),  # up to 1.75x: 10.00 / 1.75 = 5.714... -> 5.71
        ("tiktok", 10_000_000),
        ("linkedin", 6_660_000),  # up to 1.5x: 6.666... -> 6.66
        ("amazon", 8_000_000),  # up to 1.25x
    ],
)
def test_the_budget_pushed_keeps_the_platforms_worst_day_within_the_allowance(
    platform: str, budget: int
) -> None:
    assert daily_budget(platform, 10_000_000, "USD") == budget
    assert most_delivered(platform, budget) <= 10_000_000
    # One cent more and the platform's own overshoot could pass the allowance (but Meta's
    # and LinkedIn's rounding leaves a little room: never above, by at most a cent x factor).
    assert most_delivered(platform, budget + 10_000) > 10_000_000 - 20_000


def test_whole_minor_units_and_no_negative_budget() -> None:
    assert daily_budget("tiktok", 1_234_567, "USD") == 1_230_000
    assert daily_budget("tiktok", 1_999_999, "JPY") == 1_000_000  # whole yen
    assert daily_budget("google_ads", -5, "USD") == 0


def test_when_a_budget_is_pushed() -> None:
    assert push_due(None, 0, 0.1)  # never pushed, or the last push failed
    assert push_due(1_000_000, 990_000, 0.1)  # any cut: the lease must hold
    assert not push_due(1_000_000, 1_000_000, 0.1)
    assert not push_due(1_000_000, 1_100_000, 0.1)  # a small rise waits
    assert push_due(1_000_000, 1_100_001, 0.1)
