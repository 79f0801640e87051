"""Stripe behind one small interface: customers, payment methods, PaymentIntents, refunds and
webhook verification, with the `stripe` library against a configurable API base.

Invoices are ours (numbered, taxed and rendered by KIKI); Stripe only moves the money. So
each finalized invoice is paid by a PaymentIntent carrying the invoice in its metadata
(which also works on localstripe, which has no invoice finalization). Every call carries an
idempotency key, so a retried call never charges twice on Stripe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import stripe

from kiki.billing.gateway import ChargeResult
from kiki.billing.models import Customer, Invoice
from kiki.errors import FailedPrecondition, InvalidInput, Unavailable

TENANT_KEY = "kiki_tenant_id"
INVOICE_KEY = "kiki_invoice_id"


class StripeGateway:
    """PaymentGateway over Stripe's API (or any server that speaks it, e.g. localstripe)."""

    def __init__(
        self, api_key: str, api_base: str, webhook_secret: str | None, tolerance_s: int = 300
    ) -> None:
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            http_client=stripe.HTTPXClient(),
            max_network_retries=2,
        )
        self.webhook_secret = webhook_secret
        self.tolerance_s = tolerance_s

    async def sync_customer(
        self, tenant_id: UUID, customer: Customer, payment_method: str | None
    ) -> tuple[str | None, str | None]:
        v1 = self.client.v1
        try:
            stripe_id = customer.stripe_customer_id
            if stripe_id is None:
                created = await v1.customers.create_async(
                    params=_without_none(
                        {
                            "name": customer.name or None,
                            "email": customer.email,
                            "metadata": {TENANT_KEY: str(tenant_id),
                                         "kiki_customer_id": customer.customer_id},
                        }
                    ),
                    options={"idempotency_key": f"kiki-customer:{tenant_id}:{customer.customer_id}"},  # noqa: E501
                )  # fmt: skip
                stripe_id = created.id
            if payment_method is None:
                return stripe_id, None
            attached = await v1.payment_methods.attach_async(
                payment_method, params={"customer": stripe_id}
            )
            return stripe_id, attached.id
        except stripe.CardError as exc:
            raise InvalidInput(f"the card was refused: {exc.user_message or exc}") from None
        except stripe.InvalidRequestError as exc:
            raise InvalidInput(f"Stripe refused the request: {exc.user_message or exc}") from None
        except stripe.StripeError as exc:
            raise _unavailable(exc) from None

    async def charge(
        self, tenant_id: UUID, invoice: Invoice, customer: Customer, idempotency_key: str
    ) -> ChargeResult:
        params = {
            "amount": invoice.total_due_minor,
            "currency": invoice.currency.lower(),
            "customer": customer.stripe_customer_id,
            "payment_method": customer.stripe_payment_method_id,
            "confirm": True,
            "off_session": True,
            "metadata": {TENANT_KEY: str(tenant_id), INVOICE_KEY: str(invoice.id)},
        }
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.CardError as exc:
            failed = getattr(exc.error, "payment_intent", None)
            return ChargeResult(
                payment_intent_id=getattr(failed, "id", None),
                status="failed",
                error=exc.user_message or str(exc),
            )
        except stripe.StripeError as exc:
            raise _unavailable(exc) from None
        if intent.status == "succeeded":
            return ChargeResult(payment_intent_id=intent.id, status="succeeded")
        if intent.status == "processing":
            return ChargeResult(payment_intent_id=intent.id, status="processing")
        return ChargeResult(
            payment_intent_id=intent.id, status="failed", error=f"payment {intent.status}"
        )

    async def refund(
        self, payment_intent_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> int:
        # Stripe refunds in the PaymentIntent's own currency: `currency` is not sent.
        try:
            refund = await self.client.v1.refunds.create_async(
                params={"payment_intent": payment_intent_id, "amount": amount_minor},
                options={"idempotency_key": idempotency_key},
            )
        except stripe.InvalidRequestError as exc:
            raise InvalidInput(f"Stripe refused the refund: {exc.user_message or exc}") from None
        except stripe.StripeError as exc:
            raise _unavailable(exc) from None
        return int(refund.amount)

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        signature = headers.get("Stripe-Signature")
        if not self.webhook_secret:
            raise FailedPrecondition(
                "Stripe webhooks are not configured: set KIKI_STRIPE_WEBHOOK_SECRET"
            )
        if not signature:
            raise InvalidInput(
                "missing Stripe-Signature header: only Stripe's signed events are accepted",
                code="webhook_signature_missing",
            )
        try:
            stripe.Webhook.construct_event(
                payload, signature, self.webhook_secret, tolerance=self.tolerance_s
            )
        except stripe.SignatureVerificationError as exc:
            if "tolerance" in str(exc).lower():
                raise InvalidInput(
                    f"event timestamp is more than {self.tolerance_s}s old: a replay, or a clock "
                    "out of sync; Stripe sends fresh signatures on its retries",
                    code="webhook_stale",
                ) from None
            raise InvalidInput(
                "the Stripe-Signature does not match the payload: not signed with "
                "KIKI_STRIPE_WEBHOOK_SECRET",
                code="webhook_signature_invalid",
            ) from None
        except ValueError:
            raise InvalidInput("the event is not valid JSON", code="webhook_malformed") from None
        return json.loads(payload)


def _without_none(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


def _unavailable(exc: stripe.StripeError) -> Unavailable:
    return Unavailable(
        f"the payment processor did not answer as expected ({exc.__class__.__name__}: "
        f"{exc.user_message or exc}); retry later"
    )
