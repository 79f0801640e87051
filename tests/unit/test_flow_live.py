"""The live market's pure parts: credentials checked at load, spend totals to increments."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from kiki.errors import ConfigError
from kiki.flow.connectors.base import SpendRow
from kiki.flow.connectors.google_ads import GoogleAdsSettings
from kiki.flow.leases import LeaseBook
from kiki.flow.live import SpendMarks, load_credentials, parse_credentials

GOOGLE = {
    "base_url": "https://googleads.googleapis.com",
    "developer_token": "d",
    "access_token": "t",
}


def test_credentials_are_validated_per_platform(tmp_path: Path) -> None:
    parsed = parse_credentials({"google_ads": GOOGLE})
    assert isinstance(parsed["google_ads"], GoogleAdsSettings)
    with pytest.raises(ConfigError, match="myspace"):
        parse_credentials({"myspace": {}})
    with pytest.raises(ConfigError, match="google_ads: access_token"):
        parse_credentials({"google_ads": {**GOOGLE, "access_token": None}})
    path = tmp_path / "credentials.json"
    with pytest.raises(ConfigError, match="does not exist"):
        load_credentials(path)
    path.write_text("[1]")
    with pytest.raises(ConfigError, match="an object per platform"):
        load_credentials(path)
    path.write_text(json.dumps({"google_ads": GOOGLE}))
    assert load_credentials(path) == {"google_ads": GOOGLE}


def row(ref: str, day: int, spend: int, clicks: int = 0) -> SpendRow:
    return SpendRow(
        ad_group_ref=ref,
        day=date(2026, 3, day),
        impressions=0,
        clicks=clicks,
        conversions=0,
        spend_micros=spend,
    )


def test_daily_totals_become_increments() -> None:
    marks = SpendMarks()
    marks.report("google_ads", [row("a", 1, 500, 2), row("b", 1, 100)])
    first = marks.take()
    assert first[("google_ads", "a")].spend_micros == 500
    assert first[("google_ads", "a")].clicks == 2
    marks.report("google_ads", [row("a", 1, 800, 3), row("b", 1, 100), row("a", 2, 50)])
    again = marks.take()
    assert again[("google_ads", "a")].spend_micros == 300 + 50
    assert again[("google_ads", "a")].clicks == 1
    assert ("google_ads", "b") not in again  # nothing new
    # A total revised down charges nothing (and is not refunded).
    marks.report("google_ads", [row("a", 1, 700)])
    assert marks.take() == {}


def test_a_day_is_charged_once_across_commits_refusals_and_restarts() -> None:
    marks = SpendMarks()
    marks.report("meta", [row("a", 1, 500)])
    assert marks.take()[("meta", "a")].spend_micros == 500
    carried = marks.pending("meta", {"a"})
    assert carried == (("meta", "a", "2026-03-01", 500, 0, 0, 0),)
    marks.settled(carried, committed=True)
    assert marks.pending("meta", {"a"}) == ()
    # A commit refused for good: its spend is delivered again into the next lease.
    marks.report("meta", [row("a", 1, 900)])
    assert marks.take()[("meta", "a")].spend_micros == 400
    marks.settled(marks.pending("meta", {"a"}), committed=False)
    assert marks.take()[("meta", "a")].spend_micros == 400
    # A restart: only the committed marks survive (the store's rows); the rest comes again.
    restarted = SpendMarks()
    restarted.restore([("meta", "a", "2026-03-01", 500, 0, 0, 0)])
    restarted.report("meta", [row("a", 1, 900)])
    assert restarted.take()[("meta", "a")].spend_micros == 400
    # Leases dropped while a commit waits to be retried: that commit's spend is not redone.
    in_flight = restarted.pending("meta", {"a"})
    restarted.rewind([in_flight])
    assert restarted.take() == {}
    restarted.rewind([])
    assert restarted.take()[("meta", "a")].spend_micros == 400
    assert restarted.spent_on("meta", {"a"}, date(2026, 3, 1)) == 900
    restarted.forget_before(date(2026, 3, 2))
    assert restarted.spent_on("meta", {"a"}, date(2026, 3, 1)) == 0


def test_live_leases_keep_their_exposure_and_carry_late_spend() -> None:
    """The live market's leases: spend reported while a pool held none is carried into its
    next lease, and a renewed lease never holds less than the closed one had left."""
    book = LeaseBook(np.array([0]), window=2, keep_exposure=True)
    need, live, left = np.array([100]), np.array([True]), np.array([10_000])
    renewals = book.renewals(1, need, live, left)
    assert renewals.reserves == [(0, 200)]
    book.opened(0, "r1", 200, 1)
    book.spend(np.array([50]))
    # Due: commit 50; the pool now needs only 10 a tick, yet 150 stays held.
    renewals = book.renewals(book.due[0], np.array([10]), live, left)
    assert renewals.commits == [(0, "r1", 50)] and renewals.reserves == [(0, 150)]
    book.spend(np.array([30]))  # reported with no lease open: carried
    renewals = book.renewals(book.due[0] + 1, np.array([10]), live, left)
    assert renewals.reserves == [(0, 20 + 30)]
    book.opened(0, "r2", 50, book.due[0] + 1)
    assert book.remaining()[0] == 20
    assert book.caps(np.array([100]))[0] == 20
