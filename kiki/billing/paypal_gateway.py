"""PayPal behind the same PaymentGateway as Stripe, over PayPal's documented REST API with httpx.

Why not `paypal-server-sdk`: it is synchronous (a `requests` session: every call would block
the billing replica's event loop), it picks its host from a fixed Environment (sandbox or
production, no configurable base for a local peer), and it has no webhook verification.

- Auth: OAuth 2.0 client credentials (`POST /v1/oauth2/token`); the token is cached until a
  minute before it expires, one refresh is shared by every concurrent call (a lock), and a
  401 drops it and retries once.
- Payments: Orders v2. A customer with a vaulted payment token (Payment Method Tokens v3) is
  charged at once (`payment_source.paypal.vault_id`); one without gets an order the payer
  approves at PayPal's `payer-action` link, captured when PayPal sends the payer back to
  KIKI's return route or its CHECKOUT.ORDER.APPROVED event arrives, whichever is first
  (kiki.billing.payments.settle_order); `GET /v2/checkout/orders/{id}` says where an order
  stands there and when an approval has waited too long. Every write carries
  `PayPal-Request-Id`, so a retry never charges twice.
- Refunds: `POST /v2/payments/captures/{id}/refund`.
- Webhooks: verified by PayPal's own `POST /v1/notifications/verify-webhook-signature` rather
  than offline (CRC32 + RSA-SHA256 with the certificate at PAYPAL-CERT-URL): the offline check
  means fetching a certificate from a URL the request names, pinning its host and validating
  its chain ourselves, which is where forgeries get in; PayPal's call does all of that. It does
  not judge age, so PAYPAL-TRANSMISSION-TIME is checked against the tolerance here.
- Money: PayPal takes decimal strings with the currency's minor-unit digits ("67.80",
  "1000" for JPY), converted exactly from and to integer minor units.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import httpx

from kiki.billing.gateway import ChargeResult
from kiki.billing.models import Customer, Invoice
from kiki.billing.rounding import exact_minor, minor_unit_factor
from kiki.clock import Clock, WallClock
from kiki.errors import FailedPrecondition, InvalidInput, Unavailable

# The headers PayPal signs each webhook delivery with (all required to verify it).
SIGNATURE_HEADERS = {
    "auth_algo": "PAYPAL-AUTH-ALGO",
    "cert_url": "PAYPAL-CERT-URL",
    "transmission_id": "PAYPAL-TRANSMISSION-ID",
    "transmission_sig": "PAYPAL-TRANSMISSION-SIG",
    "transmission_time": "PAYPAL-TRANSMISSION-TIME",
}
# PayPal ids (orders, captures, tokens) are upper-case letters and digits; anything else in
# a path is refused before it reaches PayPal.
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Seconds before expiry a cached access token is replaced, so none expires mid-call.
_TOKEN_MARGIN_S = 60


def to_paypal_value(amount_minor: int, currency: str) -> str:
    """Integer minor units as PayPal's decimal string: 6780 EUR -> "67.80", 1000 JPY -> "1000"."""
    digits = len(str(minor_unit_factor(currency))) - 1
    return format(Decimal(amount_minor).scaleb(-digits), f".{digits}f")


def from_paypal_value(value: object, currency: str) -> int:
    """PayPal's decimal string as integer minor units (exactly; finer is refused)."""
    try:
        return exact_minor(Decimal(str(value)), currency)
    except InvalidOperation:
        raise InvalidInput(f"PayPal sent {value!r}, not an amount") from None


def custom_id(tenant_id: UUID, invoice_id: UUID) -> str:
    """The purchase unit's custom_id: PayPal returns it on the order, its captures and the
    events about them, so an event finds its invoice."""
    return f"{tenant_id}:{invoice_id}"


def invoice_of_custom_id(value: object) -> tuple[UUID, UUID] | None:
    try:
        tenant, invoice = str(value).split(":")
        return UUID(tenant), UUID(invoice)
    except ValueError:
        return None


