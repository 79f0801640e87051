"""Reconciliation maths: both sides per campaign and platform, and claims only where a
platform documents giving over-delivery back."""

from __future__ import annotations

from datetime import date

from kiki.flow.reconcile import reconcile

DAY = date(2026, 12, 1)
T = "00000000-0000-0000-0000-000000000001"


def test_differences_and_claims_follow_each_platforms_terms() -> None:
    google = (T, "c1", "google_ads", "123", "900")
    tiktok = (T, "c1", "tiktok", "7", "55")
    meta = (T, "c2", "meta", "act", "66")
    result = reconcile(
        DAY,
        committed={
            (T, "c1", "google_ads"): 9_000_000,
            (T, "c1", "tiktok"): 4_000_000,
            (T, "c2", "meta"): 1_000_000,
        },
        # Google delivered 12.00 on a 5.00 budget: 2.00 beyond its 2x limit; TikTok 6.00 on
        # 4.00, but TikTok documents no credit process; Meta matches.
        reported={google: 12_000_000, tiktok: 6_000_000, meta: 1_000_000},
        pushed={google: 5_000_000, tiktok: 4_000_000},
        currencies={(T, "c1"): "USD", (T, "c2"): "EUR"},
    )
    lines = {line.platform: line for line in result.lines}
    assert lines["google_ads"].difference_micros == 3_000_000
    assert lines["google_ads"].status == "platform_higher"
    assert lines["google_ads"].over_limit_micros == 2_000_000
    assert lines["tiktok"].over_limit_micros == 2_000_000 and lines["tiktok"].credit == "none"
    assert lines["meta"].status == "match" and lines["meta"].budget_pushed_micros is None
    assert result.differences == 2
    [claim] = result.claims
    assert (claim.platform, claim.campaign_ref) == ("google_ads", "900")
    assert claim.amount_micros == 2_000_000
    assert claim.currency == "USD" and "invoice" in claim.process


def test_kiki_higher_and_a_day_without_reports() -> None:
    result = reconcile(DAY, {(T, "c1", "linkedin"): 500}, {}, {}, {(T, "c1"): "USD"})
    [line] = result.lines
    assert line.status == "kiki_higher" and line.difference_micros == -500
    assert result.claims == []
