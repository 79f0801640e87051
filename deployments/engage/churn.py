"""SyncEngage's churn-risk list and acquisition cohorts."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from pydantic import Field

from deployments._serve import Connection, DecimalJSONRoute, MoneyOut, Reader
from deployments.engage.context import Context
from deployments.engage.schemas import AsOf, AtRisk, ChurnRiskPage, CohortList, CohortView, LTVView
from kiki import training_jobs
from kiki.engage import cohorts, retention
from kiki.engage.ltv_spread import Spread, spread
from kiki.engage.risk import Reason
from kiki.engage.service import ltv_currency, today
from kiki.errors import FailedPrecondition
from kiki.model_registry import ModelRecord

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute)
NO_LTV = "no LTV model in production: `kiki train ltv`, then `kiki models promote`"


def _at_risk(customer_id: str, row: Any, reasons: list[Reason], ltv: ModelRecord | None) -> AtRisk:
    value = None
    if ltv is not None:
        value = LTVView(
            value=MoneyOut.of(retention.ltv_micros(row["ltv_expected"]) or 0, ltv_currency(ltv)),
            horizon_days=ltv.horizon_days,
            model_version=ltv.version,
        )
    return AtRisk(
        customer_id=customer_id,
        churn_risk=round(float(row["churn_risk"]), 4),
        reasons=reasons,
        ltv=value,
        last_purchase=row["last_purchase"],
    )


@router.get("/churn-risk", response_model=ChurnRiskPage, tags=["churn"])
async def churn_risk(
    tenant: Reader,
    ctx: Context,
    threshold: Annotated[float, Query(ge=0, le=1)] = 0.7,
    as_of: AsOf = None,
    horizon_days: Annotated[int, Query(ge=7, le=730)] = 90,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ChurnRiskPage:
    """Customers whose churn risk is at or above `threshold`, riskiest first, each with the
    features that raise it most, their LTV (SyncValue's production model) and last purchase."""
    day = as_of or today()
    table, churn, ltv = await ctx.service.table(tenant.id, day, horizon_days)
    risky = table.frame[table.frame["churn_risk"] >= threshold]
    page = risky.iloc[offset : offset + limit]
    end = offset + len(page)
    reasons = table.reasons([str(cid) for cid in page.index])
    return ChurnRiskPage(
        as_of=day,
        horizon_days=horizon_days,
        threshold=threshold,
        model_version=churn.version,
        scored_at=table.scored_at,
        total=len(risky),
        customers=[_at_risk(str(c), row, reasons[str(c)], ltv) for c, row in page.iterrows()],
        next_offset=end if end < len(risky) else None,
        ltv_unavailable=None if ltv else NO_LTV,
    )


class LTVSpread(Spread):
    as_of: date
    horizon_days: int
    model_version: int
    scored_at: datetime = Field(description="when the book was scored (see /churn-risk)")
    currency: str


@router.get("/ltv-spread", response_model=LTVSpread, tags=["churn"])
async def ltv_spread(
    tenant: Reader,
    ctx: Context,
    as_of: AsOf = None,
    horizon_days: Annotated[int, Query(ge=7, le=730)] = 90,
    bins: Annotated[int, Query(ge=2, le=100)] = 20,
) -> LTVSpread:
    """Every customer's LTV from SyncValue's production model, as a histogram (the last bin
    holds everyone above the 99th percentile) and deciles (1 = the top 10 %), in micros of
    `currency`. 409 without an LTV model in production."""
    day = as_of or today()
    table, _, ltv = await ctx.service.table(tenant.id, day, horizon_days)
    if ltv is None:
        raise FailedPrecondition(NO_LTV)
    values = [retention.ltv_micros(v) for v in table.frame.get("ltv_expected", [])]
    found = spread(np.array([v for v in values if v is not None], dtype=np.int64), bins)
    return LTVSpread(
        **found.model_dump(),
        as_of=day,
        horizon_days=horizon_days,
        model_version=ltv.version,
        scored_at=table.scored_at,
        currency=ltv_currency(ltv),
    )


@router.get("/cohorts", response_model=CohortView | CohortList, tags=["cohorts"])
async def get_cohorts(
    tenant: Reader,
    ctx: Context,
    conn: Connection,
    cohort_id: Annotated[
        str | None, Query(description="e.g. cohort_jan_2026; omit for every cohort")
    ] = None,
    as_of: AsOf = None,
) -> CohortView | CohortList:
    """Monthly acquisition cohorts: retention and revenue by month since the first purchase."""
    day = as_of or today()
    await training_jobs.check_loaded(conn, tenant.id)
    if cohort_id is not None:
        return CohortView.of(await cohorts.cohort(conn, tenant.id, cohort_id, day))
    found = await ctx.service.cohorts(tenant.id, day)
    return CohortList(as_of=day, cohorts=[CohortView.of(c) for c in found])
