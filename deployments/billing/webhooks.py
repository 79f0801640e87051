"""Billing's webhooks: the tenants' endpoints (signed deliveries of billing events), and
Stripe's and PayPal's events, which take no API key: the gateway's signature authenticates
them, and the tenant is the one of the invoice the event names."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response

from deployments._serve import Admin, Connection, DecimalJSONRoute, Reader
from deployments.billing.context import Context
from deployments.billing.schemas import EndpointCreated, WebhookAck
from deployments.billing.telemetry import billing_metrics
from kiki.billing import payments, webhooks
from kiki.billing.gateway import LABELS
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


@router.post("/webhooks/stripe", response_model=WebhookAck)
async def stripe_webhook(request: Request, ctx: Context) -> Any:
    """Stripe's events (no API key: the Stripe-Signature header authenticates them)."""
    payload = await request.body()

    async def apply() -> str:
        event = await ctx.gateway("stripe").verify_event(payload, request.headers)
        return await payments.handle_stripe_event(await ctx.pool(), event, ctx.clock.now())

    return await _received(request, "stripe", apply)


@router.post("/webhooks/paypal", response_model=WebhookAck)
async def paypal_webhook(request: Request, ctx: Context) -> Any:
    """PayPal's events (no API key: the PAYPAL-TRANSMISSION-* headers authenticate them,
    checked by PayPal's verify-webhook-signature call against KIKI_PAYPAL_WEBHOOK_ID)."""
    payload = await request.body()

    async def apply() -> str:
        paypal = ctx.paypal
        event = await paypal.verify_event(payload, request.headers)
        return await payments.handle_paypal_event(await ctx.pool(), paypal, event, ctx.clock.now())

    return await _received(request, "paypal", apply)


async def _received(
    request: Request, gateway: str, apply: Callable[[], Awaitable[str]]
) -> WebhookAck:
    """Verify and apply one gateway event, counting its outcome (the alerts' input); a
    refused event is logged with the caller's address."""
    metrics = billing_metrics()
    try:
        outcome = await apply()
    except KikiError as exc:  # forged, stale, replayed or malformed: refused and logged
        client = request.client.host if request.client else "unknown"
        extra = {"code": exc.code, "error": exc.message, "client": client}
        logger.warning(f"{LABELS[gateway]} webhook rejected", extra=extra)
        if metrics is not None:
            metrics.gateway_event(gateway, _outcome(exc))
        raise
    except Exception:
        if metrics is not None:
            metrics.gateway_event(gateway, "failed")
        raise
    if metrics is not None:
        metrics.gateway_event(gateway, "applied")
    return WebhookAck(received=True, outcome=outcome)


def _outcome(exc: KikiError) -> str:
    if exc.code == "webhook_replayed":
        return "replayed"
    return "failed" if isinstance(exc, Unavailable) else "rejected"
