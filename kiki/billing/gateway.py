"""The one interface every payment gateway (Stripe, PayPal) offers the invoice flow.

Invoices are ours; a gateway only moves the money. The invoice flow, the dunning schedule and
refunds (kiki.billing.payments) see a gateway only through `PaymentGateway`, and pick the one
each customer chose (`Customer.payment_gateway`) from the configured ones (`Gateways`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol
from uuid import UUID

from kiki.billing.catalog import FrozenModel
from kiki.billing.models import Customer, Invoice
from kiki.errors import FailedPrecondition

# Each gateway's name as its vendor writes it, for messages and logs.
LABELS: dict[str, str] = {"stripe": "Stripe", "paypal": "PayPal"}
# What to set for each gateway, for the error that answers a call needing an unconfigured one.
SETUP: dict[str, str] = {
    "stripe": "set KIKI_STRIPE_API_KEY (and KIKI_STRIPE_API_BASE for a Stripe-compatible "
    "server) and restart",
    "paypal": "set KIKI_PAYPAL_CLIENT_ID and KIKI_PAYPAL_CLIENT_SECRET (and KIKI_PAYPAL_API_BASE "
    "for PayPal's sandbox) and restart",
}


class ChargeResult(FrozenModel):
    """One payment attempt's outcome. `payment_intent_id` is the gateway's reference of the
    payment (a Stripe PaymentIntent, a PayPal capture, or a PayPal order awaiting approval);
    `approval_url` is where the payer approves it, when the gateway needs them to."""

    payment_intent_id: str | None
    status: Literal["succeeded", "processing", "failed"]
    error: str | None = None
    approval_url: str | None = None


class PaymentGateway(Protocol):
    async def sync_customer(
        self, tenant_id: UUID, customer: Customer, payment_method: str | None
    ) -> tuple[str | None, str | None]:
        """The processor's customer id (if it has one), and the payment method's id if one
        was given."""
        ...

    async def charge(
        self, tenant_id: UUID, invoice: Invoice, customer: Customer, idempotency_key: str
    ) -> ChargeResult: ...

    async def refund(
        self, payment_intent_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> int:
        """Refund part of a payment (in its currency); returns the amount refunded."""
        ...

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """The event, if its signature and timestamp are good; InvalidInput otherwise."""
        ...


Gateways = Mapping[str, PaymentGateway]


def gateway_of(gateways: Gateways, name: str) -> PaymentGateway:
    """The configured gateway `name`, or the error that says how to configure it."""
    try:
        return gateways[name]
    except KeyError:
        label = LABELS.get(name, name)
        raise FailedPrecondition(f"{label} payments are not configured: {SETUP[name]}") from None
