"""Billing's Ray metrics: the tenants' webhook backlog and deliveries, dunning's payment
attempts and the payment gateways' (Stripe's, PayPal's) events. Made once per process, and
only inside Ray (a billing app hosted on uvicorn has no metrics agent to publish to)."""

from __future__ import annotations

import functools

import ray
from ray.util import metrics

from actors.telemetry import counter
from kiki.billing.models import Payment, PaymentStatus
from kiki.billing.webhooks import Backlog, DeliveryReport

# What became of a gateway's event: applied; replayed (the gateway sent it again: harmless);
# rejected (forged, stale or malformed); failed (KIKI could not apply it: the gateway retries,
# and the invoice waits).
EVENT_OUTCOMES = ("applied", "replayed", "rejected", "failed")
GATEWAYS = ("stripe", "paypal")


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
        self.gateway_events = counter(
            "kiki_billing_gateway_events",
            "payment gateway (Stripe, PayPal) webhook events received, by gateway and outcome",
            ("gateway", "outcome"),
            [{"gateway": g, "outcome": o} for g in GATEWAYS for o in EVENT_OUTCOMES],
        )

    def gateway_event(self, gateway: str, outcome: str) -> None:
        self.gateway_events.inc(1, tags={"gateway": gateway, "outcome": outcome})

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
