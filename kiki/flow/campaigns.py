"""Campaigns: what a tenant asks SyncFlow to run, validated once at the edge.

A campaign has a schedule in its own time zone, a total budget (held by SyncShield), a goal
(target ROAS or target CPA), the platforms it runs on and ad groups, each aimed at an audience
segment. Every ad group runs on every platform of its campaign: one *bidding unit* per
(ad group, platform), the grain of the bid loop and of the audit trail.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from kiki.clock import TimeZoneName
from kiki.errors import Conflict, FailedPrecondition, InvalidInput
from kiki.flow.connectors.base import PLATFORMS
from kiki.flow.pacing import PacingPlan, PacingShape
from kiki.money import (
    DecimalAmount,
    NonNegativeAmount,
    PositiveAmount,
    decimal_to_micros,
    normalize_currency,
)
from kiki.shield import BudgetOp

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
Platform = Literal["google_ads", "meta", "tiktok", "linkedin", "amazon"]


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


# start / pause / stop: which states each action may leave from.
TRANSITIONS: dict[str, tuple[set[CampaignStatus], CampaignStatus]] = {
    "start": ({CampaignStatus.DRAFT, CampaignStatus.PAUSED}, CampaignStatus.RUNNING),
    "pause": ({CampaignStatus.RUNNING}, CampaignStatus.PAUSED),
    "stop": ({CampaignStatus.DRAFT, CampaignStatus.RUNNING, CampaignStatus.PAUSED},
             CampaignStatus.STOPPED),
}  # fmt: skip


class Goal(BaseModel):
    """Target ROAS (conversion value per unit of spend, e.g. "3.0") or target CPA (an amount
    per conversion in the campaign's currency)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["roas", "cpa"]
    target: DecimalAmount = Field(description='ROAS ratio such as "3.0", or CPA amount "25.00"')

    @field_validator("target")
    @classmethod
    def _positive(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise ValueError("the goal's target must be positive")
        return value


class PlatformRef(BaseModel):
    """Where an ad group lives on a real platform (unused by the sandbox exchange)."""

    account_id: str = Field(min_length=1, max_length=128)
    campaign_ref: str = Field(min_length=1, max_length=128)
    ad_group_ref: str = Field(min_length=1, max_length=128)


class AdGroup(BaseModel):
    ad_group_id: Identifier
    segment: Identifier = Field(description="audience segment; its value comes from SyncValue")
    value_per_conversion: NonNegativeAmount = Field(
        description="value of a conversion when SyncValue has no prediction for the segment"
    )
    platform_refs: dict[Platform, PlatformRef] = Field(default_factory=dict)


class PacingSettings(BaseModel):
    shape: PacingShape = "even"
    slow_start: float = Field(0.05, ge=0, lt=0.5)
    fast_finish: float = Field(0.02, ge=0, lt=0.5)


class CampaignSpec(BaseModel):
    """The body of `POST /flow/api/v1/campaigns`."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    timezone: TimeZoneName = "UTC"
    budget: PositiveAmount = Field(description="total budget in the campaign's currency")
    currency: str = "USD"
    goal: Goal
    platforms: list[Platform] = Field(min_length=1)
    ad_groups: list[AdGroup] = Field(min_length=1, max_length=100)
    max_bid: PositiveAmount | None = Field(None, description="never bid above this per click")
    pacing: PacingSettings = PacingSettings()

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        try:
            return normalize_currency(value)
        except InvalidInput as exc:  # a ValueError, so the 422 names the field
            raise ValueError(exc.message) from None

    @field_validator("platforms")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("platforms must not repeat")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.budget <= 0:
            raise ValueError("budget must be positive")
        ids = [g.ad_group_id for g in self.ad_groups]
        if len(set(ids)) != len(ids):
            raise ValueError("ad_group_id must be unique within a campaign")
        return self


class CampaignPatch(BaseModel):
    """Fields to change; omitted ones keep their value. The budget may not drop below what
    is already spent (SyncShield holds the cap)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    ends_at: AwareDatetime | None = None
    budget: PositiveAmount | None = None
    goal: Goal | None = None
    max_bid: PositiveAmount | None = None
    pacing: PacingSettings | None = None
    ad_groups: list[AdGroup] | None = Field(None, min_length=1, max_length=100)


class Campaign(BaseModel):
    """A stored campaign: the spec in integer micros, plus its state."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    campaign_id: str
    name: str
    status: CampaignStatus
    starts_at: datetime
    ends_at: datetime
    timezone: str
    budget_micros: int
    currency: str
    goal_kind: Literal["roas", "cpa"]
    goal_target: Decimal  # ROAS ratio, or CPA in micros
    platforms: tuple[str, ...]
    ad_groups: tuple[AdGroup, ...]
    max_bid_micros: int | None
    pacing: PacingSettings

    @classmethod
    def from_spec(
        cls, tenant_id: str, spec: CampaignSpec, status: CampaignStatus = CampaignStatus.DRAFT
    ) -> Campaign:
        return cls(
            tenant_id=tenant_id,
            campaign_id=spec.campaign_id,
            name=spec.name,
            status=status,
            starts_at=spec.starts_at,
            ends_at=spec.ends_at,
            timezone=spec.timezone,
            budget_micros=decimal_to_micros(spec.budget),
            currency=spec.currency,
            goal_kind=spec.goal.kind,
            goal_target=spec.goal.target
            if spec.goal.kind == "roas"
            else Decimal(decimal_to_micros(spec.goal.target)),
            platforms=tuple(p for p in PLATFORMS if p in spec.platforms),
            ad_groups=tuple(spec.ad_groups),
            max_bid_micros=decimal_to_micros(spec.max_bid) if spec.max_bid is not None else None,
            pacing=spec.pacing,
        )

    def patched(self, patch: CampaignPatch) -> Campaign:
        """The campaign with `patch` applied, checked against what it is now."""
        if self.status == CampaignStatus.STOPPED:
            raise FailedPrecondition(f"campaign {self.campaign_id} is stopped; create a new one")
        changes: dict[str, Any] = {}
        if patch.name is not None:
            changes["name"] = patch.name
        if patch.pacing is not None:
            changes["pacing"] = patch.pacing
        if patch.ends_at is not None:
            if patch.ends_at <= self.starts_at:
                raise Conflict("ends_at must be after the campaign's starts_at")
            changes["ends_at"] = patch.ends_at
        if patch.budget is not None:
            changes["budget_micros"] = decimal_to_micros(patch.budget)
        if patch.goal is not None:
            changes["goal_kind"] = patch.goal.kind
            changes["goal_target"] = (
                patch.goal.target
                if patch.goal.kind == "roas"
                else Decimal(decimal_to_micros(patch.goal.target))
            )
        if patch.max_bid is not None:
            changes["max_bid_micros"] = decimal_to_micros(patch.max_bid)
        if patch.ad_groups is not None:
            changes["ad_groups"] = tuple(patch.ad_groups)
        return self.model_copy(update=changes)

    def transitioned(self, action: str) -> Campaign:
        """start (draft or paused -> running), pause (running -> paused), stop (-> stopped,
        for good). Repeating an action that already holds is a no-op."""
        sources, target = TRANSITIONS[action]
        if self.status != target and self.status not in sources:
            raise FailedPrecondition(
                f"cannot {action} campaign {self.campaign_id}: it is {self.status.value}"
            )
        return self.model_copy(update={"status": target})

    def pacing_plan(self) -> PacingPlan:
        return PacingPlan(
            self.starts_at,
            self.ends_at,
            self.timezone,
            self.pacing.shape,
            self.pacing.slow_start,
            self.pacing.fast_finish,
        )

    def live(self, moment: datetime) -> bool:
        """Is the campaign bidding at `moment`?"""
        return self.status == CampaignStatus.RUNNING and self.starts_at <= moment < self.ends_at


_SHIELD_STATUS = {
    CampaignStatus.DRAFT: "paused",
    CampaignStatus.RUNNING: "active",
    CampaignStatus.PAUSED: "paused",
    CampaignStatus.STOPPED: "stopped",
}


def budget_op(campaign: Campaign, idempotency_key: str | None = None) -> BudgetOp:
    """The SyncShield command that puts the campaign's budget and policy in place: the total
    cap, the schedule, the platforms, the max bid and the status (SyncShield refuses
    reservations for a campaign that is not active, outside its schedule or off its
    platforms, whatever the bid loop asks)."""
    return BudgetOp(
        "allocate",
        campaign.tenant_id,
        campaign.campaign_id,
        idempotency_key=idempotency_key,
        currency=campaign.currency,
        caps_patch={"total": campaign.budget_micros},
        policy_patch={
            "status": _SHIELD_STATUS[campaign.status],
            "starts_at": campaign.starts_at.isoformat(),
            "ends_at": campaign.ends_at.isoformat(),
            "timezone": campaign.timezone,
            "allowed_platforms": list(campaign.platforms),
            "bid_max": campaign.max_bid_micros,
        },
    )
