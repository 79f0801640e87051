"""FAKE of the PayPal REST API endpoints KIKI uses (not PayPal): OAuth 2.0 client credentials,
Payment Method Tokens v3 (read a vaulted token), Orders v2 (create, show, capture), Payments v2
(refund a capture) and Webhooks v1 (verify-webhook-signature), plus the webhook events PayPal
sends, signed the way PayPal signs them.

Checked as PayPal does: HTTP basic client credentials at the token endpoint (401
`invalid_client`), a bearer token on every call (401 `invalid_token`; `expire_tokens` revokes
them all), JSON shapes and types (400 INVALID_REQUEST with `details[].issue`), amounts as
strings with the currency's decimals (422 DECIMAL_PRECISION), PayPal-Request-Id idempotency
(a repeated id answers the first response), the order life cycle (a capture before the payer
approved: 422 ORDER_NOT_APPROVED; twice: 422 ORDER_ALREADY_CAPTURED), declines (422
INSTRUMENT_DECLINED), refunds within what is left (422 REFUND_AMOUNT_EXCEEDED). Errors are
PayPal's `{"name", "message", "debug_id", "details": [{"issue", "description"}]}`.

Webhooks: each delivery carries PAYPAL-TRANSMISSION-ID/-TIME/-SIG, PAYPAL-CERT-URL and
PAYPAL-AUTH-ALGO; the signature is RSA-SHA256 (this fake's own key) over
`<transmission id>|<transmission time>|<webhook id>|<CRC32 of the body>`, as PayPal documents.
verify-webhook-signature really checks it: the cert URL must be the fake's, the webhook id
one registered here, and the CRC32 is taken over the event re-serialised as this fake
serialises the events it sends, so any change to the event, a header or the webhook id fails.
"""

from __future__ import annotations

import base64
import json
import uuid
import zlib
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Request, Response

from tests.fakes.ad_platforms import Failure, FakeApi, bearer, reply

ZERO_DECIMAL = {"JPY", "HUF", "TWD"}  # PayPal's currencies without minor units
CERT_PATH = "/v1/notifications/certs/CERT-360caa42-fca2a594-fake"


def _id(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex[:17].upper()


def error(status: int, name: str, issue: str, description: str, message: str = "") -> Response:
    return reply(
        status,
        {
            "name": name,
            "message": message or description,
            "debug_id": uuid.uuid4().hex[:13],
            "details": [{"issue": issue, "description": description}],
        },
    )


def _invalid(issue: str, description: str) -> Response:
    return error(
        400,
        "INVALID_REQUEST",
        issue,
        description,
        "Request is not well-formed, syntactically incorrect, or violates schema.",
    )


def _unprocessable(issue: str, description: str) -> Response:
    return error(
        422,
        "UNPROCESSABLE_ENTITY",
        issue,
        description,
        "The requested action could not be performed, semantically incorrect, or failed "
        "business validation.",
    )


def _not_found() -> Response:
    return error(
        404,
        "RESOURCE_NOT_FOUND",
        "INVALID_RESOURCE_ID",
        "Specified resource ID does not exist. Please check the resource ID and try again.",
        "The specified resource does not exist.",
    )


def _amount_error(amount: Any) -> Response | None:
    """PayPal's checks of an `amount` object: a currency code and a decimal string value."""
    if not isinstance(amount, dict) or not isinstance(amount.get("currency_code"), str):
        return _invalid("MISSING_REQUIRED_PARAMETER", "amount.currency_code is required.")
    value = amount.get("value")
    if not isinstance(value, str):
        return _invalid("INVALID_PARAMETER_SYNTAX", "amount.value must be a string.")
    try:
        number = Decimal(value)
    except InvalidOperation:
        return _invalid("INVALID_PARAMETER_SYNTAX", f"amount.value {value!r} is not a number.")
    places = 0 if amount["currency_code"] in ZERO_DECIMAL else 2
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int) or -exponent > places:
        return _unprocessable(
            "DECIMAL_PRECISION",
            f"If the currency supports decimals, only {places} decimal place precision is "
            "supported.",
        )
    if number <= 0:
        return _unprocessable("AMOUNT_MUST_BE_POSITIVE", "amount.value must be above 0.")
    return None


