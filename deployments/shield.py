"""SyncShield (`/shield`): budget governance: caps, reservations, compliance, consent.

A thin HTTP shell: budgets live in the sharded budget actors (actors/budget/), breakers and
platform rate budgets in the guard actor (actors/guard.py), consent in PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Request
from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from ray import serve

from actors.budget import BudgetClient
from actors.guard import platform_guard
from actors.resilience import within
from deployments.common import (
    CurrentTenant,
    MoneyOut,
    ServiceIngress,
    ServiceRuntime,
    create_service_api,
)
from deployments.shield_consent import router as consent_router
from kiki.clock import TimeZoneName
from kiki.errors import NotFound, RateLimited, Unavailable
from kiki.money import NonNegativeAmount, PositiveAmount, decimal_to_micros
from kiki.shield.book import BudgetOp, OpResult
from kiki.shield.breaker import BreakerSnapshot
from kiki.shield.policy import PLATFORMS


def _attach_actors(app: FastAPI, runtime: ServiceRuntime) -> None:
    s = runtime.settings
    budgets = app.state.budgets = BudgetClient.for_settings(runtime.database_url, s)
    app.state.guard = platform_guard(
        num_cpus=min(0.05, s.replica_cpus),
        rate={"rate_per_s": s.platform_rate_per_s, "burst": s.platform_burst},
    )

    async def guard_probe() -> dict[str, str]:
        await _call_guard(app, "status")
        return {"guard": "ok"}

    runtime.probes["budget_shards"] = lambda: budgets.probe(s.health_probe_timeout_s)
    runtime.probes["guard"] = guard_probe


async def _call_guard(app: FastAPI, method: str, *args: Any) -> Any:
    """One call to the platform guard actor, within the platform's actor-call deadline."""
    timeout = app.state.runtime.settings.actor_call_timeout_s
    return await within(
        getattr(app.state.guard, method).remote(*args), timeout, "the platform guard"
    )


api = create_service_api(
    "shield",
    "SyncShield",
    "Budget governance: caps, reservations, compliance, consent, circuit breakers, rate limits."
    " Amounts are decimal strings (or JSON numbers, read exactly) in the campaign's currency.",
    on_startup=_attach_actors,
)
api.include_router(consent_router, tags=["consent"])

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


# --- request and response models ---------------------------------------------------------


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
                policy[name] = _micros(getattr(self, name))
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
    breaker: BreakerSnapshot
    rate_per_s: float
    burst: int
    tokens: float


class AdmitResponse(BaseModel):
    platform: str
    allowed: bool
    state: str


# --- helpers ------------------------------------------------------------------------------


def _key(body_key: str | None, header_key: str | None, suffix: str = "") -> str | None:
    key = body_key or header_key
    return f"{key}{suffix}" if key else None


def _budgets(request: Request) -> BudgetClient:
    return request.app.state.budgets


async def _one(request: Request, op: BudgetOp) -> OpResult:
    (result,) = await _budgets(request).execute([op])
    result.raise_for_error()
    return result


def _micros(value: Any | None) -> int | None:
    return None if value is None else decimal_to_micros(value)


def _reserve_view(result: OpResult) -> ReserveResponse:
    cur = result.currency or "USD"
    denial = Denial(rule=result.rule, message=result.message or "") if result.rule else None
    return ReserveResponse(
        campaign_id=result.campaign_id,
        status=result.outcome,
        reservation_id=result.reservation_id,
        granted=MoneyOut.of(result.amount_micros, cur),
        requested=MoneyOut.of(result.requested_micros, cur),
        denial=denial,
        replayed=result.replayed,
    )


def _reserve_op(tenant_id: str, body: ReserveRequest, key: str | None) -> BudgetOp:
    return BudgetOp(
        "reserve",
        tenant_id,
        body.campaign_id,
        key,
        amount_micros=decimal_to_micros(body.amount),
        platform=body.platform,
        bid_micros=_micros(body.bid),
        allow_partial=body.allow_partial,
    )


def _settled(result: OpResult) -> SettleResponse:
    cur = result.currency or "USD"
    return SettleResponse(
        campaign_id=result.campaign_id,
        reservation_id=result.reservation_id or "",
        status=result.outcome,
        amount=MoneyOut.of(result.amount_micros, cur),
        over_delivered=MoneyOut.of(result.over_delivered_micros, cur),
        replayed=result.replayed,
    )


