"""SyncShield's platform routes: each ad platform's circuit breaker and rate budget, held by
the one guard actor every bid loop and replica shares."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from deployments._serve import CurrentTenant, DecimalJSONRoute, context_of
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
async def platforms(tenant: CurrentTenant, ctx: Context) -> list[PlatformView]:
    """Each platform's circuit breaker and rate budget."""
    statuses = await ctx.call_guard("status")
    return [PlatformView(**s.model_dump()) for s in statuses]


@router.post("/platforms/{platform}/admit", response_model=AdmitResponse, tags=["platforms"])
async def admit(platform: str, tenant: CurrentTenant, ctx: Context) -> AdmitResponse:
    """Ask to make one call to the platform: 200 when allowed, 503 while its breaker is open,
    429 when its rate budget is spent; both with Retry-After."""
    (answer,) = await ctx.call_guard("admit_many", [(_platform(platform), 1)])
    if answer.reason == "breaker_open":
        raise Unavailable(f"{platform} circuit breaker is open", retry_after_s=answer.retry_after_s)
    if answer.reason == "rate_limited":
        raise RateLimited(f"{platform} rate budget is spent", retry_after_s=answer.retry_after_s)
    return AdmitResponse(platform=platform, allowed=True, state=answer.state)


@router.post("/platforms/{platform}/outcomes", response_model=PlatformView, tags=["platforms"])
async def record_outcome(
    platform: str, body: BreakerOutcome, tenant: CurrentTenant, ctx: Context
) -> PlatformView:
    """Report the outcome of calls to the platform; failures feed its breaker."""
    await ctx.call_guard("record_many", [(_platform(platform), body.success)] * body.calls)
    return await _platform_view(ctx, platform)


@router.post("/platforms/{platform}/reset", response_model=PlatformView, tags=["platforms"])
async def reset_breaker(platform: str, tenant: CurrentTenant, ctx: Context) -> PlatformView:
    """Close the platform's breaker and clear its window."""
    await ctx.call_guard("reset", _platform(platform))
    return await _platform_view(ctx, platform)


@router.post("/platforms/{platform}/open", response_model=PlatformView, tags=["platforms"])
async def open_breaker(platform: str, tenant: CurrentTenant, ctx: Context) -> PlatformView:
    """Open the platform's breaker by hand (e.g. during a known outage)."""
    await ctx.call_guard("force_open", _platform(platform))
    return await _platform_view(ctx, platform)


async def _platform_view(ctx: ShieldContext, platform: str) -> PlatformView:
    statuses = await ctx.call_guard("status")
    return next(PlatformView(**s.model_dump()) for s in statuses if s.platform == platform)
