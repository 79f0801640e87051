"""SyncFlow's campaign routes: create, list, read, change, start, pause and stop. Each change
goes to SyncShield (budget and policy) and then to the campaign's bid-loop shard."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from deployments._serve import Connection, DecimalJSONRoute, Reader, Writer, context_of
from deployments.flow.context import FlowContext
from deployments.flow.schemas import CampaignPage, CampaignView
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
    conn: Connection,
    status: CampaignStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(description="campaign_id to continue after")] = None,
) -> CampaignPage:
    found = await store.list_campaigns(
        conn, str(tenant.id), status.value if status else None, limit, after
    )
    return CampaignPage(
        campaigns=[CampaignView.of(c) for c in found],
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
