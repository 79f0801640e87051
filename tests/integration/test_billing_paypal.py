"""PayPal end to end against the FAKE PayPal API (tests/fakes/fake_paypal.py, served on
uvicorn): the billing app (the Serve app's FastAPI object on uvicorn in this process, no Ray)
on a fresh database; invoices paid with a vaulted PayPal token and through an approval link
(captured when PayPal's signed CHECKOUT.ORDER.APPROVED arrives), a refund, a declined payment
going through the dunning schedule, and forged, stale and replayed PayPal events refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID, uuid4

import httpx
import pytest

from kiki.billing import payments
from kiki.billing.models import Customer
from kiki.billing.paypal_gateway import PayPalGateway
from kiki.db.embedded import free_port
from kiki.db.pool import create_pool
from kiki.errors import FailedPrecondition
from tests.fakes.fake_paypal import FakePayPal
from tests.integration.conftest import new_key
from tests.integration.test_billing_stripe import (
    DUNNING,
    FEB1,
    Billing,
    billing_app,
    dunning,
    serve,
    set_up_catalog,
)

CLIENT_ID, CLIENT_SECRET = "AfakeClientId", "EfakeClientSecret"
KIKI = "https://kiki.test/billing"  # the billing app as payers' browsers reach it


class PayPalBilling(Billing):
    def __init__(self, url: str, db: str, key: str, fake: FakePayPal, webhook_id: str) -> None:
        super().__init__(url, db, "http://127.0.0.1:9", key)
        self.fake, self.webhook_id = fake, webhook_id

    def paypal(self) -> PayPalGateway:
        """A gateway of this process (a payment worker's), on the same fake."""
        return gateway_on(self.fake, self.webhook_id)

    def deliver(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.url}/webhooks/paypal", content=body, headers=headers)

    def back(self, order_id: str, *, approved: bool) -> httpx.Response:
        """The payer's browser following PayPal's redirect back to KIKI (not followed on)."""
        url = self.fake.back_to_merchant(order_id, approved=approved)
        return httpx.get(url.replace(KIKI, self.url), follow_redirects=False)

    def sweep(self, at: datetime) -> list[Any]:
        """The worker's round for approval links, at `at`."""

        async def expire() -> list[Any]:
            pool = await create_pool(self.db, min_size=1, max_size=2)
            try:
                return await payments.expire_approvals(pool, self.paypal(), at, timedelta(hours=3))
            finally:
                await pool.close()

        return asyncio.run(expire())

    def send(self, event_type: str, resource: dict[str, Any]) -> Any:
        """PayPal delivers a signed event; returns what billing did with it."""
        response = self.deliver(*self.fake.signed(self.fake.event(event_type, resource),
                                                  self.webhook_id))  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()["outcome"]


def gateway_on(fake: FakePayPal, webhook_id: str | None = None) -> PayPalGateway:
    return PayPalGateway(CLIENT_ID, CLIENT_SECRET, fake.base_url, webhook_id,
                         redirect_base=KIKI)  # fmt: skip


@pytest.fixture
def paypal() -> Iterator[FakePayPal]:
    port = free_port()
    fake = FakePayPal(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, base_url=f"http://127.0.0.1:{port}"
    )
    with serve(fake.app, port):
        yield fake


@pytest.fixture
def billing(fresh_db: str, tmp_path: Path, paypal: FakePayPal) -> Iterator[PayPalBilling]:
    webhook_id = paypal.register_webhook("https://kiki.test/billing/webhooks/paypal")
    settings = {
        "paypal_api_base": paypal.base_url,
        "paypal_client_id": CLIENT_ID,
        "paypal_client_secret": CLIENT_SECRET,
        "paypal_webhook_id": webhook_id,
        "paypal_redirect_base": KIKI,
        "paypal_return_url": "https://shop.test/paid",
        "paypal_cancel_url": "https://shop.test/canceled?from=paypal",
    }
    with billing_app(fresh_db, "http://127.0.0.1:9", tmp_path, **settings) as url:
        key = asyncio.run(new_key(fresh_db, "shop"))
        yield PayPalBilling(url, fresh_db, key, paypal, webhook_id)


def invoices_of(b: PayPalBilling) -> dict[str, Any]:
    set_up_catalog(b)
    assert b.ok("POST", "/periods/close", json={"as_of": FEB1.isoformat()})["invoices"] == 3
    return {i["customer_id"]: i for i in b.ok("GET", "/invoices")}


def test_paypal_vaulted_and_approval_link_payments_and_a_refund(billing: PayPalBilling) -> None:
    b, fake = billing, billing.fake
    invoices = invoices_of(b)
    ann, ben = invoices["ann"], invoices["ben"]

    # A token PayPal does not know is refused, saying what to do.
    unknown = b.http.post("/api/v1/customers/ann/payment-method",
                          json={"gateway": "paypal", "payment_method": "NOSUCHTOKEN"})  # fmt: skip
    assert unknown.status_code == 400 and "vault the payer" in unknown.json()["error"]["message"]

    # 1. ann pays with a vaulted PayPal account: charged at once, in PayPal's decimal string.
    token = fake.vault_token("ann@example.com")
    chosen = b.ok("POST", "/customers/ann/payment-method",
                  json={"gateway": "paypal", "payment_method": token})  # fmt: skip
    assert (chosen["payment_gateway"], chosen["has_payment_method"]) == ("paypal", True)
    assert chosen["paypal_customer_id"] == fake.vault[token]["customer"]["id"]
    paid = b.ok("POST", f"/invoices/{ann['id']}/pay")
    assert (paid["gateway"], paid["status"], paid["attempts"]) == ("paypal", "succeeded", 1)
    assert paid["payment_intent_id"] in fake.captures
    (order,) = [r for r in fake.requests if r.path == "/v2/checkout/orders"]
    assert order.headers["paypal-request-id"] == f"kiki:{ann['id']}:1"
    unit = order.json()["purchase_units"][0]
    assert ann["amount_due"]["micros"] == 58_800_000  # 49.00 + 20 % VAT
    assert unit["amount"] == {"currency_code": "EUR", "value": "58.80"}
    assert b.ok("GET", f"/invoices/{ann['id']}")["status"] == "paid"

    # 2. ben chose PayPal without a token: the payment waits at an approval link.
    b.ok("POST", "/customers/ben/payment-method", json={"gateway": "paypal"})
    waiting = b.ok("POST", f"/invoices/{ben['id']}/pay")
    order_id = waiting["payment_intent_id"]
    assert waiting["status"] == "processing"
    assert waiting["approval_url"] == f"{fake.base_url}/checkoutnow?token={order_id}"
    again = b.http.post(f"/api/v1/invoices/{ben['id']}/pay")
    assert again.status_code == 409 and waiting["approval_url"] in again.json()["error"]["message"]
    # An approval naming ann's (paid) invoice but an order that is not its payment in
    # progress captures nothing.
    assert b.send("CHECKOUT.ORDER.APPROVED", {"id": "5O190127TN364715T", "purchase_units": [
        {"custom_id": unit["custom_id"]}]}) == (
        "ignored: the order is not the invoice's payment in progress")  # fmt: skip
    # The payer approves at PayPal; PayPal's signed event makes billing capture the order.
    approved = fake.approve(order_id)
    assert b.send("CHECKOUT.ORDER.APPROVED", approved) == "order captured: payment succeeded"
    settled = b.ok("GET", f"/invoices/{ben['id']}/payment")
    assert settled["status"] == "succeeded" and settled["payment_intent_id"] in fake.captures
    assert b.ok("GET", f"/invoices/{ben['id']}")["status"] == "paid"
    capture = fake.captures[settled["payment_intent_id"]]
    assert b.send("PAYMENT.CAPTURE.COMPLETED", capture) == "invoice already paid"
    # cat's approved order is denied at capture time (PayPal's DENIED event): a failed attempt
    # on the dunning schedule.
    cat = invoices["cat"]
    b.ok("POST", "/customers/cat/payment-method", json={"gateway": "paypal"})
    cat_order = b.ok("POST", f"/invoices/{cat['id']}/pay")["payment_intent_id"]
    denied = {"id": "7NW873794T343360M", "status": "DECLINED",
              "custom_id": fake.orders[cat_order]["purchase_units"][0]["custom_id"]}  # fmt: skip
    assert b.send("PAYMENT.CAPTURE.DENIED", denied) == "payment failure recorded"
    failed = b.ok("GET", f"/invoices/{cat['id']}/payment")
    assert (failed["status"], failed["attempts"]) == ("failed", 1) and failed["next_retry_at"]
    assert b.send("PAYMENT.CAPTURE.DENIED", denied | {"id": "8X"}) == "failure already recorded"

    # 3. Refund 5.00 of ann's payment, after PayPal dropped our token: one refresh, no error.
    fake.expire_tokens()
    issued = fake.tokens_issued
    refunded = b.ok("POST", f"/invoices/{ann['id']}/refund", json={"amount": "5.00"})
    assert refunded["refunded"]["amount"] == "5" and fake.tokens_issued == issued + 1
    (refund,) = fake.refunds.values()
    assert refund["amount"] == {"currency_code": "EUR", "value": "5.00"}
    # PayPal's event for it carries the total refunded: recorded once, nothing new.
    assert b.send("PAYMENT.CAPTURE.REFUNDED", refund) == "refunded 500"
    too_much = b.http.post(f"/api/v1/invoices/{ann['id']}/refund", json={"amount": "60"})
    assert too_much.status_code == 400


def test_approval_links_come_back_to_kiki_and_expire(billing: PayPalBilling) -> None:
    b, fake = billing, billing.fake
    invoices = invoices_of(b)
    for name in invoices:
        b.ok("POST", f"/customers/{name}/payment-method", json={"gateway": "paypal"})
    orders = {n: b.ok("POST", f"/invoices/{i['id']}/pay")["payment_intent_id"]
              for n, i in invoices.items()}  # fmt: skip
    ann, ben, cat = (invoices[n] for n in ("ann", "ben", "cat"))
    created = [json.loads(r.body) for r in fake.requests if r.path == "/v2/checkout/orders"]
    (context,) = [o["payment_source"]["paypal"]["experience_context"] for o in created
                  if o["purchase_units"][0]["custom_id"].endswith(ann["id"])]  # fmt: skip
    assert context["return_url"] == f"{KIKI}/paypal/return?invoice={ann['id']}"
    assert context["cancel_url"] == f"{KIKI}/paypal/cancel?invoice={ann['id']}"

    # ann approves at PayPal and comes back: KIKI captures at once and sends her on.
    fake.approve(orders["ann"])
    back = b.back(orders["ann"], approved=True)
    assert back.status_code == 303, back.text
    assert back.headers["location"] == f"https://shop.test/paid?invoice={ann['number']}&status=paid"
    assert b.ok("GET", f"/invoices/{ann['id']}")["status"] == "paid"
    # PayPal's own event, arriving later, finds it done; so does the same redirect again.
    approved = fake.orders[orders["ann"]]
    assert b.send("CHECKOUT.ORDER.APPROVED", approved) == (
        "ignored: the order is not the invoice's payment in progress")  # fmt: skip
    assert b.back(orders["ann"], approved=True).status_code == 404
    # An order id that is not the invoice's payment, or an invoice nobody has: the same 404,
    # and nothing changes.
    url = f"{b.url}/paypal/return"
    mixed = httpx.get(url, params={"invoice": ben["id"], "token": orders["cat"]})
    unknown = httpx.get(url, params={"invoice": str(uuid4()), "token": orders["cat"]})
    assert [r.status_code for r in (mixed, unknown)] == [404, 404]
    assert mixed.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    bad = httpx.get(url, params={"invoice": "x", "token": "../v1/oauth2"})
    assert bad.status_code == 422 and "invoice" in bad.text

    # ben cancels at PayPal: a failed attempt, the invoice open for a new link.
    cancelled = b.back(orders["ben"], approved=False)
    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == (
        f"https://shop.test/canceled?from=paypal&invoice={ben['number']}&status=failed"
    )
    failed = b.ok("GET", f"/invoices/{ben['id']}/payment")
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert "cancelled" in failed["last_error"] and b.ok("GET", f"/invoices/{ben['id']}")[
        "status"] == "finalized"  # fmt: skip
    again = b.ok("POST", f"/invoices/{ben['id']}/pay")
    assert (again["status"], again["attempts"]) == ("processing", 2)
    # ben approves the new order but PayPal's event is lost and he never comes back; cat never
    # approves and PayPal lets her order lapse. Before the approval time is up nothing moves;
    # after it, ben's order is captured and cat's attempt fails.
    fake.approve(again["payment_intent_id"])
    fake.lapse(orders["cat"])
    now = datetime.now(UTC)
    assert b.sweep(now + timedelta(hours=2)) == []
    swept = {p.invoice_id: p for p in b.sweep(now + timedelta(hours=3, minutes=1))}
    assert swept[UUID(ben["id"])].status.value == "succeeded"
    assert b.ok("GET", f"/invoices/{ben['id']}")["status"] == "paid"
    lapsed = b.ok("GET", f"/invoices/{cat['id']}/payment")
    assert (lapsed["status"], lapsed["attempts"]) == ("failed", 1) and lapsed["next_retry_at"]
    assert "not approved in time" in lapsed["last_error"]
    assert b.ok("GET", f"/invoices/{cat['id']}")["status"] == "finalized"
    assert b.ok("POST", f"/invoices/{cat['id']}/pay")["status"] == "processing"


def test_concurrent_calls_share_one_token_and_bad_credentials_say_what_to_fix(
    paypal: FakePayPal,
) -> None:
    tokens = [paypal.vault_token(f"p{i}@example.com") for i in range(5)]
    customer = cast(Customer, None)  # PayPal's sync_customer only reads the token

    async def sync_all(gateway: PayPalGateway) -> list[tuple[str | None, str | None]]:
        return await asyncio.gather(*(gateway.sync_customer(uuid4(), customer, t) for t in tokens))

    assert [method for _, method in asyncio.run(sync_all(gateway_on(paypal)))] == tokens
    assert paypal.tokens_issued == 1
    wrong = PayPalGateway(CLIENT_ID, "not-the-secret", paypal.base_url, None,
                          redirect_base=KIKI)  # fmt: skip
    with pytest.raises(FailedPrecondition, match="KIKI_PAYPAL_CLIENT_SECRET"):
        asyncio.run(sync_all(wrong))


def test_declined_paypal_payment_follows_the_dunning_schedule(billing: PayPalBilling) -> None:
    b, fake = billing, billing.fake
    cat = invoices_of(b)["cat"]
    token = fake.vault_token("cat@example.com", declines=True)
    b.ok("POST", "/customers/cat/payment-method",
         json={"gateway": "paypal", "payment_method": token})  # fmt: skip
    first = b.ok("POST", f"/invoices/{cat['id']}/pay")
    assert (first["status"], first["attempts"]) == ("failed", 1)
    assert "INSTRUMENT_DECLINED" in first["last_error"]
    retry_at = datetime.fromisoformat(first["next_retry_at"])
    assert asyncio.run(dunning(b.db, {"paypal": b.paypal()}, retry_at)) == DUNNING
    assert b.ok("GET", f"/invoices/{cat['id']}")["status"] == "uncollectible"


def test_forged_stale_and_replayed_paypal_events_are_refused(
    billing: PayPalBilling, caplog: pytest.LogCaptureFixture
) -> None:
    b, fake = billing, billing.fake
    event = fake.event("PAYMENT.CAPTURE.COMPLETED", {"id": "2GG279541U471931P", "custom_id": "x"})
    body, headers = fake.signed(event, b.webhook_id)

    unsigned = b.deliver(body, {"Content-Type": "application/json"})
    tampered = b.deliver(body.replace(b"2GG279541U471931P", b"9XX279541U471931P"), headers)
    other_hook = b.deliver(*fake.signed(event, fake.register_webhook("https://else.test/")))
    old = datetime.now(UTC) - timedelta(hours=1)
    stale = b.deliver(*fake.signed(event, b.webhook_id, at=old))
    refused = (unsigned, tampered, other_hook, stale)
    assert [r.status_code for r in refused] == [400] * 4
    assert [r.json()["error"]["code"] for r in refused] == [
        "webhook_signature_missing", "webhook_signature_invalid", "webhook_signature_invalid",
        "webhook_stale"]  # fmt: skip
    assert "PAYPAL-TRANSMISSION-SIG" in unsigned.json()["error"]["message"]

    first = b.deliver(body, headers)
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "ignored: not about a KIKI invoice"
    replay = b.deliver(body, headers)
    assert replay.status_code == 409 and replay.json()["error"]["code"] == "webhook_replayed"
    assert caplog.text.count("PayPal webhook rejected") == 5
    stored = b.fetchval(
        "SELECT type FROM billing_stripe_events WHERE gateway = 'paypal' AND event_id = $1",
        event["id"],
    )
    assert stored == "PAYMENT.CAPTURE.COMPLETED"
    # The fake checked what it was sent: every verification reached it.
    verified = [json.loads(r.body) for r in fake.requests
                if r.path == "/v1/notifications/verify-webhook-signature"]  # fmt: skip
    assert len(verified) == 5 and verified[-1]["webhook_event"] == event
