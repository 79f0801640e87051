"""SyncFlow (`/flow`): campaigns, their bid loop, and the decision audit trail.

A thin HTTP shell: campaigns live in PostgreSQL, their budgets and policy in SyncShield's
budget actors, and the bidding in the bid-loop actors (actors/flow/), which this app creates
on start-up and tells to reload a campaign whenever one changes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from pydantic import AwareDatetime, BaseModel, Field
from ray import serve

from actors.budget import BudgetClient
from actors.flow import BidLoopClient, BidLoopConfig
from deployments._serve import (
    CurrentTenant,
    MoneyOut,
    ServiceIngress,
    ServiceRuntime,
    create_service_api,
    runtime_of,
)
from kiki.db.values import PgText
from kiki.errors import Conflict, FailedPrecondition, NotFound
from kiki.flow import segments, store
from kiki.flow.campaigns import (
    TRANSITIONS,
    AdGroup,
    Campaign,
    CampaignSpec,
    CampaignStatus,
    Goal,
    Identifier,
    PacingSettings,
    budget_op,
)
from kiki.money import PositiveAmount, decimal_to_micros, micros_to_decimal_str
from kiki.shield.book import BudgetOp


def _attach_actors(app: FastAPI, runtime: ServiceRuntime) -> None:
    s = runtime.settings
    app.state.budgets = BudgetClient.for_settings(runtime.database_url, s)
    app.state.loops = BidLoopClient(
        runtime.database_url,
        BidLoopConfig.for_settings(s),
        shards=s.flow_shards,
        num_cpus=min(0.2, s.replica_cpus),
    )
    for actor in app.state.loops.actors:
        actor.ready.remote()  # start ticking now: campaigns already running resume at once
    runtime.probes["bid_loops"] = lambda: app.state.loops.health(
        s.flow_tick_s, s.health_grace_s, s.health_probe_timeout_s
    )


api = create_service_api(
    "flow",
    "SyncFlow",
    "Campaign executor: campaigns, the bid loop (pacing, value-based bids, ad-platform "
    "connectors; the sandbox exchange locally) and the decision audit trail. Amounts are "
    "decimal strings (or JSON numbers, read exactly) in the campaign's currency.",
    on_startup=_attach_actors,
)


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

    @classmethod
    def of(cls, c: Campaign, spent_micros: int | None = None) -> CampaignView:
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
        )


class CampaignPage(BaseModel):
    campaigns: list[CampaignView]
    next_after: str | None = Field(description="pass as `after` for the next page")


class CampaignPatch(BaseModel):
    """Fields to change; omitted ones keep their value. The budget may not drop below what
    is already spent (SyncShield holds the cap)."""

    model_config = {"extra": "forbid"}

    name: str | None = Field(None, min_length=1, max_length=200)
    ends_at: AwareDatetime | None = None
    budget: PositiveAmount | None = None
    goal: Goal | None = None
    max_bid: PositiveAmount | None = None
    pacing: PacingSettings | None = None
    ad_groups: list[AdGroup] | None = Field(None, min_length=1, max_length=100)


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


async def _apply(request: Request, campaign: Campaign, key: str | None = None) -> None:
    """Put the campaign's budget and policy into SyncShield, then have its bid-loop shard
    reload it. SyncShield first: the loop must never bid on a budget that is not there."""
    (result,) = await request.app.state.budgets.execute([budget_op(campaign, key)])
    result.raise_for_error()
    await request.app.state.loops.reload(campaign.tenant_id, campaign.campaign_id)


async def _spent(request: Request, campaign: Campaign) -> int | None:
    op = BudgetOp("status", campaign.tenant_id, campaign.campaign_id)
    (result,) = await request.app.state.budgets.execute([op])
    return result.snapshot["committed"] if result.outcome == "status" and result.snapshot else None


@api.post("/api/v1/campaigns", status_code=201, response_model=CampaignView)
async def create_campaign(
    spec: CampaignSpec, tenant: CurrentTenant, request: Request
) -> CampaignView:
    """Create a campaign in `draft`; its budget is allocated in SyncShield at once."""
    campaign = Campaign.from_spec(str(tenant.id), spec)
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        await store.insert_campaign(conn, campaign)
    await _apply(request, campaign, key=f"flow-create:{campaign.campaign_id}")
    return CampaignView.of(campaign, 0)


@api.get("/api/v1/campaigns", response_model=CampaignPage)
async def list_campaigns(
    tenant: CurrentTenant,
    request: Request,
    status: CampaignStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(description="campaign_id to continue after")] = None,
) -> CampaignPage:
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        found = await store.list_campaigns(
            conn, str(tenant.id), status.value if status else None, limit, after
        )
    return CampaignPage(
        campaigns=[CampaignView.of(c) for c in found],
        next_after=found[-1].campaign_id if len(found) == limit else None,
    )


@api.get("/api/v1/campaigns/{campaign_id}", response_model=CampaignView)
async def get_campaign(
    campaign_id: Identifier, tenant: CurrentTenant, request: Request
) -> CampaignView:
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        campaign = await store.get_campaign(conn, str(tenant.id), campaign_id)
    return CampaignView.of(campaign, await _spent(request, campaign))


@api.patch("/api/v1/campaigns/{campaign_id}", response_model=CampaignView)
async def patch_campaign(
    campaign_id: Identifier, patch: CampaignPatch, tenant: CurrentTenant, request: Request
) -> CampaignView:
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn, conn.transaction():
        current = await store.get_campaign(conn, str(tenant.id), campaign_id)
        if current.status == CampaignStatus.STOPPED:
            raise FailedPrecondition(f"campaign {campaign_id} is stopped; create a new one")
        changes: dict[str, Any] = {}
        if patch.name is not None:
            changes["name"] = patch.name
        if patch.ends_at is not None:
            if patch.ends_at <= current.starts_at:
                raise Conflict("ends_at must be after the campaign's starts_at")
            changes["ends_at"] = patch.ends_at
        if patch.budget is not None:
            if patch.budget <= 0:
                raise Conflict("budget must be positive")
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
        if patch.pacing is not None:
            changes["pacing"] = patch.pacing
        if patch.ad_groups is not None:
            changes["ad_groups"] = tuple(patch.ad_groups)
        updated = current.model_copy(update=changes)
        await store.save_campaign(conn, updated)
    await _apply(request, updated)
    return CampaignView.of(updated, await _spent(request, updated))


@api.post("/api/v1/campaigns/{campaign_id}/{action}", response_model=CampaignView)
async def campaign_action(
    campaign_id: Identifier,
    action: Literal["start", "pause", "stop"],
    tenant: CurrentTenant,
    request: Request,
) -> CampaignView:
    """start (draft or paused -> running), pause (running -> paused), stop (-> stopped, for
    good). Repeating an action that already holds is a no-op."""
    sources, target = TRANSITIONS[action]
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn, conn.transaction():
        current = await store.get_campaign(conn, str(tenant.id), campaign_id)
        if current.status != target and current.status not in sources:
            raise FailedPrecondition(
                f"cannot {action} campaign {campaign_id}: it is {current.status.value}"
            )
        updated = current.model_copy(update={"status": target})
        await store.save_campaign(conn, updated)
    await _apply(request, updated)
    return CampaignView.of(updated, await _spent(request, updated))


@api.get("/api/v1/decisions", response_model=DecisionPage)
async def get_decisions(
    tenant: CurrentTenant,
    request: Request,
    campaign_id: Identifier | None = None,
    since: Annotated[
        AwareDatetime | None, Query(description="decisions at or after this time")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> DecisionPage:
    """The audit trail, oldest first; every decision is also a `decision:` log line."""
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        rows = await store.decisions(conn, str(tenant.id), campaign_id, since, limit)
    return DecisionPage(decisions=[Decision(**r) for r in rows])


class SegmentMembers(BaseModel):
    customer_ids: list[Annotated[PgText, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=1_000_000
    )


class SegmentView(BaseModel):
    segment_id: str
    customers: int


@api.put("/api/v1/segments/{segment_id}", response_model=SegmentView)
async def put_segment(
    segment_id: Identifier, body: SegmentMembers, tenant: CurrentTenant, request: Request
) -> SegmentView:
    """Set an audience segment's members (replacing them). Ad groups that target it bid
    with its value: the mean predicted LTV of its members (SyncValue), refreshed each minute."""
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        count = await segments.replace_members(conn, tenant.id, segment_id, body.customer_ids)
    return SegmentView(segment_id=segment_id, customers=count)


@api.get("/api/v1/segments/{segment_id}", response_model=SegmentView)
async def get_segment(
    segment_id: Identifier, tenant: CurrentTenant, request: Request
) -> SegmentView:
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        count = await segments.member_count(conn, tenant.id, segment_id)
    if not count:
        raise NotFound(f"segment {segment_id} has no members; PUT its customer_ids first")
    return SegmentView(segment_id=segment_id, customers=count)


@api.get("/api/v1/loop", response_model=list[LoopShard])
async def loop_status(tenant: CurrentTenant, request: Request) -> list[LoopShard]:
    """The bid-loop shards: campaigns held, ticks run, ticks that overran tick_s."""
    stats = await request.app.state.loops.stats()
    return [
        LoopShard(
            shard=i,
            campaigns=len(s.keys),
            ticks=s.ticks,
            slow_ticks=s.slow_ticks,
            audit_rows=s.audit_rows,
        )
        for i, s in enumerate(stats)
    ]


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class FlowIngress(ServiceIngress):
    service = "flow"
    api = api


app = FlowIngress.bind()
