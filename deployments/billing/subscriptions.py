"""Billing's subscriptions: start, upgrade now (prorated), downgrade at period end, cancel
and resume."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from fastapi import APIRouter

from deployments._serve import Connection, DecimalJSONRoute, Reader, Writer
from deployments.billing.context import Context
from deployments.billing.schemas import CancelIn, CustomerQuery, SubscriptionIn
from kiki.billing import repository, subscriptions
from kiki.billing.closing import close_period
from kiki.billing.models import PlanRef, Subscription
from kiki.billing.proration import ChangeKind
from kiki.clock import Clock

router = APIRouter(
    prefix="/api/v1/subscriptions", route_class=DecimalJSONRoute, tags=["subscriptions"]
)


@router.post("", status_code=201, response_model=Subscription)
async def create_subscription(
    body: SubscriptionIn, tenant: Writer, ctx: Context, conn: Connection
) -> Any:
    start = body.start_at or ctx.clock.now()
    return await subscriptions.create(
        conn, tenant.id, body.customer_id, body.plan_code, body.plan_version, start
    )


@router.get("", response_model=list[Subscription])
async def list_subscriptions(
    tenant: Reader, conn: Connection, customer_id: CustomerQuery = None
) -> Any:
    return await repository.list_subscriptions(conn, tenant.id, customer_id)


@router.get("/{sub_id}", response_model=Subscription)
async def get_subscription(sub_id: UUID, tenant: Reader, conn: Connection) -> Any:
    return await repository.get_subscription(conn, tenant.id, sub_id)


async def _change(
    kind: ChangeKind,
    sub_id: UUID,
    body: PlanRef,
    tenant_id: UUID,
    conn: asyncpg.Connection,
    clock: Clock,
) -> Subscription:
    sub, _ = await subscriptions.change(
        conn, tenant_id, sub_id, body.plan_code, body.plan_version, clock.now(), kind
    )
    return sub


@router.post("/{sub_id}/upgrade", response_model=Subscription)
async def upgrade(
    sub_id: UUID, body: PlanRef, tenant: Writer, ctx: Context, conn: Connection
) -> Any:
    """Switch now to a plan with a base fee at least the current one's; the prorated credit
    and charges go on the next invoice."""
    return await _change(ChangeKind.UPGRADE, sub_id, body, tenant.id, conn, ctx.clock)


@router.post("/{sub_id}/downgrade", response_model=Subscription)
async def downgrade(
    sub_id: UUID, body: PlanRef, tenant: Writer, ctx: Context, conn: Connection
) -> Any:
    """Switch to a cheaper plan at the end of the current period."""
    return await _change(ChangeKind.DOWNGRADE, sub_id, body, tenant.id, conn, ctx.clock)


@router.post("/{sub_id}/cancel", response_model=Subscription)
async def cancel(
    sub_id: UUID, body: CancelIn, tenant: Writer, ctx: Context, conn: Connection
) -> Any:
    """At period end (undo with /resume), or immediately with a prorated final invoice."""
    now = ctx.clock.now()
    sub = await subscriptions.cancel_subscription(
        conn, tenant.id, sub_id, now, immediately=body.immediately
    )
    if body.immediately:
        await close_period(conn, tenant, now, subscription_ids=[sub_id])
        return await repository.get_subscription(conn, tenant.id, sub_id)
    return sub


@router.post("/{sub_id}/resume", response_model=Subscription)
async def resume(sub_id: UUID, tenant: Writer, conn: Connection) -> Any:
    """Keep renewing a subscription that was to end at its period end."""
    return await subscriptions.resume(conn, tenant.id, sub_id)
