"""SyncFlow's read side: the decision audit trail, the bid-loop shards' state, and the
audience segments whose value the bids follow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from deployments._serve import (
    Connection,
    DecimalJSONRoute,
    Operator,
    Reader,
    Suppressing,
    Writer,
    context_of,
)
from deployments.flow.context import FlowContext
from deployments.flow.schemas import (
    Decision,
    DecisionPage,
    LoopShard,
    SegmentMembers,
    SegmentView,
)
from kiki.errors import NotFound
from kiki.flow import segments, store
from kiki.flow.campaigns import Identifier

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute)
Context = Annotated[FlowContext, Depends(context_of(FlowContext))]


@router.get("/decisions", response_model=DecisionPage, tags=["audit"])
async def get_decisions(
    tenant: Reader,
    conn: Connection,
    campaign_id: Identifier | None = None,
    since: Annotated[
        AwareDatetime | None, Query(description="decisions at or after this time")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> DecisionPage:
    """The audit trail, oldest first; every decision is also a `decision:` log line."""
    rows = await store.decisions(conn, str(tenant.id), campaign_id, since, limit)
    return DecisionPage(decisions=[Decision(**r) for r in rows])


@router.get("/loop", response_model=list[LoopShard], tags=["audit"])
async def loop_status(operator: Operator, ctx: Context) -> list[LoopShard]:
    """The bid-loop shards: campaigns held, ticks run, ticks that overran tick_s (operators
    only: the shards hold every tenant's campaigns)."""
    stats = await ctx.loops.stats()
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


@router.put("/segments/{segment_id}", response_model=SegmentView, tags=["segments"])
async def put_segment(
    segment_id: Identifier,
    body: SegmentMembers,
    tenant: Writer,
    conn: Connection,
    suppressions: Suppressing,
) -> SegmentView:
    """Set an audience segment's members (replacing them); customers erased at their request
    are dropped and counted. Ad groups that target it bid with its value: the mean predicted
    LTV of its members (SyncValue), refreshed each minute."""
    count, suppressed = await segments.replace_members(
        conn, tenant.id, segment_id, body.customer_ids, suppressions
    )
    return SegmentView(segment_id=segment_id, customers=count, suppressed=suppressed)


@router.get("/segments/{segment_id}", response_model=SegmentView, tags=["segments"])
async def get_segment(segment_id: Identifier, tenant: Reader, conn: Connection) -> SegmentView:
    count = await segments.member_count(conn, tenant.id, segment_id)
    if not count:
        raise NotFound(f"segment {segment_id} has no members; PUT its customer_ids first")
    return SegmentView(segment_id=segment_id, customers=count)
