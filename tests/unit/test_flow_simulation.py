"""The simulator's pure parts: seeded synthetic campaigns and the report arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kiki.flow.simulation import (
    CampaignResult,
    SimulationOptions,
    campaign_result,
    summaries,
    synthetic_campaigns,
)

START = datetime(2026, 6, 1, 8, tzinfo=UTC)
TENANT = "00000000-0000-0000-0000-00000000000a"


def test_synthetic_campaigns_are_seeded_and_valid() -> None:
    options = SimulationOptions(campaigns=5, hours=3, platforms=2, ad_groups=3, seed=9)
    first = synthetic_campaigns(TENANT, options, START)
    assert first == synthetic_campaigns(TENANT, options, START)
    assert first != synthetic_campaigns(TENANT, options.model_copy(update={"seed": 1}), START)
    for c in first:
        assert c.platforms == ("google_ads", "meta") and len(c.ad_groups) == 3
        assert c.ends_at - c.starts_at == timedelta(hours=3)
        assert 1_000 * 3 * 10**6 <= c.budget_micros < 3_000 * 3 * 10**6


def test_campaign_result_scores_against_the_curve() -> None:
    (campaign,) = synthetic_campaigns(TENANT, SimulationOptions(campaigns=1, hours=1), START)
    budget = campaign.budget_micros
    moments = [START + timedelta(minutes=30)]
    exact = campaign_result(campaign, moments, [0], budget // 2, 0, budget, 0.0)
    assert exact.utilisation == pytest.approx(0.5)
    assert exact.roas == pytest.approx(2.0)
    # Nothing spent at half time: the error is the whole target at that moment (~half).
    assert 0.4 < exact.max_pacing_error < 0.5
    over = campaign_result(campaign, moments, [0], budget + 5, 0, 0, 0.0)
    assert over.overspend_micros == 5


def result(util: float, error: float, limited: float) -> CampaignResult:
    return CampaignResult(
        campaign_id="c",
        budget_micros=1_000,
        spend_micros=round(util * 1_000),
        utilisation=util,
        max_pacing_error=error,
        overspend_micros=0,
        over_delivered_micros=0,
        roas=None,
        demand_limited=limited,
    )


def test_summaries_split_campaigns_that_lacked_demand() -> None:
    rows = [result(0.99, 0.01, 0.0), result(1.0, 0.03, 0.1), result(0.6, 0.4, 0.9)]
    out = summaries(rows)
    assert out["all"].campaigns == 3 and out["all"].at_least_98pct == 2
    assert out["all"].utilisation == pytest.approx((990 + 1000 + 600) / 3000)
    allowed = out["demand_allowed"]
    assert allowed.campaigns == 2 and allowed.within_2pct == 1
    assert allowed.pacing_error_max == pytest.approx(0.03)