# --- budgets ------------------------------------------------------------------------------


@api.post("/api/v1/allocate", response_model=BudgetView, tags=["budgets"])
async def allocate(
    body: AllocateRequest, tenant: CurrentTenant, request: Request, idem: KeyHeader = None
) -> BudgetView:
    """Create a campaign's budget, or set its total budget (raise or lower). Lowering below
    what is already committed and reserved is refused (409)."""
    caps, policy = body.patches(body.budget)
    op = BudgetOp(
        "allocate",
        str(tenant.id),
        body.campaign_id,
        _key(body.idempotency_key, idem),
        currency=body.currency.upper(),
        caps_patch=caps,
        policy_patch=policy,
    )
    return BudgetView.of((await _one(request, op)).snapshot or {})


@api.patch("/api/v1/budget/{campaign_id}", response_model=BudgetView, tags=["budgets"])
async def update_budget(
    campaign_id: CampaignId,
    body: BudgetUpdate,
    tenant: CurrentTenant,
    request: Request,
    idem: KeyHeader = None,
) -> BudgetView:
    """Raise or lower caps, change schedule, platforms, bid range or status."""
    caps, policy = body.patches(body.budget)
    op = BudgetOp(
        "policy",
        str(tenant.id),
        campaign_id,
        _key(body.idempotency_key, idem),
        caps_patch=caps,
        policy_patch=policy,
    )
    return BudgetView.of((await _one(request, op)).snapshot or {})


@api.get("/api/v1/budget/{campaign_id}", response_model=BudgetView, tags=["budgets"])
async def get_budget(
    campaign_id: CampaignId, tenant: CurrentTenant, request: Request
) -> BudgetView:
    """Caps, committed and reserved spend, today's and each platform's use."""
    result = await _one(request, BudgetOp("status", str(tenant.id), campaign_id))
    return BudgetView.of(result.snapshot or {})


@api.post("/api/v1/budget/{campaign_id}/unblock", response_model=BudgetView, tags=["budgets"])
async def unblock(
    campaign_id: CampaignId, tenant: CurrentTenant, request: Request, idem: KeyHeader = None
) -> BudgetView:
    """Lift the block an over-delivery put on a campaign, once it has been reviewed."""
    result = await _one(request, BudgetOp("unblock", str(tenant.id), campaign_id, idem))
    return BudgetView.of(result.snapshot or {})


@api.post("/api/v1/check", response_model=CheckResponse, tags=["budgets"])
async def check(body: CheckRequest, tenant: CurrentTenant, request: Request) -> CheckResponse:
    """Would this bid be allowed now? Every compliance rule and cap it breaks, none held."""
    op = BudgetOp(
        "check",
        str(tenant.id),
        body.campaign_id,
        platform=body.platform,
        bid_micros=decimal_to_micros(body.bid_amount),
    )
    result = await _one(request, op)
    cur = result.currency or "USD"
    return CheckResponse(
        campaign_id=body.campaign_id,
        platform=body.platform,
        allowed=not result.denials,
        bid=MoneyOut.of(decimal_to_micros(body.bid_amount), cur),
        headroom=MoneyOut.of(result.amount_micros, cur),
        denials=[Denial(rule=r, message=m) for r, m in result.denials],
    )


@api.post("/api/v1/reserve", response_model=ReserveResponse, tags=["reservations"])
async def reserve(
    body: ReserveRequest, tenant: CurrentTenant, request: Request, idem: KeyHeader = None
) -> ReserveResponse:
    """Hold spend against every cap. Granted in full, partially (what is left), or denied
    with the rule that refused it; the same idempotency key always gets the first answer."""
    op = _reserve_op(str(tenant.id), body, _key(body.idempotency_key, idem))
    return _reserve_view(await _one(request, op))


@api.post("/api/v1/reserve/batch", response_model=BatchReserveResponse, tags=["reservations"])
async def reserve_batch(
    body: BatchReserveRequest, tenant: CurrentTenant, request: Request, idem: KeyHeader = None
) -> BatchReserveResponse:
    """Many reservations in one call (one actor call per shard). With an Idempotency-Key
    header, item i without its own key uses `<header>:<i>`."""
    ops = [
        _reserve_op(str(tenant.id), r, _key(r.idempotency_key, idem, f":{i}"))
        for i, r in enumerate(body.reservations)
    ]
    results: list[ReserveResponse | BatchItemError] = []
    for result in await _budgets(request).execute(ops):
        if result.outcome == "error":
            error = {"code": result.error_code or "error", "message": result.message or ""}
            results.append(BatchItemError(campaign_id=result.campaign_id, error=error))
        else:
            results.append(_reserve_view(result))
    return BatchReserveResponse(results=results)


