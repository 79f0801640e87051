"""Billing over HTTP through Serve: catalogue, customers, subscriptions, events, closing,
invoices (JSON, PDF, void), analytics, webhook endpoints, errors and tenant isolation."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import RunningPlatform, new_key, run


@pytest.fixture(scope="module")
def billing(platform: RunningPlatform) -> Iterator[httpx.Client]:
    key = run(new_key(platform.database_url, "billing-api"))
    with httpx.Client(
        base_url=f"{platform.base_url}/billing/api/v1", timeout=30, headers={"X-API-Key": key}
    ) as client:
        yield client


def ok(response: httpx.Response) -> dict:
    assert response.status_code < 300, response.text
    return response.json() if response.content else {}


def test_from_catalogue_to_invoice(billing: httpx.Client, platform: RunningPlatform) -> None:
    ok(billing.post("/metrics", json={"code": "seats", "aggregation": "max", "field_name": "n"}))
    plan = {
        "code": "team",
        "interval": "monthly",
        "currency": "USD",
        "base_fee_minor": 1500,
        "charges": [
            {
                "metric_code": "seats",
                "charge_model": "volume",
                "tiers": [{"up_to": 10, "unit_price": "8"}, {"up_to": None, "unit_price": "6.5"}],
            }
        ],
    }
    ok(billing.post("/plans", json=plan))
    again = billing.post("/plans", json=plan)
    assert again.status_code == 409 and "next version" in again.json()["error"]["message"]
    floaty = billing.post(
        "/plans",
        json={
            **plan,
            "version": 2,
            "charges": [
                {
                    "metric_code": "seats",
                    "charge_model": "standard",
                    "unit_price": "0.1234567890123",
                }
            ],
        },
    )
    assert floaty.status_code == 400 and "decimal places" in floaty.text

    ok(
        billing.post(
            "/customers",
            json={
                "customer_id": "org-1",
                "currency": "USD",
                "timezone": "Europe/Berlin",
                "tax_percent": "19",
            },
        )
    )
    bad_zone = billing.post("/customers", json={"customer_id": "org-2", "currency": "USD",
                                                "timezone": "Mars/Base"})  # fmt: skip
    assert bad_zone.status_code == 400 and "IANA" in bad_zone.text
    sub = ok(
        billing.post(
            "/subscriptions",
            json={
                "customer_id": "org-1",
                "plan_code": "team",
                "start_at": "2026-01-01T00:00:00+01:00",
            },
        )
    )
    assert sub["period_end"].startswith("2026-01-31T23:00:00")

    events = [{"transaction_id": f"s{i}", "customer": "org-1", "metric_code": "seats",
               "timestamp": "2026-01-10T10:00:00Z", "properties": {"n": n}}
              for i, n in enumerate([3, 12, 7])]  # fmt: skip
    assert ok(billing.post("/events", json={"events": events})) == {"accepted": 3,
                                                                    "duplicates": 0}  # fmt: skip
    assert ok(billing.post("/events", json={"events": events}))["duplicates"] == 3
    unknown = billing.post("/events", json={"events": [{**events[0], "customer": "ghost"}]})
    assert unknown.status_code == 400 and "POST /billing/api/v1/customers" in unknown.text

    closed = ok(billing.post("/periods/close", json={"as_of": "2026-02-01T00:00:00Z"}))
    assert closed["invoices"] == 1
    (invoice,) = ok(billing.get("/invoices", params={"customer_id": "org-1"}))
    # 15.00 + 12 seats x 6.50 (volume: all in the second tier) = 93.00; 19 % VAT 17.67.
    assert invoice["amount_due"]["amount"] == "110.67"
    assert invoice["lines"][1]["units"] == "12"
    pdf = billing.get(f"/invoices/{invoice['id']}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    voided = ok(billing.post(f"/invoices/{invoice['id']}/void"))
    assert voided["status"] == "void"
    refused = billing.post(f"/invoices/{invoice['id']}/mark-uncollectible")
    assert refused.status_code == 409 and "from void" in refused.json()["error"]["message"]
    not_configured = billing.post(f"/invoices/{invoice['id']}/pay")
    assert not_configured.status_code == 409

    (mrr,) = ok(billing.get("/analytics/mrr", params={"month": "2026-01"}))
    # Started Jan 1 in Berlin, i.e. Dec 31 23:00 UTC: already paying when January began.
    assert (mrr["starting_mrr"]["amount"], mrr["mrr"]["amount"], mrr["new"]["amount"]) == (
        "15",
        "15",
        "0",
    )
    usage = ok(
        billing.get(
            "/analytics/usage",
            params={
                "metric": "seats",
                "from": "2026-01-01T00:00:00Z",
                "to": "2026-02-01T00:00:00Z",
            },
        )
    )
    assert [(p["events"], p["quantity"]) for p in usage] == [(3, "12")]

    stranger = run(new_key(platform.database_url, "billing-stranger"))
    hidden = billing.get(f"/invoices/{invoice['id']}", headers={"X-API-Key": stranger})
    assert hidden.status_code == 404


def test_webhook_endpoints_and_unconfigured_stripe(
    billing: httpx.Client, platform: RunningPlatform
) -> None:
    created = ok(billing.post("/webhook-endpoints", json={
        "url": "https://example.com/kiki", "events": ["invoice.paid"]}))  # fmt: skip
    assert created["secret"].startswith("whsec_")
    assert [e["url"] for e in ok(billing.get("/webhook-endpoints"))] == ["https://example.com/kiki"]
    bad = billing.post("/webhook-endpoints", json={"url": "https://x.io", "events": ["nope"]})
    assert bad.status_code == 400 and "invoice.paid" in bad.json()["error"]["message"]
    assert billing.delete(f"/webhook-endpoints/{created['endpoint']['id']}").status_code == 204

    stripe = httpx.post(f"{platform.base_url}/billing/webhooks/stripe", content=b"{}")
    assert stripe.status_code == 409
    assert "KIKI_STRIPE_API_KEY" in stripe.json()["error"]["message"]
