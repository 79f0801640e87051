"""A campaign's changes and life cycle as plain Python: what the flow app's PATCH and
start/pause/stop routes apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from kiki.errors import Conflict, FailedPrecondition
from kiki.flow.campaigns import (
    AdGroup,
    Campaign,
    CampaignPatch,
    CampaignSpec,
    CampaignStatus,
    Goal,
)

START = datetime(2026, 5, 4, 9, tzinfo=UTC)
SPEC = CampaignSpec(
    campaign_id="c1",
    name="spring",
    starts_at=START,
    ends_at=START + timedelta(days=7),
    budget=Decimal("700"),
    goal=Goal(kind="roas", target=Decimal("3")),
    platforms=["meta", "google_ads"],
    ad_groups=[AdGroup(ad_group_id="g", segment="s", value_per_conversion=Decimal("40"))],
)


def test_a_patch_changes_only_what_it_names_in_micros() -> None:
    campaign = Campaign.from_spec("t", SPEC)
    patch = CampaignPatch(budget=Decimal("900.5"), goal=Goal(kind="cpa", target=Decimal("25")))
    changed = campaign.patched(patch)
    assert changed.budget_micros == 900_500_000
    assert (changed.goal_kind, changed.goal_target) == ("cpa", Decimal(25_000_000))
    assert changed.name == campaign.name and changed.ends_at == campaign.ends_at


def test_a_patch_is_checked_against_the_campaign_as_it_is() -> None:
    campaign = Campaign.from_spec("t", SPEC)
    with pytest.raises(Conflict, match="ends_at must be after"):
        campaign.patched(CampaignPatch(ends_at=START - timedelta(hours=1)))
    stopped = campaign.transitioned("stop")
    with pytest.raises(FailedPrecondition, match="is stopped"):
        stopped.patched(CampaignPatch(name="again"))


def test_start_pause_stop_follow_the_transitions_and_repeat_as_no_ops() -> None:
    draft = Campaign.from_spec("t", SPEC)
    running = draft.transitioned("start")
    assert running.status == CampaignStatus.RUNNING
    assert running.transitioned("start").status == CampaignStatus.RUNNING  # no-op
    assert running.transitioned("pause").status == CampaignStatus.PAUSED
    with pytest.raises(FailedPrecondition, match="cannot pause campaign c1: it is draft"):
        draft.transitioned("pause")
    with pytest.raises(FailedPrecondition, match="cannot start"):
        running.transitioned("stop").transitioned("start")
