"""Billing's catalogue: billable metrics, versioned plans and coupons."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from deployments._serve import Admin, Connection, DecimalJSONRoute, Reader
from deployments.billing.schemas import CodePath, MetricIn
from kiki.billing import repository
from kiki.billing.catalog import BillableMetric, Coupon, Plan
from kiki.db.values import INT4_MAX

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute, tags=["catalog"])


@router.post("/metrics", status_code=201, response_model=BillableMetric)
async def create_metric(body: MetricIn, tenant: Admin, conn: Connection) -> Any:
    metric = BillableMetric(**body.model_dump(exclude={"name"}))
    return await repository.create_metric(conn, tenant.id, metric, body.name)


@router.get("/metrics", response_model=list[BillableMetric])
async def list_metrics(tenant: Reader, conn: Connection) -> Any:
    return list((await repository.metrics(conn, tenant.id)).values())


@router.post("/plans", status_code=201, response_model=Plan)
async def create_plan(body: Plan, tenant: Admin, conn: Connection) -> Any:
    """A new plan, or a new version of one (`version`); existing versions never change."""
    return await repository.create_plan(conn, tenant.id, body)


@router.get("/plans", response_model=list[Plan])
async def list_plans(tenant: Reader, conn: Connection) -> Any:
    return list((await repository.plans(conn, tenant.id)).values())


@router.get("/plans/{code}", response_model=Plan)
async def get_plan(
    code: CodePath,
    tenant: Reader,
    conn: Connection,
    version: Annotated[int | None, Query(ge=1, le=INT4_MAX)] = None,
) -> Any:
    return await repository.get_plan(conn, tenant.id, code, version)


@router.post("/coupons", status_code=201, response_model=Coupon)
async def create_coupon(body: Coupon, tenant: Admin, conn: Connection) -> Any:
    return await repository.create_coupon(conn, tenant.id, body)
