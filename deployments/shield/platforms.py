"""SyncShield's platform routes: each ad platform's circuit breaker and rate budget, held by
the one guard actor every bid loop and replica shares."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from deployments._serve import DecimalJSONRoute, Operator, Reader, Writer, context_of
from deployments.shield.context import ShieldContext
from deployments.shield.schemas import AdmitResponse, BreakerOutcome, PlatformView
from kiki.errors import NotFound, RateLimited, Unavailable
from kiki.shield.policy import PLATFORMS

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute)
Context = Annotated[ShieldContext, Depends(context_of(ShieldContext))]


def _platform(platform: str) -> str:
    if platform not in PLATFORMS:
        raise NotFound(f"no ad platform {platform!r}; platforms are {list(PLATFORMS)}")
    return platform


@router.get("/platforms", response_model=list[PlatformView], tags=["platforms"])
async def platforms(tenant: Reader, ctx: Context) -> list[PlatformView]:
    """Each platform's shared circuit breaker and rate budget, and your own breaker (fed by
    the outcomes you report)."""
    statuses = await ctx.call_guard("status", tenant.name)
    return [PlatformView(**s.model_dump()) for s in statuses]


@router.post("/platforms/{platform}/admit", response_model=AdmitResponse, tags=["platforms"])
async def admit(platform: str, tenant: Writer, ctx: Context) -> AdmitResponse:
    """Ask to make one call of your own to the platform: 200 when allowed; 503 while its shared
    breaker or your own breaker is open; 429 when your share of its rate budget or the budget
    itself is spent; both with Retry-After."""
    answer = await ctx.call_guard("admit_tenant", tenant.name, _platform(platform), 1)
    if answer.reason == "breaker_open":
        raise Unavailable(f"{platform} circuit breaker is open", retry_after_s=answer.retry_after_s)
    if answer.reason == "tenant_breaker_open":
        raise Unavailable(
            f"your own {platform} circuit breaker is open (from the failures you reported); "
            "report successes after it half-opens, or wait",
            retry_after_s=answer.retry_after_s,
        )
    if answer.reason == "rate_limited":
        raise RateLimited(
            f"{platform} rate budget (your share of it, or all of it) is spent",
            retry_after_s=answer.retry_after_s,
        )
    return AdmitResponse(platform=platform, allowed=True, state=answer.state)


@router.post("/platforms/{platform}/outcomes", response_model=PlatformView, tags=["platforms"])
async def record_outcome(
    platform: str, body: BreakerOutcome, tenant: Writer, ctx: Context
) -> PlatformView:
    """Report the outcome of your own calls to the platform. They feed your own breaker only
    (an outcome a tenant reports cannot be verified, so it never trips anyone else's); the
    shared breaker hears KIKI's connectors and operators."""
    outcomes = [body.success] * body.calls
    await ctx.call_guard("record_tenant", tenant.name, _platform(platform), outcomes)
    return await _platform_view(ctx, platform, tenant.name)


@router.post("/platforms/{platform}/reset", response_model=PlatformView, tags=["platforms"])
async def reset_breaker(platform: str, operator: Operator, ctx: Context) -> PlatformView:
    """Close the platform's shared breaker and clear its window (operators only: it lets every
    tenant's bid loop call the platform again)."""
    await ctx.call_guard("reset", _platform(platform))
    return await _platform_view(ctx, platform)


@router.post("/platforms/{platform}/open", response_model=PlatformView, tags=["platforms"])
async def open_breaker(platform: str, operator: Operator, ctx: Context) -> PlatformView:
    """Open the platform's shared breaker by hand, e.g. during a known outage (operators only:
    it stops every tenant's calls to the platform)."""
    await ctx.call_guard("force_open", _platform(platform))
    return await _platform_view(ctx, platform)


async def _platform_view(
    ctx: ShieldContext, platform: str, tenant: str | None = None
) -> PlatformView:
    statuses = await ctx.call_guard("status", tenant)
    return next(PlatformView(**s.model_dump()) for s in statuses if s.platform == platform)
