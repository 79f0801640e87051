"""The billing worker of a replica: every round it seals webhook endpoint secrets left in plain
text from before encryption, delivers the tenants' webhooks that are due and, once Stripe or
PayPal is configured, retries the payments that are due (dunning) and settles PayPal approval
links left unused past KIKI_PAYPAL_APPROVAL_TTL_S. Replicas run rounds side by
side: a delivery is claimed with SKIP LOCKED, and a charge carries its idempotency key."""

from __future__ import annotations

import asyncio
import logging

import httpx

from deployments.billing.context import BillingContext
from deployments.billing.telemetry import billing_metrics
from kiki.billing import payments, webhooks

logger = logging.getLogger("kiki.billing")


async def run_worker(context: BillingContext, interval_s: float) -> None:
    """A round every `interval_s` (`billing_worker_s`) until the replica stops; a failed
    round is logged and the next one runs on schedule."""
    metrics = billing_metrics()
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            await asyncio.sleep(interval_s)
            try:
                pool = await context.pool()
                await webhooks.seal_plain_secrets(pool, context.vault)
                report = await webhooks.deliver_due(pool, http, context.vault, context.clock.now())
                paid = []
                if context.gateways:
                    paid = await payments.collect_due(pool, context.gateways, context.clock.now())
                if "paypal" in context.gateways:  # approval links nobody used in time
                    paid += await payments.expire_approvals(
                        pool, context.paypal, context.clock.now(), context.paypal_approval_ttl
                    )
                if metrics is not None:
                    async with pool.acquire() as conn:
                        backlog = await webhooks.backlog(conn, context.clock.now())
                    metrics.round(backlog, report, paid)
            except Exception:
                logger.exception("billing worker round failed")