@api.post("/api/v1/commit", response_model=SettleResponse, tags=["reservations"])
async def commit(
    body: CommitRequest, tenant: CurrentTenant, request: Request, idem: KeyHeader = None
) -> SettleResponse:
    """Settle a reservation with the spend the platform reported. More than was reserved is
    recorded as over-delivery and blocks the campaign until it is unblocked."""
    op = BudgetOp(
        "commit",
        str(tenant.id),
        body.campaign_id,
        _key(body.idempotency_key, idem),
        reservation_id=body.reservation_id,
        amount_micros=decimal_to_micros(body.actual_spend),
    )
    return _settled(await _one(request, op))


@api.post("/api/v1/release", response_model=SettleResponse, tags=["reservations"])
async def release(
    body: ReleaseRequest, tenant: CurrentTenant, request: Request, idem: KeyHeader = None
) -> SettleResponse:
    """Give a reservation back unspent."""
    op = BudgetOp(
        "release",
        str(tenant.id),
        body.campaign_id,
        _key(body.idempotency_key, idem),
        reservation_id=body.reservation_id,
    )
    return _settled(await _one(request, op))


# --- platforms: circuit breakers and rate budgets --------------------------------------------


def _platform(platform: str) -> str:
    if platform not in PLATFORMS:
        raise NotFound(f"no ad platform {platform!r}; platforms are {list(PLATFORMS)}")
    return platform


@api.get("/api/v1/platforms", response_model=list[PlatformView], tags=["platforms"])
async def platforms(tenant: CurrentTenant, request: Request) -> list[PlatformView]:
    """Each platform's circuit breaker and rate budget."""
    statuses = await _call_guard(request.app, "status")
    return [PlatformView(**s.model_dump()) for s in statuses]


@api.post("/api/v1/platforms/{platform}/admit", response_model=AdmitResponse, tags=["platforms"])
async def admit(platform: str, tenant: CurrentTenant, request: Request) -> AdmitResponse:
    """Ask to make one call to the platform: 200 when allowed, 503 while its breaker is open,
    429 when its rate budget is spent; both with Retry-After."""
    (answer,) = await _call_guard(request.app, "admit_many", [(_platform(platform), 1)])
    if answer.reason == "breaker_open":
        raise Unavailable(f"{platform} circuit breaker is open", retry_after_s=answer.retry_after_s)
    if answer.reason == "rate_limited":
        raise RateLimited(f"{platform} rate budget is spent", retry_after_s=answer.retry_after_s)
    return AdmitResponse(platform=platform, allowed=True, state=answer.state)


@api.post("/api/v1/platforms/{platform}/outcomes", response_model=PlatformView, tags=["platforms"])
async def record_outcome(
    platform: str, body: BreakerOutcome, tenant: CurrentTenant, request: Request
) -> PlatformView:
    """Report the outcome of calls to the platform; failures feed its breaker."""
    await _call_guard(
        request.app, "record_many", [(_platform(platform), body.success)] * body.calls
    )
    return await _platform_view(request, platform)


@api.post("/api/v1/platforms/{platform}/reset", response_model=PlatformView, tags=["platforms"])
async def reset_breaker(platform: str, tenant: CurrentTenant, request: Request) -> PlatformView:
    """Close the platform's breaker and clear its window."""
    await _call_guard(request.app, "reset", _platform(platform))
    return await _platform_view(request, platform)


@api.post("/api/v1/platforms/{platform}/open", response_model=PlatformView, tags=["platforms"])
async def open_breaker(platform: str, tenant: CurrentTenant, request: Request) -> PlatformView:
    """Open the platform's breaker by hand (e.g. during a known outage)."""
    await _call_guard(request.app, "force_open", _platform(platform))
    return await _platform_view(request, platform)


async def _platform_view(request: Request, platform: str) -> PlatformView:
    statuses = await _call_guard(request.app, "status")
    return next(PlatformView(**s.model_dump()) for s in statuses if s.platform == platform)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class ShieldIngress(ServiceIngress):
    service = "shield"
    api = api


app = ShieldIngress.bind()
