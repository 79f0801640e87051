"""Billing's webhooks: the tenants' endpoints (signed deliveries of billing events), and
Stripe's events, which take no API key: Stripe's signature authenticates them, and the tenant
is the one of the invoice the event names."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response

from deployments._serve import Admin, Connection, DecimalJSONRoute, Reader
from deployments.billing.context import Context
from deployments.billing.schemas import EndpointCreated, StripeAck
from deployments.billing.telemetry import billing_metrics
from kiki.billing import payments, webhooks
from kiki.errors import KikiError, Unavailable

logger = logging.getLogger("kiki.billing")
router = APIRouter(route_class=DecimalJSONRoute, tags=["webhooks"])


@router.post("/api/v1/webhook-endpoints", status_code=201, response_model=EndpointCreated)
async def create_endpoint(
    body: webhooks.EndpointIn, tenant: Admin, conn: Connection, ctx: Context
) -> Any:
    endpoint, secret = await webhooks.create_endpoint(conn, tenant.id, body, ctx.vault)
    return EndpointCreated(endpoint=endpoint, secret=secret)


@router.get("/api/v1/webhook-endpoints", response_model=list[webhooks.Endpoint])
async def list_endpoints(tenant: Reader, conn: Connection) -> Any:
    return await webhooks.list_endpoints(conn, tenant.id)


@router.delete("/api/v1/webhook-endpoints/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: UUID, tenant: Admin, conn: Connection) -> Response:
    await webhooks.delete_endpoint(conn, tenant.id, endpoint_id)
    return Response(status_code=204)


@router.post("/webhooks/stripe", response_model=StripeAck)
async def stripe_webhook(request: Request, ctx: Context) -> Any:
    """Stripe's events (no API key: the Stripe-Signature header authenticates them)."""
    payload = await request.body()
    metrics = billing_metrics()
    try:
        event = ctx.gateway.verify_event(payload, request.headers.get("Stripe-Signature"))
        outcome = await payments.handle_stripe_event(await ctx.pool(), event, ctx.clock.now())
    except KikiError as exc:  # forged, stale, replayed or malformed: refused and logged
        client = request.client.host if request.client else "unknown"
        extra = {"code": exc.code, "error": exc.message, "client": client}
        logger.warning("Stripe webhook rejected", extra=extra)
        if metrics is not None:
            metrics.stripe_event(_stripe_outcome(exc))
        raise
    except Exception:
        if metrics is not None:
            metrics.stripe_event("failed")
        raise
    if metrics is not None:
        metrics.stripe_event("applied")
    return StripeAck(received=True, outcome=outcome)


def _stripe_outcome(exc: KikiError) -> str:
    if exc.code == "webhook_replayed":
        return "replayed"
    return "failed" if isinstance(exc, Unavailable) else "rejected"
