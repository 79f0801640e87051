"""SyncFlow's campaign routes: create, list, read, change, start, pause and stop. Each change
goes to SyncShield (budget and policy) and then to the campaign's bid-loop shard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from deployments._serve import (
    SESSION_COOKIE,
    Connection,
    DecimalJSONRoute,
    Reader,
    Writer,
    context_of,
    runtime_of,
)
from deployments.flow.context import FlowContext
from deployments.flow.schemas import CampaignPage, CampaignView, Decision, PacingPoint, PacingView
from kiki.errors import KikiError
from kiki.flow import store
from kiki.flow.campaigns import Campaign, CampaignPatch, CampaignSpec, CampaignStatus, Identifier

router = APIRouter(prefix="/api/v1/campaigns", route_class=DecimalJSONRoute, tags=["campaigns"])
Context = Annotated[FlowContext, Depends(context_of(FlowContext))]


@router.post("", status_code=201, response_model=CampaignView)
async def create_campaign(
    spec: CampaignSpec, tenant: Writer, ctx: Context, conn: Connection
) -> CampaignView:
    """Create a campaign in `draft`; its budget is allocated in SyncShield at once."""
    campaign = Campaign.from_spec(str(tenant.id), spec)
    await store.insert_campaign(conn, campaign)
    await ctx.apply(campaign, key=f"flow-create:{campaign.campaign_id}")
    return CampaignView.of(campaign, 0)


@router.get("", response_model=CampaignPage)
async def list_campaigns(
    tenant: Reader,
    ctx: Context,
    conn: Connection,
    status: CampaignStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(description="campaign_id to continue after")] = None,
    roas: Annotated[
        bool, Query(description="add each campaign's ROAS (asks every bid-loop shard)")
    ] = False,
) -> CampaignPage:
    found = await store.list_campaigns(
        conn, str(tenant.id), status.value if status else None, limit, after
    )
    ticks, measured = await asyncio.gather(
        store.latest_ticks(conn, str(tenant.id), [c.campaign_id for c in found]),
        ctx.measured(str(tenant.id)) if roas else asyncio.sleep(0, {}),
    )
    return CampaignPage(
        campaigns=[
            CampaignView.of(c, tick=ticks.get(c.campaign_id), measured=measured.get(c.campaign_id))
            for c in found
        ],
        next_after=found[-1].campaign_id if len(found) == limit else None,
    )


@router.get("/{campaign_id}", response_model=CampaignView)
async def get_campaign(
    campaign_id: Identifier, tenant: Reader, ctx: Context, conn: Connection
) -> CampaignView:
    campaign = await store.get_campaign(conn, str(tenant.id), campaign_id)
    return CampaignView.of(campaign, await ctx.spent(campaign))


@router.patch("/{campaign_id}", response_model=CampaignView)
async def patch_campaign(
    campaign_id: Identifier,
    patch: CampaignPatch,
    tenant: Writer,
    ctx: Context,
    conn: Connection,
) -> CampaignView:
    """Change fields; omitted ones keep their value. The budget may not drop below what is
    already spent (SyncShield holds the cap)."""
    async with conn.transaction():
        current = await store.get_campaign(conn, str(tenant.id), campaign_id)
        updated = current.patched(patch)
        await store.save_campaign(conn, updated)
    await ctx.apply(updated)
    return CampaignView.of(updated, await ctx.spent(updated))


@router.post("/{campaign_id}/{action}", response_model=CampaignView)
async def campaign_action(
    campaign_id: Identifier,
    action: Literal["start", "pause", "stop"],
    tenant: Writer,
    ctx: Context,
    conn: Connection,
) -> CampaignView:
    """start (draft or paused -> running), pause (running -> paused), stop (-> stopped, for
    good). Repeating an action that already holds is a no-op."""
    async with conn.transaction():
        current = await store.get_campaign(conn, str(tenant.id), campaign_id)
        updated = current.transitioned(action)
        await store.save_campaign(conn, updated)
    await ctx.apply(updated)
    return CampaignView.of(updated, await ctx.spent(updated))


PACING_POINTS = 2000  # the newest ticks a chart starts with


async def _pacing(
    conn: asyncpg.Connection,
    tenant_id: str,
    campaign: Campaign,
    after: datetime | None,
    limit: int,
) -> PacingView:
    rows = await store.pacing(conn, tenant_id, campaign.campaign_id, after, limit)
    points = [PacingPoint(**r) for r in rows]
    decisions = []
    if points:
        newest = points[-1].at
        rows = await store.decisions(conn, tenant_id, campaign.campaign_id, newest, 500)
        decisions = [Decision(**r) for r in rows]
    return PacingView(
        campaign_id=campaign.campaign_id,
        status=campaign.status,
        currency=campaign.currency,
        budget_micros=campaign.budget_micros,
        points=points,
        decisions=decisions,
    )


@router.get("/{campaign_id}/pacing", response_model=PacingView)
async def get_pacing(
    campaign_id: Identifier,
    tenant: Reader,
    conn: Connection,
    limit: Annotated[int, Query(ge=1, le=10_000)] = PACING_POINTS,
) -> PacingView:
    """Cumulative spend against the target curve, one point a bid-loop tick (the newest
    `limit`), what each platform was granted each tick, and the newest tick's decisions."""
    campaign = await store.get_campaign(conn, str(tenant.id), campaign_id)
    return await _pacing(conn, str(tenant.id), campaign, None, limit)


@router.get(
    "/{campaign_id}/pacing/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_pacing(
    request: Request,
    campaign_id: Identifier,
    tenant: Reader,
    ctx: Context,
    after: Annotated[
        AwareDatetime | None, Query(description="only ticks after this (the newest one seen)")
    ] = None,
) -> StreamingResponse:
    """Server-sent events: a `pacing` event (a PacingView of the new points only) after
    every bid-loop tick that decided for the campaign, until the client goes away or its key
    (or console session) stops working, which ends the stream with an `ended` event."""
    tenant_id = str(tenant.id)
    runtime = runtime_of(request)
    key, session = request.headers.get("x-api-key"), request.cookies.get(SESSION_COOKIE)
    pool = await runtime.pool()  # a connection per poll: an open stream holds none
    async with pool.acquire() as db:
        await store.get_campaign(db, tenant_id, campaign_id)  # an unknown one: 404, no stream

    async def events() -> AsyncIterator[str]:
        newest = after
        while not await request.is_disconnected():
            try:
                await runtime.grant(key, session)  # a revoked key ends its streams too
            except KikiError as exc:
                yield f"event: ended\ndata: {exc.message}\n\n"
                return
            async with pool.acquire() as db:
                current = await store.get_campaign(db, tenant_id, campaign_id)
                view = await _pacing(db, tenant_id, current, newest, PACING_POINTS)
            if view.points:
                newest = view.points[-1].at
                yield f"event: pacing\ndata: {view.model_dump_json()}\n\n"
            else:
                yield ": tick\n\n"  # a comment: finds a client that has gone
            await asyncio.sleep(ctx.tick_s)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
