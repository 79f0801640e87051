"""SyncFlow's response models (the campaign spec and patch are the domain's:
kiki.flow.campaigns)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from deployments._serve import MoneyOut
from kiki.db.values import PgText
from kiki.flow.campaigns import AdGroup, Campaign, CampaignStatus, PacingSettings
from kiki.money import micros_to_decimal_str


class GoalView(BaseModel):
    kind: Literal["roas", "cpa"]
    target: str = Field(description="ROAS ratio, or CPA amount in the campaign's currency")


class CampaignView(BaseModel):
    campaign_id: str
    name: str
    status: CampaignStatus
    starts_at: datetime
    ends_at: datetime
    timezone: str
    budget: MoneyOut
    spent: MoneyOut | None = Field(None, description="committed spend, from SyncShield")
    goal: GoalView
    platforms: list[str]
    ad_groups: list[AdGroup]
    max_bid: MoneyOut | None
    pacing: PacingSettings
    pacing_error: float | None = Field(
        None,
        description="in a list: |spend - target| / budget at the campaign's newest tick "
        "(none before its first)",
    )
    roas: float | None = Field(
        None,
        description="in a list asked with roas=true: conversion value / spend as the bid loop "
        "measured them since its shard last loaded the campaign (it keeps value in memory "
        "only); none before any spend or when the loop does not answer",
    )

    @classmethod
    def of(
        cls,
        c: Campaign,
        spent_micros: int | None = None,
        tick: tuple[int, int] | None = None,
        measured: tuple[int, int] | None = None,
    ) -> CampaignView:
        """`tick`: (target, spend) at the newest tick; `measured`: the loop's (spend, value)."""
        target = (
            format(c.goal_target, "f")
            if c.goal_kind == "roas"
            else micros_to_decimal_str(int(c.goal_target))
        )
        return cls(
            campaign_id=c.campaign_id,
            name=c.name,
            status=c.status,
            starts_at=c.starts_at,
            ends_at=c.ends_at,
            timezone=c.timezone,
            budget=MoneyOut.of(c.budget_micros, c.currency),
            spent=None if spent_micros is None else MoneyOut.of(spent_micros, c.currency),
            goal=GoalView(kind=c.goal_kind, target=target),
            platforms=list(c.platforms),
            ad_groups=list(c.ad_groups),
            max_bid=None if c.max_bid_micros is None else MoneyOut.of(c.max_bid_micros, c.currency),
            pacing=c.pacing,
            pacing_error=None
            if tick is None or c.budget_micros <= 0
            else abs(tick[1] - tick[0]) / c.budget_micros,
            roas=None if measured is None or measured[0] <= 0 else measured[1] / measured[0],
        )


class CampaignPage(BaseModel):
    campaigns: list[CampaignView]
    next_after: str | None = Field(description="pass as `after` for the next page")


class Decision(BaseModel):
    tick_id: int
    decided_at: datetime
    campaign_id: str
    ad_group_id: str
    platform: str
    value_micros: int
    cvr: float
    pacing_multiplier: float
    target_micros: int
    spent_micros: int
    budget_left_micros: int
    reserved_micros: int = Field(description="what the unit's platform may spend this tick")
    bid_micros: int
    reason: str
    connector_result: str
    shard: int


class DecisionPage(BaseModel):
    decisions: list[Decision]


class LoopShard(BaseModel):
    shard: int
    campaigns: int
    ticks: int
    slow_ticks: int
    audit_rows: int


class SegmentMembers(BaseModel):
    customer_ids: list[Annotated[PgText, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=1_000_000
    )


class SegmentView(BaseModel):
    segment_id: str
    customers: int
    suppressed: int = Field(0, description="on a PUT: customers erased at their request, dropped")


class PacingPoint(BaseModel):
    at: datetime
    target_micros: int = Field(description="the target curve: what should be spent by now")
    spent_micros: int = Field(description="cumulative committed spend")
    reserved_micros: dict[str, int] = Field(
        description="per platform: what SyncShield granted it for this tick"
    )
    platform_spent_micros: dict[str, int] = Field(
        description="per platform: its cumulative committed spend (0 in ticks recorded "
        "before this was)"
    )


class PacingView(BaseModel):
    """A campaign's pacing (one point a tick, oldest first) and its newest tick's decisions."""

    campaign_id: str
    status: CampaignStatus
    currency: str
    budget_micros: int
    points: list[PacingPoint]
    decisions: list[Decision] = Field(description="the newest tick's decisions, with reasons")
