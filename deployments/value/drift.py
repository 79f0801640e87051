"""SyncValue's drift route: how far today's customers and predictions have moved from the
production model's training reference, also published as Ray metrics (which the retraining
actor also refreshes on its own schedule)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from actors.drift import publish
from deployments._serve import DecimalJSONRoute, Reader
from deployments.value.context import Context
from kiki.value import drift

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute)


@router.get("/drift", response_model=drift.DriftReport, tags=["models"])
async def get_drift(
    tenant: Reader,
    ctx: Context,
    as_of: Annotated[date | None, Query(description="the live window's day; default today")] = None,
    threshold: Annotated[float, Query(gt=0, le=10)] = drift.DEFAULT_THRESHOLD,
) -> drift.DriftReport:
    """PSI of every feature and of the predictions, now vs the production model's training
    reference; `stale` when the predictions (or most features) moved past the threshold."""
    report = await ctx.value.drift(tenant.id, as_of or datetime.now(UTC).date(), threshold)
    publish(str(tenant.id), report)
    return report
