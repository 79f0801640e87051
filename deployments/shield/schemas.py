"""SyncShield's request and response models: everything a budget actor would refuse is
refused here first, with the field named."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Header
from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deployments._serve import MoneyOut
from kiki.clock import TimeZoneName
from kiki.money import NonNegativeAmount, PositiveAmount, decimal_to_micros
from kiki.shield.breaker import BreakerSnapshot

PlatformName = Literal["google_ads", "meta", "tiktok", "linkedin", "amazon"]
CampaignId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
# Printable text only: PostgreSQL refuses NUL, and keys end up in the ledger and in logs.
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x20-\x7e]+$")]
ReservationId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x20-\x7e]+$")]
Currency = Annotated[str, Field(pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code")]
KeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="makes a retried write apply once"),
]


class BudgetSettings(BaseModel):
    """Caps and policy; on an update, omitted fields keep their current value. Everything an
    actor would refuse is refused here first, with the field named."""

    daily_budget: PositiveAmount | None = Field(None, description="cap per budget day; null = none")
    platform_budgets: dict[PlatformName, NonNegativeAmount] | None = Field(
        None, description="cap per platform; 0 keeps a platform from spending"
    )
    status: Literal["active", "paused", "stopped"] | None = None
    starts_at: AwareDatetime | None = Field(None, description="null = no start")
    ends_at: AwareDatetime | None = Field(None, description="null = no end")
    timezone: TimeZoneName | None = Field(None, description="budget days follow it")
    allowed_platforms: list[PlatformName] | None = Field(None, min_length=1)
    bid_min: NonNegativeAmount | None = None
    bid_max: NonNegativeAmount | None = None

    @field_validator("status", "timezone", "allowed_platforms", "platform_budgets", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            raise ValueError(f"{info.field_name} cannot be null; omit it to keep its value")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BudgetSettings:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.bid_min is not None and self.bid_max is not None and self.bid_min > self.bid_max:
            raise ValueError("bid_min must not exceed bid_max")
        return self

    def patches(self, total: Any | None) -> tuple[dict | None, dict | None]:
        given = self.model_fields_set
        caps: dict[str, Any] = {}
        if total is not None:
            caps["total"] = decimal_to_micros(total)
        if "daily_budget" in given:
            caps["daily"] = (
                None if self.daily_budget is None else decimal_to_micros(self.daily_budget)
            )
        if "platform_budgets" in given:
            caps["platforms"] = {
                p: decimal_to_micros(v) for p, v in (self.platform_budgets or {}).items()
            }
        policy: dict[str, Any] = {}
        for name in ("status", "timezone", "allowed_platforms"):
            if name in given:
                policy[name] = getattr(self, name)
        for name in ("starts_at", "ends_at"):
            if name in given:
                moment: datetime | None = getattr(self, name)
                policy[name] = moment.isoformat() if moment else None
        for name in ("bid_min", "bid_max"):
            if name in given:
                policy[name] = micros_or_none(getattr(self, name))
        return caps or None, policy or None


class AllocateRequest(BudgetSettings):
    campaign_id: CampaignId
    budget: PositiveAmount = Field(description="total budget of the campaign")
    currency: Currency = "USD"
    idempotency_key: IdempotencyKey | None = None


class BudgetUpdate(BudgetSettings):
    budget: NonNegativeAmount | None = Field(
        None, description="new total budget (raise or lower; 0 stops all spend)"
    )
    idempotency_key: IdempotencyKey | None = None


class SpendView(BaseModel):
    committed: MoneyOut
    reserved: MoneyOut


class BudgetView(BaseModel):
    campaign_id: str
    currency: str
    budget: MoneyOut
    daily_budget: MoneyOut | None
    platform_budgets: dict[str, MoneyOut]
    committed: MoneyOut
    reserved: MoneyOut
    remaining: MoneyOut
    today: dict[str, Any]
    platforms: dict[str, SpendView]
    policy: dict[str, Any]
    open_reservations: int
    over_delivered: MoneyOut
    blocked: bool

    @classmethod
    def of(cls, snap: dict[str, Any]) -> BudgetView:
        cur = snap["currency"]
        caps = snap["caps"]

        def m(micros: int) -> MoneyOut:
            return MoneyOut.of(micros, cur)

        policy = dict(snap["policy"])
        for name in ("bid_min", "bid_max"):
            if policy.get(name) is not None:
                policy[name] = m(policy[name]).model_dump()
        return cls(
            campaign_id=snap["campaign_id"],
            currency=cur,
            budget=m(caps["total"]),
            daily_budget=None if caps["daily"] is None else m(caps["daily"]),
            platform_budgets={p: m(v) for p, v in caps["platforms"].items()},
            committed=m(snap["committed"]),
            reserved=m(snap["reserved"]),
            remaining=m(snap["remaining"]),
            today={
                "day": snap["today"]["day"],
                "committed": m(snap["today"]["committed"]),
                "reserved": m(snap["today"]["reserved"]),
            },
            platforms={
                p: SpendView(committed=m(v["committed"]), reserved=m(v["reserved"]))
                for p, v in snap["platforms"].items()
            },
            policy=policy,
            open_reservations=snap["open_reservations"],
            over_delivered=m(snap["over_delivered"]),
            blocked=snap["blocked"],
        )


class CheckRequest(BaseModel):
    campaign_id: CampaignId
    bid_amount: NonNegativeAmount
    platform: PlatformName


class Denial(BaseModel):
    rule: str = Field(description="the compliance rule or cap that refused it")
    message: str


class CheckResponse(BaseModel):
    campaign_id: str
    platform: str
    allowed: bool
    bid: MoneyOut
    headroom: MoneyOut = Field(description="what could still be reserved on this platform today")
    denials: list[Denial]


class ReserveRequest(BaseModel):
    campaign_id: CampaignId
    amount: PositiveAmount = Field(description="spend to hold against the caps")
    platform: PlatformName
    bid: NonNegativeAmount | None = Field(None, description="checked against bid_min / bid_max")
    allow_partial: bool = Field(True, description="grant what is left when it is less")
    idempotency_key: IdempotencyKey | None = None


class ReserveResponse(BaseModel):
    campaign_id: str
    status: Literal["granted", "partial", "denied"]
    reservation_id: str | None
    granted: MoneyOut
    requested: MoneyOut
    denial: Denial | None
    replayed: bool = Field(description="true when this idempotency key was already applied")


class BatchReserveRequest(BaseModel):
    reservations: list[ReserveRequest] = Field(min_length=1, max_length=5000)


class BatchItemError(BaseModel):
    campaign_id: str
    error: dict[str, str]


class BatchReserveResponse(BaseModel):
    results: list[ReserveResponse | BatchItemError]


class CommitRequest(BaseModel):
    campaign_id: CampaignId
    reservation_id: ReservationId
    actual_spend: NonNegativeAmount = Field(description="what the platform reports it spent")
    idempotency_key: IdempotencyKey | None = None


class ReleaseRequest(BaseModel):
    campaign_id: CampaignId
    reservation_id: ReservationId
    idempotency_key: IdempotencyKey | None = None


class SettleResponse(BaseModel):
    campaign_id: str
    reservation_id: str
    status: Literal["committed", "released"]
    amount: MoneyOut
    over_delivered: MoneyOut
    replayed: bool


class BreakerOutcome(BaseModel):
    success: bool
    calls: int = Field(1, ge=1, le=1000)


class PlatformView(BaseModel):
    platform: str
    breaker: BreakerSnapshot = Field(description="the shared breaker (connectors, operators)")
    rate_per_s: float
    burst: int
    tokens: float
    tenant_breaker: BreakerSnapshot | None = Field(
        None, description="your own breaker, fed by the outcomes you report"
    )


class AdmitResponse(BaseModel):
    platform: str
    allowed: bool
    state: str


def micros_or_none(value: Any | None) -> int | None:
    return None if value is None else decimal_to_micros(value)
