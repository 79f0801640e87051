"""Payments end to end on localstripe: the billing app (the Serve app's FastAPI object, hosted
on uvicorn in this process, no Ray) on a fresh database; localstripe's signed webhooks arrive
at our endpoint and mark invoices paid; dunning, refunds, outbound tenant webhooks, PDFs; and
forged, stale and replayed Stripe events are refused."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import stripe
import uvicorn

from deployments._serve import ServiceRuntime
from deployments.billing.app import api
from kiki.billing import payments, webhooks
from kiki.billing.gateway import Gateways
from kiki.billing.stripe_gateway import StripeGateway
from kiki.config import Settings
from kiki.db import migrate
from kiki.db.embedded import free_port
from kiki.db.pool import connect, create_pool
from kiki.vault import Vault
from tests.integration.conftest import new_key

SECRET = "whsec_kiki_test"
JAN1 = "2026-01-01T00:00:00+00:00"
FEB1 = datetime(2026, 2, 1, tzinfo=UTC)
DECLINED_CARD = {"number": "4000000000000341", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


class Billing:
    """The app at `url`, a client with a tenant's key, and direct database access."""

    def __init__(self, url: str, db: str, stripe_url: str, key: str) -> None:
        self.url, self.db, self.stripe_url = url, db, stripe_url
        self.http = httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30)
        self.gateway = StripeGateway("sk_test_kiki", stripe_url, SECRET)
        self.stripe = stripe.StripeClient("sk_test_kiki", base_addresses={"api": stripe_url})

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"/api/v1{path}", **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def fetchval(self, sql: str, *args: Any) -> Any:
        async def query() -> Any:
            conn = await connect(self.db)
            try:
                return await conn.fetchval(sql, *args)
            finally:
                await conn.close()

        return asyncio.run(query())

    def wait_for_event(self, event_type: str, invoice_id: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcome = self.fetchval(
                "SELECT outcome FROM billing_stripe_events WHERE type = $1 AND invoice_id = $2",
                event_type,
                invoice_id,
            )
            if outcome:
                return outcome
            time.sleep(0.2)
        raise AssertionError(f"no {event_type} for {invoice_id} arrived from localstripe")


@contextmanager
def billing_app(
    db: str, stripe_url: str, home: Path, stripe_api_key: str = "sk_test_kiki", **more: Any
) -> Iterator[str]:
    """The billing app on uvicorn; `more` are further settings (PayPal's)."""
    asyncio.run(_migrate(db))
    settings = Settings(
        home=home,
        database_url=db,
        stripe_api_base=stripe_url,
        stripe_api_key=stripe_api_key,
        stripe_webhook_secret=SECRET,
        billing_worker_s=3600,
        auth_cache_ttl_s=0,
        **more,
    )
    api.state.runtime = ServiceRuntime("billing", settings)
    port = free_port()
    try:
        with serve(api, port):
            yield f"http://127.0.0.1:{port}"
    finally:
        api.state.runtime = None


@contextmanager
def serve(app: Any, port: int) -> Iterator[None]:
    """An ASGI app on uvicorn at `port`, in a thread, for the block."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def _migrate(db: str) -> None:
    conn = await connect(db)
    try:
        await migrate.migrate(conn, migrate.discover())
    finally:
        await conn.close()


@pytest.fixture
def billing(fresh_db: str, localstripe: str, tmp_path: Path) -> Iterator[Billing]:
    httpx.delete(f"{localstripe}/_config/data").raise_for_status()
    with billing_app(fresh_db, localstripe, tmp_path) as url:
        httpx.post(
            f"{localstripe}/_config/webhooks/kiki",
            json={"url": f"{url}/webhooks/stripe", "secret": SECRET},
        ).raise_for_status()
        yield Billing(url, fresh_db, localstripe, asyncio.run(new_key(fresh_db, "shop")))


class Receiver(BaseHTTPRequestHandler):
    """A tenant's webhook endpoint: fails the first delivery, then records them."""

    calls: ClassVar[list[tuple[bytes, str]]] = []
    fail_first = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.fail_first:
            Receiver.fail_first = False
            self.send_response(500)
        else:
            Receiver.calls.append((body, self.headers[webhooks.SIGNATURE_HEADER]))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def set_up_catalog(b: Billing) -> None:
    b.ok("POST", "/metrics", json={"code": "api_calls", "aggregation": "count"})
    b.ok("POST", "/plans", json={
        "code": "pro", "interval": "monthly", "currency": "EUR", "base_fee_minor": 4900,
        "charges": [{"metric_code": "api_calls", "charge_model": "package",
                     "package_size": 1000, "package_price": "2.50"}],
    })  # fmt: skip
    for cid in ("ann", "ben", "cat"):
        b.ok(
            "POST",
            "/customers",
            json={
                "customer_id": cid,
                "currency": "EUR",
                "name": cid.title(),
                "timezone": "Europe/Paris",
                "tax_percent": "20",
            },
        )
        b.ok("POST", "/subscriptions", json={"customer_id": cid, "plan_code": "pro",
                                             "start_at": "2025-12-31T23:30:00+00:00"})  # fmt: skip


def test_full_cycle_on_localstripe(billing: Billing, tmp_path: Path) -> None:
    b = billing
    set_up_catalog(b)
    events = [{"transaction_id": f"t{i % 2500}", "customer": "ann", "metric_code": "api_calls",
               "timestamp": JAN1} for i in range(3000)]  # fmt: skip
    assert b.ok("POST", "/events", json={"events": events}) == {"accepted": 2500,
                                                                "duplicates": 500}  # fmt: skip
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = b.ok(
        "POST",
        "/webhook-endpoints",
        json={"url": f"http://127.0.0.1:{receiver.server_port}/hooks", "events": ["invoice.paid"]},
    )

    closed = b.ok("POST", "/periods/close", json={"as_of": FEB1.isoformat()})
    assert closed["invoices"] == 3
    invoices = {i["customer_id"]: i for i in b.ok("GET", "/invoices")}
    ann = invoices["ann"]
    # Periods in Paris: Dec 31 23:30 UTC is Jan 1 there. 49.00 + 3 packages x 2.50 = 56.50,
    # VAT 20 % = 11.30 -> 67.80 EUR.
    assert ann["amount_due"] == {"amount": "67.8", "micros": 67_800_000, "currency": "EUR"}
    assert ann["status"] == "finalized" and ann["number"] == "SHOP-2026-000001"
    pdf = b.http.get(f"/api/v1/invoices/{ann['id']}/pdf")
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"

    # 1. Paid through our API; localstripe's signed webhook then finds it already paid.
    b.ok("POST", "/customers/ann/payment-method", json={"payment_method": "pm_card_visa"})
    paid = b.ok("POST", f"/invoices/{ann['id']}/pay")
    assert (paid["status"], paid["attempts"]) == ("succeeded", 1)
    assert b.ok("GET", f"/invoices/{ann['id']}")["status"] == "paid"
    assert b.wait_for_event("payment_intent.succeeded", ann["id"]) == "invoice already paid"

    # 2. Paid outside our API (a PaymentIntent naming the invoice): the webhook marks it paid.
    ben = invoices["ben"]
    b.ok("POST", "/customers/ben/payment-method", json={"payment_method": "pm_card_visa"})
    customer_id = b.ok("GET", "/customers/ben")["stripe_customer_id"]
    b.stripe.v1.payment_intents.create(params={
        "amount": 58_80, "currency": "eur", "customer": customer_id,
        "payment_method": "pm_card_visa", "confirm": True,
        "metadata": {"kiki_tenant_id": b.fetchval("SELECT id FROM tenants WHERE name = 'shop'"),
                     "kiki_invoice_id": ben["id"]}})  # fmt: skip
    assert b.wait_for_event("payment_intent.succeeded", ben["id"]) == "invoice paid"
    assert b.ok("GET", f"/invoices/{ben['id']}")["status"] == "paid"

    # 3. Refund part of the first payment.
    refunded = b.ok("POST", f"/invoices/{ann['id']}/refund", json={"amount": "5.00"})
    assert refunded["refunded"]["amount"] == "5"

    # 4. Outbound: invoice.paid twice, signed; the first delivery fails and is retried.
    pool_now = datetime.now(UTC)
    vault = Vault.from_settings(Settings(home=tmp_path))  # the app's: the same home

    async def deliver() -> list[webhooks.DeliveryReport]:
        pool = await create_pool(b.db, min_size=1, max_size=2)
        try:
            async with httpx.AsyncClient() as http:
                first = await webhooks.deliver_due(pool, http, vault, pool_now)
                later = pool_now + timedelta(minutes=5)
                return [first, await webhooks.deliver_due(pool, http, vault, later)]
        finally:
            await pool.close()

    first, second = asyncio.run(deliver())
    assert (first.delivered, first.retrying, second.delivered) == (1, 1, 1)
    bodies = [json.loads(body) for body, _ in Receiver.calls]
    assert {d["type"] for d in bodies} == {"invoice.paid"}
    assert {d["data"]["object"]["customer_id"] for d in bodies} == {"ann", "ben"}
    body, signature = Receiver.calls[0]
    webhooks.verify(body, signature, hook["secret"], pool_now)
    with pytest.raises(Exception, match="does not match"):
        webhooks.verify(body, signature, "whsec_wrong", pool_now)
    receiver.shutdown()


def test_declined_card_follows_the_dunning_schedule(billing: Billing) -> None:
    b = billing
    set_up_catalog(b)
    b.ok("POST", "/periods/close", json={"as_of": FEB1.isoformat()})
    cat = next(i for i in b.ok("GET", "/invoices") if i["customer_id"] == "cat")
    declined = b.stripe.v1.payment_methods.create(
        params={"type": "card", "card": DECLINED_CARD}  # type: ignore[typeddict-item]
    )
    b.ok("POST", "/customers/cat/payment-method", json={"payment_method": declined.id})
    first = b.ok("POST", f"/invoices/{cat['id']}/pay")
    assert (first["status"], first["attempts"]) == ("failed", 1)
    assert "declined" in first["last_error"]
    assert b.wait_for_event("payment_intent.payment_failed", cat["id"]) == (
        "failure already recorded"
    )
    retry_at = datetime.fromisoformat(first["next_retry_at"])
    assert asyncio.run(dunning(b.db, {"stripe": b.gateway}, retry_at)) == DUNNING
    assert b.ok("GET", f"/invoices/{cat['id']}")["status"] == "uncollectible"


# (attempt, wait before the next) of each dunning retry: 1, 3 and 5 days, then given up.
DUNNING = [(2, timedelta(days=3)), (3, timedelta(days=5)), (4, None)]


async def dunning(db: str, gateways: Gateways, retry_at: datetime) -> list[tuple[int, Any]]:
    """Run the dunning schedule's three retries of the one failing invoice, each when due,
    then check nothing is left to try."""
    pool = await create_pool(db, min_size=1, max_size=2)
    seen, at = [], retry_at
    try:
        for _ in range(3):
            (payment,) = await payments.collect_due(pool, gateways, at)
            seen.append((payment.attempts, payment.next_retry_at and payment.next_retry_at - at))
            at = payment.next_retry_at or at
        assert await payments.collect_due(pool, gateways, at + timedelta(days=30)) == []
    finally:
        await pool.close()
    return seen


def test_forged_stale_and_replayed_stripe_events_are_refused(
    billing: Billing, caplog: pytest.LogCaptureFixture
) -> None:
    b = billing
    event = {"id": "evt_kiki_1", "type": "payment_intent.succeeded",
             "data": {"object": {"id": "pi_1", "metadata": {}}}}  # fmt: skip
    payload = json.dumps(event)

    def post(signature: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["Stripe-Signature"] = signature
        return httpx.post(f"{b.url}/webhooks/stripe", content=payload, headers=headers)

    def signed(secret: str, at: int | None = None) -> str:
        return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=at)

    missing = post(None)
    forged = post(signed("whsec_forged"))
    stale = post(signed(SECRET, int(time.time()) - 3600))
    assert [r.status_code for r in (missing, forged, stale)] == [400, 400, 400]
    assert [r.json()["error"]["code"] for r in (missing, forged, stale)] == [
        "webhook_signature_missing", "webhook_signature_invalid", "webhook_stale"]  # fmt: skip
    first = post(signed(SECRET))
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "ignored: not about a KIKI invoice"
    replay = post(signed(SECRET))
    assert replay.status_code == 409 and replay.json()["error"]["code"] == "webhook_replayed"
    assert caplog.text.count("Stripe webhook rejected") == 4