class FakePayPal(FakeApi):
    """FAKE PayPal. `orders`, `captures`, `refunds` hold what was made, as PayPal shows it;
    `vault_token` seeds a vaulted payment token (a declining one to test declines)."""

    def __init__(self, *, client_id: str, client_secret: str, base_url: str) -> None:
        self.client_id, self.client_secret, self.base_url = client_id, client_secret, base_url
        self.tokens: set[str] = set()
        self.tokens_issued = 0
        self.vault: dict[str, dict[str, Any]] = {}
        self.declining: set[str] = set()
        self.orders: dict[str, dict[str, Any]] = {}
        self.captures: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.webhooks: dict[str, str] = {}  # id -> url
        self._refunded: dict[str, str] = {}  # refund id -> capture id
        self._replies: dict[str, tuple[int, Any]] = {}  # PayPal-Request-Id -> first answer
        self._contexts: dict[str, dict[str, Any]] = {}  # order id -> its experience_context
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        super().__init__()

    # --- what a test does at PayPal ----------------------------------------------------------

    def vault_token(self, email: str, *, declines: bool = False) -> str:
        token = _id()
        self.vault[token] = {
            "id": token,
            "customer": {"id": _id("CUST")},
            "payment_source": {"paypal": {"email_address": email, "usage_type": "MERCHANT"}},
            "links": [
                {
                    "href": f"{self.base_url}/v3/vault/payment-tokens/{token}",
                    "rel": "self",
                    "method": "GET",
                }
            ],
        }
        if declines:
            self.declining.add(token)
        return token

    def approve(self, order_id: str) -> dict[str, Any]:
        """The payer approves the order at its payer-action link; returns the order."""
        order = self.orders[order_id]
        assert order["status"] == "PAYER_ACTION_REQUIRED", order["status"]
        order["status"] = "APPROVED"
        return order

    def back_to_merchant(self, order_id: str, *, approved: bool) -> str:
        """Where PayPal sends the payer's browser from the approval page: the order's
        return_url with `token` (the order id) and `PayerID` added once they approved, its
        cancel_url with `token` when they cancelled."""
        context = self._contexts[order_id]
        url = context["return_url"] if approved else context["cancel_url"]
        extra = {"token": order_id} | ({"PayerID": _id()} if approved else {})
        return f"{url}{'&' if '?' in url else '?'}{urlencode(extra)}"

    def lapse(self, order_id: str) -> None:
        """The order was never approved and PayPal let it lapse: it answers 404 from now on."""
        del self.orders[order_id]

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def register_webhook(self, url: str) -> str:
        webhook_id = _id("WH-")
        self.webhooks[webhook_id] = url
        return webhook_id

    def event(self, event_type: str, resource: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": _id("WH-EVT-"),
            "event_version": "1.0",
            "create_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "resource_type": "checkout-order" if event_type.startswith("CHECKOUT") else "capture",
            "event_type": event_type,
            "summary": f"{event_type} (fake)",
            "resource": resource,
        }

    def signed(
        self, event: dict[str, Any], webhook_id: str, *, at: datetime | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """A delivery as PayPal sends it: the body and its PAYPAL-* headers."""
        body = json.dumps(event).encode()
        sent = (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
        transmission = str(uuid.uuid4())
        message = f"{transmission}|{sent}|{webhook_id}|{zlib.crc32(body)}".encode()
        signature = self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return body, {
            "Content-Type": "application/json",
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            "PAYPAL-CERT-URL": self.base_url + CERT_PATH,
            "PAYPAL-TRANSMISSION-ID": transmission,
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
            "PAYPAL-TRANSMISSION-TIME": sent,
        }

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":
            return error(
                429,
                "RATE_LIMIT_REACHED",
                "RATE_LIMIT_REACHED",
                "Too many requests. Blocked due to rate limiting.",
            )
        return error(503, "SERVICE_UNAVAILABLE", "SERVICE_UNAVAILABLE", "Service Unavailable.")

    # --- the API -----------------------------------------------------------------------------

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/v1/oauth2/token")
        async def token(request: Request) -> Response:
            scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
            given = base64.b64decode(encoded or b"").decode(errors="replace")
            if scheme != "Basic" or given != f"{self.client_id}:{self.client_secret}":
                return reply(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "Client Authentication failed",
                    },
                )
            form = (await request.body()).decode()
            if form != "grant_type=client_credentials":
                return reply(
                    400,
                    {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"},
                )
            self.tokens_issued += 1
            access = f"A21AA{uuid.uuid4().hex}"
            self.tokens.add(access)
            return reply(
                200,
                {
                    "scope": "https://uri.paypal.com/services/payments/payment",
                    "access_token": access,
                    "token_type": "Bearer",
                    "app_id": "APP-80W284485P519543T",
                    "expires_in": 32400,
                    "nonce": uuid.uuid4().hex,
                },
            )

        @app.get("/v3/vault/payment-tokens/{token_id}")
        async def payment_token(token_id: str, request: Request) -> Response:
            if (denied := self._unauthorized(request)) is not None:
                return denied
            found = self.vault.get(token_id)
            return _not_found() if found is None else reply(200, found)

        @app.post("/v2/checkout/orders")
        async def create_order(request: Request) -> Response:
            return await self._idempotent(request, self._create_order)

        @app.get("/v2/checkout/orders/{order_id}")
        async def show_order(order_id: str, request: Request) -> Response:
            if (denied := self._unauthorized(request)) is not None:
                return denied
            order = self.orders.get(order_id)
            if order is None:
                return _not_found()
            return reply(200, order)

        @app.post("/v2/checkout/orders/{order_id}/capture")
        async def capture(order_id: str, request: Request) -> Response:
            return await self._idempotent(request, lambda body: self._capture(order_id))

        @app.post("/v2/payments/captures/{capture_id}/refund")
        async def refund(capture_id: str, request: Request) -> Response:
            minimal = request.headers.get("prefer") != "return=representation"
            return await self._idempotent(
                request, lambda body: self._refund(capture_id, body, minimal)
            )

        @app.post("/v1/notifications/verify-webhook-signature")
        async def verify(request: Request) -> Response:
            if (denied := self._unauthorized(request)) is not None:
                return denied
            try:
                body = json.loads(await request.body())
            except ValueError:
                return _invalid("MALFORMED_REQUEST_JSON", "The request JSON is not well formed.")
            fields = (
                "auth_algo",
                "cert_url",
                "transmission_id",
                "transmission_sig",
                "transmission_time",
                "webhook_id",
                "webhook_event",
            )
            missing = [f for f in fields if not body.get(f)]
            if missing:
                return error(
                    400,
                    "VALIDATION_ERROR",
                    "MISSING_REQUIRED_PARAMETER",
                    f"{missing[0]} is required",
                    "Invalid request - see details",
                )
            if body["webhook_id"] not in self.webhooks:
                return _not_found()
            return reply(200, {"verification_status": self._verdict(body)})

    def _verdict(self, body: dict[str, Any]) -> str:
        if body["auth_algo"] != "SHA256withRSA" or body["cert_url"] != self.base_url + CERT_PATH:
            return "FAILURE"
        event = json.dumps(body["webhook_event"]).encode()
        message = (
            f"{body['transmission_id']}|{body['transmission_time']}|"
            f"{body['webhook_id']}|{zlib.crc32(event)}"
        ).encode()
        try:
            self._key.public_key().verify(
                base64.b64decode(body["transmission_sig"]),
                message,
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except Exception:  # InvalidSignature, or a signature that is not base64
            return "FAILURE"
        return "SUCCESS"

    def _unauthorized(self, request: Request) -> Response | None:
        if bearer(request) in self.tokens:
            return None
        return reply(
            401, {"error": "invalid_token", "error_description": "Access Token not found in cache"}
        )

    async def _idempotent(self, request: Request, handle: Any) -> Response:
        """Serve a write once per PayPal-Request-Id: a repeat answers the first response."""
        if (denied := self._unauthorized(request)) is not None:
            return denied
        key = request.headers.get("paypal-request-id")
        if key is not None and key in self._replies:
            status, first = self._replies[key]
            return reply(status, first)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _invalid("MALFORMED_REQUEST_JSON", "The request JSON is not well formed.")
        if not isinstance(body, dict):
            return _invalid("MALFORMED_REQUEST_JSON", "The request JSON must be an object.")
        response = handle(body)
        if key is not None and response.status_code < 500:
            self._replies[key] = (response.status_code, json.loads(response.body))
        return response

    def _create_order(self, body: dict[str, Any]) -> Response:
        if body.get("intent") not in ("CAPTURE", "AUTHORIZE"):
            return _invalid("INVALID_PARAMETER_VALUE", "intent must be CAPTURE or AUTHORIZE.")
        units = body.get("purchase_units")
        if not isinstance(units, list) or len(units) != 1 or not isinstance(units[0], dict):
            return _invalid("MISSING_REQUIRED_PARAMETER", "purchase_units (one) is required.")
        if (bad := _amount_error(units[0].get("amount"))) is not None:
            return bad
        if len(str(units[0].get("custom_id", ""))) > 127:
            return _invalid("INVALID_STRING_MAX_LENGTH", "custom_id is too long (127 at most).")
        paypal = (body.get("payment_source") or {}).get("paypal")
        if not isinstance(paypal, dict):
            return _invalid("MISSING_REQUIRED_PARAMETER", "payment_source.paypal is required.")
        order_id = _id()
        order = {
            "id": order_id,
            "intent": body["intent"],
            "purchase_units": [{"reference_id": "default", **units[0]}],
            "payment_source": {"paypal": {}},
            "create_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "links": [
                {
                    "href": f"{self.base_url}/v2/checkout/orders/{order_id}",
                    "rel": "self",
                    "method": "GET",
                }
            ],
        }
        vault_id = paypal.get("vault_id")
        if vault_id is not None:
            if vault_id not in self.vault:
                return _not_found()
            if vault_id in self.declining:
                return _unprocessable(
                    "INSTRUMENT_DECLINED",
                    "The instrument presented was either declined by the processor or bank, or "
                    "it can't be used for this payment.",
                )
            # A vaulted payer has already consented: the order is captured as it is created.
            self.orders[order_id] = order
            order["status"] = "APPROVED"
            return self._capture(order_id)
        context = paypal.get("experience_context") or {}
        if not context.get("return_url") or not context.get("cancel_url"):
            return _invalid(
                "MISSING_REQUIRED_PARAMETER",
                "payment_source.paypal.experience_context.return_url and cancel_url are required.",
            )
        order["status"] = "PAYER_ACTION_REQUIRED"
        self._contexts[order_id] = context
        order["links"].append(
            {
                "href": f"{self.base_url}/checkoutnow?token={order_id}",
                "rel": "payer-action",
                "method": "GET",
            }
        )
        self.orders[order_id] = order
        return reply(200, order)

    def _capture(self, order_id: str) -> Response:
        order = self.orders.get(order_id)
        if order is None:
            return _not_found()
        if order["status"] == "COMPLETED":
            return _unprocessable("ORDER_ALREADY_CAPTURED", "Order already captured.")
        if order["status"] != "APPROVED":
            return _unprocessable(
                "ORDER_NOT_APPROVED", "Payer has not yet approved the Order for payment."
            )
        unit = order["purchase_units"][0]
        capture_id = _id()
        capture = {
            "id": capture_id,
            "status": "COMPLETED",
            "amount": unit["amount"],
            "final_capture": True,
            "custom_id": unit.get("custom_id"),
            "supplementary_data": {"related_ids": {"order_id": order_id}},
            "create_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "links": [
                {
                    "href": f"{self.base_url}/v2/payments/captures/{capture_id}",
                    "rel": "self",
                    "method": "GET",
                }
            ],
        }
        self.captures[capture_id] = capture
        order["status"] = "COMPLETED"
        unit["payments"] = {"captures": [capture]}
        return reply(201, order)

    def _refund(self, capture_id: str, body: dict[str, Any], minimal: bool) -> Response:
        capture = self.captures.get(capture_id)
        if capture is None:
            return _not_found()
        currency = capture["amount"]["currency_code"]
        places = 0 if currency in ZERO_DECIMAL else 2
        captured = Decimal(capture["amount"]["value"])
        done = sum(
            (
                Decimal(self.refunds[r]["amount"]["value"])
                for r, c in self._refunded.items()
                if c == capture_id
            ),
            Decimal(0),
        )
        if done >= captured:
            return _unprocessable(
                "CAPTURE_FULLY_REFUNDED", "The capture has already been fully refunded."
            )
        amount = body.get("amount") or {
            "currency_code": currency,
            "value": f"{captured - done:.{places}f}",
        }
        if (bad := _amount_error(amount)) is not None:
            return bad
        if amount["currency_code"] != currency:
            return _unprocessable("CURRENCY_MISMATCH", "Refund must be in the capture's currency.")
        if done + Decimal(amount["value"]) > captured:
            return _unprocessable(
                "REFUND_AMOUNT_EXCEEDED",
                "The refund amount must be less than or equal to the capture amount that has "
                "not yet been refunded.",
            )
        refund_id = _id()
        total = done + Decimal(amount["value"])
        refund = {
            "id": refund_id,
            "status": "COMPLETED",
            "amount": amount,
            "custom_id": capture.get("custom_id"),
            "seller_payable_breakdown": {
                "total_refunded_amount": {
                    "currency_code": currency,
                    "value": f"{total:.{places}f}",
                },
            },
            "links": [
                {
                    "href": f"{self.base_url}/v2/payments/refunds/{refund_id}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"{self.base_url}/v2/payments/captures/{capture_id}",
                    "rel": "up",
                    "method": "GET",
                },
            ],
        }
        self.refunds[refund_id] = refund
        self._refunded[refund_id] = capture_id
        if total == captured:
            capture["status"] = "REFUNDED"
        if minimal:
            return reply(201, {k: refund[k] for k in ("id", "status", "links")})
        return reply(201, refund)
