"""Billing's analytics: MRR and its movements, and usage over time."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AfterValidator, AwareDatetime

from deployments._serve import Connection, DecimalJSONRoute, Reader
from deployments.billing.context import Context
from deployments.billing.schemas import CustomerQuery, MrrView
from kiki.billing import reports
from kiki.billing.catalog import CODE_PATTERN

router = APIRouter(prefix="/api/v1/analytics", route_class=DecimalJSONRoute, tags=["analytics"])


def _existing_month(month: str | None) -> str | None:
    if month is not None:
        reports.parse_month(month)  # 2026-13 and 0000-01 match the pattern but are no months
    return month


@router.get("/mrr", response_model=list[MrrView])
async def mrr(
    tenant: Reader,
    ctx: Context,
    conn: Connection,
    month: Annotated[
        str | None,
        Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM"),
        AfterValidator(_existing_month),
    ] = None,
    months: Annotated[
        int, Query(ge=1, le=24, description="this many months up to `month`, oldest first")
    ] = 1,
) -> Any:
    """MRR, ARR, ARPU, movements and net revenue retention of a month (default: this one),
    one entry per currency; with `months`, of each of the months up to it (one call for a
    chart)."""
    day = reports.parse_month(month) if month else ctx.clock.now().date().replace(day=1)
    found = []
    for first in reports.months_up_to(day, months):
        found += [MrrView.of(r) for r in await reports.mrr_report(conn, tenant.id, first)]
    return found


@router.get("/usage", response_model=list[reports.UsagePoint])
async def usage(
    tenant: Reader,
    conn: Connection,
    metric: Annotated[str, Query(pattern=CODE_PATTERN)],
    start: Annotated[AwareDatetime, Query(alias="from")],
    end: Annotated[AwareDatetime, Query(alias="to")],
    granularity: reports.Granularity = reports.Granularity.DAY,
    customer_id: CustomerQuery = None,
) -> Any:
    """A metric's aggregate per day, week or month (UTC)."""
    return await reports.usage_series(conn, tenant.id, metric, start, end, granularity, customer_id)