class PayPalGateway:
    """PaymentGateway over PayPal's REST API (or a server that speaks it)."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        api_base: str,
        webhook_id: str | None,
        *,
        redirect_base: str,
        tolerance_s: int = 300,
        clock: Clock | None = None,
        timeout_s: float = 30,
    ) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.api_base = api_base.rstrip("/")
        self.webhook_id = webhook_id
        # KIKI's billing app as the payer's browser reaches it: PayPal sends the payer back
        # to its /paypal/return or /paypal/cancel route, naming the invoice.
        self.redirect_base = redirect_base.rstrip("/")
        self.tolerance_s = tolerance_s
        self.clock = clock or WallClock()
        self.timeout_s = timeout_s
        self._token: tuple[str, float] | None = None  # (access token, monotonic expiry)
        self._lock = asyncio.Lock()

    # --- HTTP -------------------------------------------------------------------------------

    async def _access_token(self, http: httpx.AsyncClient, stale: str | None = None) -> str:
        """A valid token; `stale` is one PayPal refused (replaced unless another call did)."""
        async with self._lock:
            if self._token and self._token[0] != stale and time.monotonic() < self._token[1]:
                return self._token[0]
            response = await http.post(
                "/v1/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(self.client_id, self.client_secret),
            )
            if response.status_code in (400, 401):
                raise FailedPrecondition(
                    "PayPal refused the client credentials "
                    f"({_describe(response)}): check KIKI_PAYPAL_CLIENT_ID and "
                    "KIKI_PAYPAL_CLIENT_SECRET, and that KIKI_PAYPAL_API_BASE is their "
                    "environment (sandbox or live)"
                )
            _raise_unavailable(response)
            body = response.json()
            expires = time.monotonic() + int(body["expires_in"]) - _TOKEN_MARGIN_S
            self._token = (body["access_token"], expires)
            return self._token[0]

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        content: bytes | None = None,
        request_id: str | None = None,
    ) -> httpx.Response:
        """One API call with a bearer token; answers 4xx to the caller, raises on 5xx."""
        headers = {"Content-Type": "application/json", "Prefer": "return=representation"}
        if request_id is not None:
            headers["PayPal-Request-Id"] = request_id
        data = content if content is not None else None if body is None else json.dumps(body)
        try:
            async with httpx.AsyncClient(base_url=self.api_base, timeout=self.timeout_s) as http:
                token = await self._access_token(http)
                for attempt in range(2):
                    headers["Authorization"] = f"Bearer {token}"
                    response = await http.request(method, path, content=data, headers=headers)
                    if response.status_code != 401 or attempt:
                        break
                    token = await self._access_token(http, stale=token)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"PayPal did not answer ({exc.__class__.__name__}: {exc}); retry later"
            ) from None
        _raise_unavailable(response)
        if response.status_code == 401:
            raise FailedPrecondition(f"PayPal refused a fresh access token: {_describe(response)}")
        return response

    # --- PaymentGateway ----------------------------------------------------------------------

    async def sync_customer(
        self, tenant_id: UUID, customer: Customer, payment_method: str | None
    ) -> tuple[str | None, str | None]:
        """Check a vaulted payment token exists at PayPal; None = pay by approval link."""
        if payment_method is None:
            return None, None
        if not _ID.match(payment_method):
            raise InvalidInput(
                f"{payment_method!r} is not a PayPal payment token id (letters, digits, - and _)"
            )
        response = await self._call("GET", f"/v3/vault/payment-tokens/{payment_method}")
        if response.status_code == 404:
            raise InvalidInput(
                f"PayPal has no payment token {payment_method!r}: vault the payer's PayPal "
                "account first (Payment Method Tokens API), or choose PayPal without a "
                "payment_method to pay each invoice by approval link"
            )
        if response.status_code >= 400:
            raise InvalidInput(f"PayPal refused the payment token: {_describe(response)}")
        token = response.json()
        return (token.get("customer") or {}).get("id"), token["id"]

    async def charge(
        self, tenant_id: UUID, invoice: Invoice, customer: Customer, idempotency_key: str
    ) -> ChargeResult:
        source: dict[str, Any]
        if customer.paypal_payment_token_id:
            source = {"vault_id": customer.paypal_payment_token_id}
        else:
            back = f"?invoice={invoice.id}"
            source = {
                "experience_context": {
                    "return_url": f"{self.redirect_base}/paypal/return{back}",
                    "cancel_url": f"{self.redirect_base}/paypal/cancel{back}",
                    "user_action": "PAY_NOW",
                    "shipping_preference": "NO_SHIPPING",
                }
            }
        order = {
            "intent": "CAPTURE",
            "purchase_units": [
                {
                    "custom_id": custom_id(tenant_id, invoice.id),
                    "description": f"Invoice {invoice.number}",
                    "amount": {
                        "currency_code": invoice.currency,
                        "value": to_paypal_value(invoice.total_due_minor, invoice.currency),
                    },
                }
            ],
            "payment_source": {"paypal": source},
        }
        response = await self._call(
            "POST", "/v2/checkout/orders", body=order, request_id=idempotency_key
        )
        if response.status_code == 422:  # declined or not chargeable: a failed attempt
            return ChargeResult(payment_intent_id=None, status="failed", error=_describe(response))
        if response.status_code >= 400:
            raise InvalidInput(f"PayPal refused the order: {_describe(response)}")
        created = response.json()
        if created.get("status") in ("CREATED", "APPROVED"):  # not captured on creation
            return await self.capture(created["id"], f"{idempotency_key}:capture")
        return order_outcome(created)

    async def order(self, order_id: str) -> dict[str, Any] | None:
        """The order as PayPal shows it now; None once PayPal no longer has it (expired)."""
        if not _ID.match(order_id):
            raise InvalidInput(f"{order_id!r} is not a PayPal order id")
        response = await self._call("GET", f"/v2/checkout/orders/{order_id}")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise InvalidInput(f"PayPal refused to show order {order_id}: {_describe(response)}")
        order: dict[str, Any] = response.json()
        return order

    async def capture(self, order_id: str, idempotency_key: str) -> ChargeResult:
        """Capture an order the payer approved (or a vaulted one not captured on creation)."""
        if not _ID.match(order_id):
            raise InvalidInput(f"{order_id!r} is not a PayPal order id")
        response = await self._call(
            "POST",
            f"/v2/checkout/orders/{order_id}/capture",
            body={},
            request_id=idempotency_key,
        )
        if response.status_code == 422:
            return ChargeResult(
                payment_intent_id=order_id, status="failed", error=_describe(response)
            )
        if response.status_code >= 400:
            raise InvalidInput(f"PayPal refused the capture: {_describe(response)}")
        return order_outcome(response.json())

    async def refund(
        self, payment_intent_id: str, amount_minor: int, currency: str, idempotency_key: str
    ) -> int:
        if not _ID.match(payment_intent_id):
            raise FailedPrecondition(f"{payment_intent_id!r} is not a PayPal capture id")
        response = await self._call(
            "POST",
            f"/v2/payments/captures/{payment_intent_id}/refund",
            body={
                "amount": {
                    "currency_code": currency,
                    "value": to_paypal_value(amount_minor, currency),
                }
            },
            request_id=idempotency_key,
        )
        if response.status_code >= 400:
            raise InvalidInput(f"PayPal refused the refund: {_describe(response)}")
        refund = response.json()
        if refund.get("status") in ("CANCELLED", "FAILED"):
            raise FailedPrecondition(f"PayPal's refund {refund.get('id')} is {refund['status']}")
        amount = refund.get("amount") or {}
        return from_paypal_value(amount.get("value"), amount.get("currency_code") or currency)

    async def verify_event(self, payload: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        if not self.webhook_id:
            raise FailedPrecondition(
                "PayPal webhooks are not configured: set KIKI_PAYPAL_WEBHOOK_ID (the id PayPal "
                "gave the webhook pointing at POST /billing/webhooks/paypal)"
            )
        signed = {field: headers.get(name) for field, name in SIGNATURE_HEADERS.items()}
        missing = sorted(SIGNATURE_HEADERS[f] for f, value in signed.items() if not value)
        if missing:
            raise InvalidInput(
                f"missing {', '.join(missing)}: only PayPal's signed events are accepted",
                code="webhook_signature_missing",
            )
        try:
            event = json.loads(payload)
            sent_at = datetime.fromisoformat(str(signed["transmission_time"]))
        except ValueError:
            raise InvalidInput(
                "the event is not JSON, or PAYPAL-TRANSMISSION-TIME is not an ISO 8601 time",
                code="webhook_malformed",
            ) from None
        if not isinstance(event, dict) or sent_at.tzinfo is None:
            raise InvalidInput(
                "the event must be a JSON object and PAYPAL-TRANSMISSION-TIME carry its zone",
                code="webhook_malformed",
            )
        # The event goes back byte for byte: PayPal's signature covers the body as sent
        # (CRC32), and re-serialising it could change that.
        request = json.dumps(signed | {"webhook_id": self.webhook_id})[:-1].encode()
        response = await self._call(
            "POST",
            "/v1/notifications/verify-webhook-signature",
            content=request + b', "webhook_event": ' + payload + b"}",
        )
        if response.status_code >= 400:
            raise InvalidInput(
                f"PayPal could not check the signature: {_describe(response)}",
                code="webhook_signature_invalid",
            )
        if response.json().get("verification_status") != "SUCCESS":
            raise InvalidInput(
                "PayPal says the signature does not match this event and KIKI_PAYPAL_WEBHOOK_ID",
                code="webhook_signature_invalid",
            )
        age = (self.clock.now() - sent_at).total_seconds()
        if abs(age) > self.tolerance_s:
            raise InvalidInput(
                f"event transmitted {age:.0f}s ago, more than {self.tolerance_s}s: a replay, or "
                "a clock out of sync; PayPal signs each retry afresh",
                code="webhook_stale",
            )
        return event


def order_outcome(order: dict[str, Any]) -> ChargeResult:
    """An order's state as a payment attempt: captured, pending, declined or awaiting the
    payer."""
    if order.get("status") == "PAYER_ACTION_REQUIRED":
        link = next(
            (x["href"] for x in order.get("links", []) if x.get("rel") == "payer-action"), None
        )
        return ChargeResult(payment_intent_id=order["id"], status="processing", approval_url=link)
    units = order.get("purchase_units") or [{}]
    captures = (units[0].get("payments") or {}).get("captures") or []
    if not captures:
        return ChargeResult(
            payment_intent_id=order.get("id"),
            status="failed",
            error=f"PayPal order {order.get('status')} without a capture",
        )
    capture = captures[-1]
    status = capture.get("status")
    if status == "COMPLETED":
        return ChargeResult(payment_intent_id=capture["id"], status="succeeded")
    if status == "PENDING":
        return ChargeResult(payment_intent_id=capture["id"], status="processing")
    response = (capture.get("processor_response") or {}).get("response_code")
    reason = f" (processor response {response})" if response else ""
    return ChargeResult(
        payment_intent_id=capture["id"], status="failed", error=f"PayPal capture {status}{reason}"
    )


def _describe(response: httpx.Response) -> str:
    """PayPal's error in a line: its name, first issue and description, and debug_id."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if "error" in body:  # OAuth errors: {"error", "error_description"}
        return f"{body['error']}: {body.get('error_description', '')}".strip(": ")
    detail = (body.get("details") or [{}])[0]
    parts = [
        body.get("name"),
        detail.get("issue"),
        detail.get("description") or body.get("message"),
    ]
    text = ": ".join(str(p) for p in parts if p)
    return f"{text} (debug_id {body['debug_id']})" if body.get("debug_id") else text


def _raise_unavailable(response: httpx.Response) -> None:
    if response.status_code == 429 or response.status_code >= 500:
        raise Unavailable(f"PayPal answered {_describe(response)}; retry later")
