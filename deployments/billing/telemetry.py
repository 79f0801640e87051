"""Billing's Ray metrics: the tenants' webhook backlog and deliveries, dunning's payment
attempts and Stripe's events. Made once per process, and only inside Ray (a billing app
hosted on uvicorn has no metrics agent to publish to)."""

from __future__ import annotations

import functools

import ray
from ray.util import metrics

from actors.telemetry import counter
from kiki.billing.models import Payment, PaymentStatus
from kiki.billing.webhooks import Backlog, DeliveryReport

# What became of a Stripe event: applied; replayed (Stripe sent it again: harmless); rejected
# (forged, stale or malformed); failed (KIKI could not apply it: Stripe retries, and the
# invoice waits).
STRIPE_OUTCOMES = ("applied", "replayed", "rejected", "failed")


class BillingMetrics:
    def __init__(self) -> None:
        self.pending = metrics.Gauge(
            "kiki_billing_webhooks_pending", "tenant webhook deliveries not yet made"
        )
        self.oldest = metrics.Gauge(
            "kiki_billing_webhook_oldest_pending_seconds",
            "age of the oldest tenant webhook delivery not yet made (0 when none)",
        )
        self.deliveries = counter(
            "kiki_billing_webhook_deliveries",
            "tenant webhook delivery attempts, by outcome (delivered, retrying, failed: given up)",
            ("outcome",),
            [{"outcome": o} for o in DeliveryReport.model_fields],
        )
        self.payments = counter(
            "kiki_billing_payment_attempts",
            "card payment attempts of invoices (first tries and dunning retries), by outcome",
            ("outcome",),
            [{"outcome": s.value} for s in PaymentStatus],
        )
        self.stripe = counter(
            "kiki_billing_stripe_events",
            "Stripe webhook events received, by outcome",
            ("outcome",),
            [{"outcome": o} for o in STRIPE_OUTCOMES],
        )

    def stripe_event(self, outcome: str) -> None:
        self.stripe.inc(1, tags={"outcome": outcome})

    def round(self, backlog: Backlog, report: DeliveryReport, paid: list[Payment]) -> None:
        self.pending.set(backlog.pending)
        self.oldest.set(backlog.oldest_age_s)
        for outcome, n in report.model_dump().items():
            if n:
                self.deliveries.inc(n, tags={"outcome": outcome})
        for payment in paid:
            self.payments.inc(1, tags={"outcome": payment.status.value})


@functools.cache
def _made() -> BillingMetrics:
    return BillingMetrics()


def billing_metrics() -> BillingMetrics | None:
    """The process's billing metrics; None outside Ray."""
    return _made() if ray.is_initialized() else None
