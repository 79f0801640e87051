"""Tenant isolation, generated from the routes (issue 19): tenant A makes one of every kind of
thing through the APIs, then tenant B calls every operation of the six apps' OpenAPI specs
(and the value app's gRPC methods) with A's ids and names. B can neither read, list, change
nor delete what A made: A's ids answer as ids nobody has (404, never a 403 or 409 that says
they exist), B's lists answer as they did before A existed, B's creates with A's ids make
B's own, and A's things read the same afterwards.

Every operation needs a case in CASES (its kinds are in tests/integration/isolation.py): a
new route without one fails `test_every_route_has_an_isolation_case`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import grpc
import httpx
import pytest

from kiki.auth import create_api_key, key_prefix
from kiki.config import SERVICES
from kiki.db.pool import connect
from kiki.engage.churn import fit_churn_model
from kiki.value import registry
from protos import kiki_pb2, kiki_pb2_grpc
from tests.conftest import store_in
from tests.integration.conftest import RunningPlatform
from tests.integration.isolation import (
    Browse,
    Case,
    Key,
    Operator,
    Own,
    Public,
    Reach,
    Request,
    Reuse,
    Walk,
)
from tests.integration.test_billing_api import ok
from tests.integration.test_engage_api import promote_small_churn_model
from tests.integration.test_flow_api import spec
from tests.integration.test_value_api import (
    CUT,
    register_tiny_model,
    synthetic_purchases,
    tiny_model,
)
from tests.unit.test_engage_churn import END, SMALL, simulate

AS_OF = CUT.isoformat()
MONTH_CLOSED = "2026-02-01T00:00:00Z"
RULE = {"all": [{"field": "days_since_last", "op": ">=", "value": 1}]}
BREAKER_PLATFORM = "amazon"  # the platform the breaker cases name

# A's client-chosen ids (B reuses them) and, for each, one that nobody has. The ids the
# platform makes (reservation, experiment, creative, subscription, invoice, endpoint) are
# added when A makes them.
IDS = {
    "customer": "cust_0001",  # has purchases in A's history (synthetic_purchases)
    "bystander": "cust_0002",  # has purchases too; only B's erasure and gRPC name it
    "order": "o1-0",
    "budget": "budget_iso_1",
    "campaign": "camp_iso_1",
    "live_campaign": "camp_iso_live",
    "flow_segment": "vip_iso",
    "engage_segment": "lapsed_iso",
    "rule": "win-back-iso",
    "crm": "hubspot",
    "billing_customer": "org-iso-1",
    "metric": "seats_iso",
    "plan": "team_iso",
    "coupon": "welcome_iso",
    "event": "ev-iso-1",
    "consent_key": "consent-iso-1",
    "message_key": "msg-iso-1",
}
UNUSED = {name: f"{value}-never" for name, value in IDS.items()} | {
    "customer": "cust_never",
    "bystander": "cust_never",
    "flow_segment": "never_iso",
    "engage_segment": "never_iso",
    "rule": "never-iso",
    "crm": "salesforce",  # A configures hubspot only
    "key_prefix": "NeVeR000",
}
# Ids that are ordinary words (a CRM's name) or short enough to occur in unrelated text are
# not looked for in B's answers; everything else of A's is.
NOT_MARKERS = {"crm", "order"}


def creative_brief(name: str) -> dict[str, Any]:
    return {
        "product": {"name": f"{name} widget", "features": ["Fast"]},
        "brand": {"name": name, "primary_colors": ["#3b82f6"]},
        "variants": 1,
        "platform": "meta_1_1",
        "steps": 1,
        "seed": 7,
    }


PLAN = {
    "code": "<plan>",
    "interval": "monthly",
    "currency": "USD",
    "base_fee_minor": 1500,
    "charges": [{"metric_code": "<metric>", "charge_model": "standard", "unit_price": "2"}],
}


BRAVO = "bravo"  # what B names its own things
CONSENT = {"customer_id": "<customer>", "purpose": "email", "granted": False, "source": "iso"}
MESSAGE = {"customer_id": "<customer>", "channel": "in_app", "template": "win_back"}
# Rules stay disabled: the engage actor's scheduled round must not message A's customers
# while the walk compares A's messages.
RETENTION = {"channel": "in_app", "template": "win_back", "enabled": False}
CUSTOMER = {"customer_id": "<customer>"}
BUDGET = {"campaign_id": "<budget>"}
INVOICE = {"invoice_id": "<invoice>"}
SUB = {"sub_id": "<subscription>"}
ENGAGE_SEGMENT = {"segment_id": "<engage_segment>"}
RULE_ID = {"rule_id": "<rule>"}
BILLING_CUSTOMER = {"customer_id": "<billing_customer>"}
PLATFORM = {"platform": BREAKER_PLATFORM}

CASES: dict[Key, Case] = {
    **{f"{app} GET /health": Public() for app in SERVICES},
    **{f"{app} GET /api/v1/whoami": Own() for app in SERVICES},
    # shield: budgets and reservations
    "shield POST /api/v1/allocate": Reuse(json={**BUDGET, "budget": "7"}, watch=("budget",)),
    "shield PATCH /api/v1/budget/{campaign_id}": Reach(
        params=BUDGET, json={"budget": "1"}, watch=("budget",)
    ),
    "shield GET /api/v1/budget/{campaign_id}": Reach(params=BUDGET),
    "shield GET /api/v1/budgets": Browse(query={"campaign_id": "<budget>"}),
    "shield POST /api/v1/budget/{campaign_id}/unblock": Reach(params=BUDGET, watch=("budget",)),
    "shield POST /api/v1/check": Reach(json={**BUDGET, "bid_amount": "1", "platform": "meta"}),
    "shield POST /api/v1/reserve": Reach(
        json={**BUDGET, "amount": "1", "platform": "meta"}, watch=("budget",)
    ),
    "shield POST /api/v1/reserve/batch": Reach(  # per-item errors in a 200
        json={"reservations": [{**BUDGET, "amount": "1", "platform": "meta"}]},
        expect=(200,),
        watch=("budget",),
    ),
    "shield POST /api/v1/commit": Reach(
        json={**BUDGET, "reservation_id": "<reservation>", "actual_spend": "1"}, watch=("budget",)
    ),
    "shield POST /api/v1/release": Reach(
        json={**BUDGET, "reservation_id": "<reservation>"}, watch=("budget",)
    ),
    # shield: ad platforms' breakers and rate budgets. The shared ones are the operator's; a
    # tenant's admits draw on its own share and its reports feed its own breaker.
    "shield GET /api/v1/platforms": Own(),
    "shield POST /api/v1/platforms/{platform}/admit": Own(params=PLATFORM),
    "shield POST /api/v1/platforms/{platform}/outcomes": Own(
        params=PLATFORM, json={"success": True}
    ),
    "shield POST /api/v1/platforms/{platform}/open": Operator(params=PLATFORM),
    "shield POST /api/v1/platforms/{platform}/reset": Operator(params=PLATFORM),
    # shield: keys (a tenant admin's own; another tenant's prefix is not found)
    "shield GET /api/v1/keys": Browse(),
    "shield POST /api/v1/keys": Own(json={"label": "iso", "scopes": ["read"]}, expect=(201,)),
    "shield POST /api/v1/keys/{prefix}/rotate": Reach(params={"prefix": "<key_prefix>"}, json={}),
    "shield DELETE /api/v1/keys/{prefix}": Reach(params={"prefix": "<key_prefix>"}),
    # shield: consent and GDPR (customer ids are the tenant's own: B gets its empty record)
    "shield POST /api/v1/consent": Reuse(
        json={"records": [{**CONSENT, "idempotency_key": "<consent_key>"}]},
        expect_json={"recorded": 1},
        watch=("consent",),
    ),
    "shield GET /api/v1/consent/{customer_id}": Reach(params=CUSTOMER),
    "shield POST /api/v1/consent/audience": Browse(
        json={"purpose": "email", "customer_ids": ["<customer>"]}
    ),
    "shield GET /api/v1/gdpr/customers/{customer_id}/export": Reach(params=CUSTOMER, expect=(200,)),
    # B's erasure of an id suppresses that id in B's tenant (kiki.gdpr), so it names A's
    # other customer: B's reuses of A's first customer below must still be B's own.
    "shield DELETE /api/v1/gdpr/customers/{customer_id}": Reach(
        params={"customer_id": "<bystander>"}, expect=(200,), watch=("bystander_prediction",)
    ),
    # value
    "value POST /api/v1/predict": Reach(json={**CUSTOMER, "as_of": AS_OF}, watch=("prediction",)),
    "value POST /api/v1/transactions": Reuse(
        json={
            "transactions": [
                {"order_id": "<order>", **CUSTOMER, "occurred_at": "2025-06-01", "amount": "9.99"}
            ]
        },
        expect_json={"inserted": 1, "duplicates": 0},
        watch=("prediction",),
    ),
    "value GET /api/v1/drift": Browse(query={"as_of": AS_OF}, expect=(404,)),
    # Both tenants have models, each its own version 1 in production: B's promote of version 1
    # is refused as already serving, its rollback as having nothing before it; A's stay put.
    **{f"{app} GET /api/v1/models": Browse() for app in ("value", "engage")},
    **{
        f"{app} POST /api/v1/models/{{version}}/promote": Own(
            params={"version": "1"}, expect=(409,), watch=(f"{app}_models",)
        )
        for app in ("value", "engage")
    },
    **{
        f"{app} POST /api/v1/models/rollback": Own(expect=(409,), watch=(f"{app}_models",))
        for app in ("value", "engage")
    },
    # flow
    "flow POST /api/v1/campaigns": Reuse(
        json=spec("<campaign>", name=BRAVO), expect=(201,), watch=("campaign",)
    ),
    "flow GET /api/v1/campaigns": Browse(),
    "flow GET /api/v1/campaigns/{campaign_id}": Reach(params={"campaign_id": "<campaign>"}),
    "flow GET /api/v1/campaigns/{campaign_id}/pacing": Reach(
        params={"campaign_id": "<live_campaign>"}
    ),
    # An unknown campaign is a 404 before any stream starts, so the walk gets an answer.
    "flow GET /api/v1/campaigns/{campaign_id}/pacing/stream": Reach(
        params={"campaign_id": "<live_campaign>"}
    ),
    "flow PATCH /api/v1/campaigns/{campaign_id}": Reach(
        params={"campaign_id": "<campaign>"}, json={"name": BRAVO}, watch=("campaign",)
    ),
    "flow POST /api/v1/campaigns/{campaign_id}/{action}": Reach(
        params={"campaign_id": "<campaign>", "action": "start"}, watch=("campaign",)
    ),
    "flow GET /api/v1/decisions": Browse(query={"campaign_id": "<live_campaign>"}),
    "flow GET /api/v1/loop": Operator(),
    "flow PUT /api/v1/segments/{segment_id}": Reuse(
        params={"segment_id": "<flow_segment>"},
        json={"customer_ids": ["bravo-1"]},
        expect_json={"customers": 1},
        watch=("flow_segment",),
    ),
    "flow GET /api/v1/segments/{segment_id}": Reach(params={"segment_id": "<flow_segment>"}),
    # create
    "create POST /api/v1/generate": Own(
        json=creative_brief(BRAVO), expect=(201,), watch=("experiment", "creative")
    ),
    "create GET /api/v1/creatives/{creative_id}": Reach(params={"creative_id": "<creative>"}),
    "create GET /api/v1/creatives/{creative_id}/image": Reach(params={"creative_id": "<creative>"}),
    "create GET /api/v1/experiments/{experiment_id}": Reach(
        params={"experiment_id": "<experiment>"}
    ),
    "create POST /api/v1/experiments/{experiment_id}/results": Reach(
        params={"experiment_id": "<experiment>"},
        json={
            "results": [
                {"creative_id": "<creative>", "impressions": 10, "clicks": 1, "conversions": 0}
            ]
        },
        watch=("experiment",),
    ),
    "create GET /api/v1/experiments": Browse(),
    "create GET /api/v1/placements": Own(),
    "create GET /api/v1/model": Own(),
    "create GET /metrics": Public(),
    # engage: churn, cohorts, RFM, segments
    "engage GET /api/v1/churn-risk": Browse(query={"threshold": 0, "as_of": AS_OF}),
    "engage GET /api/v1/ltv-spread": Browse(query={"as_of": AS_OF}),
    "engage GET /api/v1/cohorts": Browse(query={"as_of": AS_OF}),
    "engage GET /api/v1/rfm": Browse(query={"as_of": AS_OF}),
    "engage GET /api/v1/rfm/customers": Browse(query={"as_of": AS_OF}),
    "engage POST /api/v1/segments": Reuse(
        json={**ENGAGE_SEGMENT, "name": BRAVO, "rule": RULE},
        expect=(201,),
        watch=("engage_segment",),
    ),
    "engage GET /api/v1/segments": Browse(),
    "engage GET /api/v1/segments/{segment_id}": Reach(params=ENGAGE_SEGMENT),
    "engage PUT /api/v1/segments/{segment_id}": Reach(
        params=ENGAGE_SEGMENT, json={"name": BRAVO, "rule": RULE}, watch=("engage_segment",)
    ),
    "engage DELETE /api/v1/segments/{segment_id}": Reach(
        params=ENGAGE_SEGMENT, watch=("engage_segment",)
    ),
    "engage GET /api/v1/segments/{segment_id}/customers": Reach(
        params=ENGAGE_SEGMENT, query={"as_of": AS_OF}
    ),
    "engage POST /api/v1/segments/preview": Browse(json={"rule": RULE}, query={"as_of": AS_OF}),
    # engage: customers and messages
    "engage PUT /api/v1/customers/{customer_id}": Reuse(
        params=CUSTOMER, json={"first_name": BRAVO}, watch=("profile",)
    ),
    "engage GET /api/v1/customers/{customer_id}": Reach(params=CUSTOMER),
    "engage POST /api/v1/message": Reuse(
        json={**MESSAGE, "idempotency_key": "<message_key>"},
        expect=(201,),
        watch=("messages", "inbox"),
    ),
    "engage GET /api/v1/messages": Browse(query=CUSTOMER),
    "engage GET /api/v1/inbox/{customer_id}": Reach(params=CUSTOMER, expect=(200,)),
    # engage: CRM sources and retention rules
    "engage PUT /api/v1/crm/{source}": Reuse(
        params={"source": "<crm>"},
        json={
            "config": {"access_token": "pat-bravo", "base_url": "http://127.0.0.1:9"},
            "enabled": False,
        },
        watch=("crm",),
    ),
    "engage DELETE /api/v1/crm/{source}": Reach(params={"source": "<crm>"}, watch=("crm",)),
    "engage GET /api/v1/crm": Browse(),
    "engage POST /api/v1/crm/{source}/sync": Reach(params={"source": "<crm>"}, watch=("crm",)),
    "engage POST /api/v1/rules": Reuse(
        json={**RULE_ID, **RETENTION, "name": BRAVO, "segment_id": "<engage_segment>"},
        expect=(201,),
        watch=("rule",),
    ),
    "engage GET /api/v1/rules": Browse(),
    "engage GET /api/v1/rules/{rule_id}": Reach(params=RULE_ID),
    "engage PUT /api/v1/rules/{rule_id}": Reach(
        params=RULE_ID,
        json={**RETENTION, "name": BRAVO},
        watch=("rule",),
    ),
    "engage DELETE /api/v1/rules/{rule_id}": Reach(params=RULE_ID, watch=("rule",)),
    "engage POST /api/v1/rules/{rule_id}/run": Reach(
        params=RULE_ID, query={"as_of": AS_OF, "dry_run": "false"}, watch=("messages", "inbox")
    ),
    # billing: catalogue and customers
    "billing POST /api/v1/metrics": Reuse(
        json={"code": "<metric>", "aggregation": "max", "field_name": "n", "name": BRAVO},
        watch=("metrics",),
    ),
    "billing GET /api/v1/metrics": Browse(),
    "billing POST /api/v1/plans": Reuse(json=PLAN, watch=("plan",)),
    "billing GET /api/v1/plans": Browse(),
    "billing GET /api/v1/plans/{code}": Reach(params={"code": "<plan>"}),
    "billing POST /api/v1/coupons": Reuse(json={"code": "<coupon>", "percent_off": "50"}),
    "billing POST /api/v1/customers": Reuse(
        json={**BILLING_CUSTOMER, "name": BRAVO, "currency": "USD"}, watch=("billing_customer",)
    ),
    "billing GET /api/v1/customers": Browse(),
    "billing GET /api/v1/customers/{customer_id}": Reach(params=BILLING_CUSTOMER),
    "billing POST /api/v1/customers/{customer_id}/payment-method": Reach(
        params=BILLING_CUSTOMER,
        json={"payment_method": "pm_card_visa"},
        watch=("billing_customer",),
    ),
    "billing POST /api/v1/customers/{customer_id}/credits": Reach(
        params=BILLING_CUSTOMER, json={"amount": "5"}, watch=("billing_customer",)
    ),
    "billing POST /api/v1/customers/{customer_id}/coupons": Reach(
        params=BILLING_CUSTOMER, json={"coupon_code": "<coupon>"}, watch=("billing_customer",)
    ),
    # billing: subscriptions (B has no customer of that id: A's is not B's to subscribe)
    "billing POST /api/v1/subscriptions": Reach(
        json={**BILLING_CUSTOMER, "plan_code": "<plan>"}, watch=("subscription",)
    ),
    "billing GET /api/v1/subscriptions": Browse(query=BILLING_CUSTOMER),
    "billing GET /api/v1/subscriptions/{sub_id}": Reach(params=SUB),
    **{
        f"billing POST /api/v1/subscriptions/{{sub_id}}/{change}": Reach(
            params=SUB, json={"plan_code": "<plan>"}, watch=("subscription",)
        )
        for change in ("upgrade", "downgrade")
    },
    "billing POST /api/v1/subscriptions/{sub_id}/cancel": Reach(
        params=SUB, json={"immediately": True}, watch=("subscription", "invoice")
    ),
    "billing POST /api/v1/subscriptions/{sub_id}/resume": Reach(
        params=SUB, watch=("subscription",)
    ),
    # billing: usage, invoices, payments, analytics
    "billing POST /api/v1/events": Reuse(
        json={
            "events": [
                {
                    "transaction_id": "<event>",
                    "customer": "<billing_customer>",
                    "metric_code": "<metric>",
                    "timestamp": "2026-01-10T10:00:00Z",
                    "properties": {"n": 5},
                }
            ]
        },
        expect_json={"accepted": 1, "duplicates": 0},
    ),
    # B closes its own periods, past the end of A's open one: A's stays open.
    "billing POST /api/v1/periods/close": Own(
        json={"as_of": "2026-03-01T00:00:00Z"}, watch=("invoice", "subscription")
    ),
    "billing GET /api/v1/invoices": Browse(query=BILLING_CUSTOMER),
    "billing GET /api/v1/invoices/{invoice_id}": Reach(params=INVOICE),
    "billing GET /api/v1/invoices/{invoice_id}/pdf": Reach(params=INVOICE),
    **{
        f"billing POST /api/v1/invoices/{{invoice_id}}/{action}": Reach(
            params=INVOICE, watch=("invoice",)
        )
        for action in ("void", "mark-uncollectible")
    },
    # The session's platform has no Stripe key: a payment is refused before any invoice is
    # read, whoever's it is (with one, a stranger's invoice is a 404 like the others).
    "billing POST /api/v1/invoices/{invoice_id}/pay": Reach(
        params=INVOICE, expect=(409,), watch=("invoice",)
    ),
    "billing GET /api/v1/invoices/{invoice_id}/payment": Reach(params=INVOICE),
    "billing POST /api/v1/invoices/{invoice_id}/refund": Reach(
        params=INVOICE, json={"amount": "1"}, watch=("invoice",)
    ),
    "billing GET /api/v1/analytics/mrr": Browse(),
    "billing GET /api/v1/analytics/usage": Browse(
        query={
            "metric": "<metric>",
            "from": "2026-01-01T00:00:00Z",
            "to": MONTH_CLOSED,
            **BILLING_CUSTOMER,
        },
        expect=(404,),  # B has no metric of that code
    ),
    # billing: webhooks (Stripe's events carry no key: its signature is checked, and this
    # platform has no Stripe key, so every event is refused before any invoice is looked up)
    "billing POST /api/v1/webhook-endpoints": Own(
        json={"url": "http://127.0.0.1:9/bravo"}, expect=(201,), watch=("endpoints",)
    ),
    "billing GET /api/v1/webhook-endpoints": Browse(),
    "billing DELETE /api/v1/webhook-endpoints/{endpoint_id}": Reach(
        params={"endpoint_id": "<endpoint>"}, watch=("endpoints",)
    ),
    "billing POST /webhooks/stripe": Public(
        json={
            "type": "invoice.paid",
            "data": {"object": {"metadata": {"kiki_invoice_id": "<invoice>"}}},
        },
        expect=(409,),
        watch=("invoice",),
    ),
    # PayPal's events are signed like Stripe's; this platform has no PayPal credentials, so
    # every event is refused before anything is looked up.
    "billing POST /webhooks/paypal": Public(
        json={"event_type": "CHECKOUT.ORDER.APPROVED", "resource": {"id": "<invoice>"}},
        expect=(409,),
        watch=("invoice",),
    ),
    # The payer's browser back from PayPal, naming A's invoice: refused before anything is
    # looked up here (no PayPal); with PayPal, only the order A's payment waits on counts
    # (test_billing_paypal.py: any other answers the 404 of an invoice nobody has).
    "billing GET /paypal/return": Public(
        query={"invoice": "<invoice>", "token": "5O190127TN364715T", "PayerID": "QYR5Z8XDVJNXQ"},
        expect=(409,),
        watch=("invoice",),
    ),
    "billing GET /paypal/cancel": Public(
        query={"invoice": "<invoice>", "token": "5O190127TN364715T"},
        expect=(409,),
        watch=("invoice",),
    ),
}

# A's things as A reads them: the same before and after B's calls.
READS = {
    "budget": Request("shield", "GET", "/api/v1/budget/{campaign_id}", BUDGET),
    "consent": Request("shield", "GET", "/api/v1/consent/{customer_id}", CUSTOMER),
    "prediction": Request("value", "POST", "/api/v1/predict", json={**CUSTOMER, "as_of": AS_OF}),
    "bystander_prediction": Request(
        "value", "POST", "/api/v1/predict", json={"customer_id": "<bystander>", "as_of": AS_OF}
    ),
    "campaign": Request(
        "flow", "GET", "/api/v1/campaigns/{campaign_id}", {"campaign_id": "<campaign>"}
    ),
    "flow_segment": Request(
        "flow", "GET", "/api/v1/segments/{segment_id}", {"segment_id": "<flow_segment>"}
    ),
    "creative": Request(
        "create", "GET", "/api/v1/creatives/{creative_id}", {"creative_id": "<creative>"}
    ),
    "experiment": Request(
        "create", "GET", "/api/v1/experiments/{experiment_id}", {"experiment_id": "<experiment>"}
    ),
    "profile": Request("engage", "GET", "/api/v1/customers/{customer_id}", CUSTOMER),
    "messages": Request("engage", "GET", "/api/v1/messages", query=CUSTOMER),
    "inbox": Request("engage", "GET", "/api/v1/inbox/{customer_id}", CUSTOMER),
    "engage_segment": Request("engage", "GET", "/api/v1/segments/{segment_id}", ENGAGE_SEGMENT),
    "rule": Request("engage", "GET", "/api/v1/rules/{rule_id}", RULE_ID),
    "crm": Request("engage", "GET", "/api/v1/crm"),
    "billing_customer": Request(
        "billing", "GET", "/api/v1/customers/{customer_id}", BILLING_CUSTOMER
    ),
    "plan": Request("billing", "GET", "/api/v1/plans/{code}", {"code": "<plan>"}),
    "metrics": Request("billing", "GET", "/api/v1/metrics"),
    "subscription": Request("billing", "GET", "/api/v1/subscriptions/{sub_id}", SUB),
    "invoice": Request("billing", "GET", "/api/v1/invoices/{invoice_id}", INVOICE),
    "endpoints": Request("billing", "GET", "/api/v1/webhook-endpoints"),
    "value_models": Request("value", "GET", "/api/v1/models"),
    "engage_models": Request("engage", "GET", "/api/v1/models"),
}
# The walk's order: B's lists are compared with its baseline before B makes anything of its
# own (`Own` cases make some), and B reuses A's ids last.
ORDER = ("public", "browse", "reach", "own", "reuse")


async def tenants_with_models(
    url: str, names: dict[str, str], ltv: tuple[str, dict], churn_url: str, modelled: set[str]
) -> dict[str, tuple[UUID, str]]:
    """A key for each tenant; the LTV and churn models promoted for the `modelled` ones."""
    conn = await connect(url)
    try:
        made = {}
        for who, name in names.items():
            tenant, key = await create_api_key(conn, name, "tenant isolation test")
            made[who] = (tenant.id, key)
            if who in modelled:
                await register_tiny_model(conn, tenant.id, *ltv)
                await registry.promote(conn, tenant.id, 1)
                await promote_small_churn_model(conn, tenant.id, churn_url)
        return made
    finally:
        await conn.close()


def models(platform: RunningPlatform, folder: Path) -> tuple[tuple[str, dict], str, list[dict]]:
    """A tiny LTV model trained on A's purchases and a small churn model, in the platform's
    artifact store (seconds); and A's purchases."""
    rows = synthetic_purchases(customers=40)
    ltv = tiny_model(rows, folder / "ltv", platform.settings)
    history = simulate(customers=80)
    churn = fit_churn_model(history[history["ts"] <= END], END, SMALL)
    churn_url = store_in(platform.settings, churn.save(folder / "churn"), "churn")
    return ltv, churn_url, rows


# What A makes, in order: each request, and the ids the platform gives in its answer (by
# their place in it). `<name>` is A's marker, in every name, email and URL of A's.
SEED: list[tuple[Request, dict[str, str]]] = [
    (Request("shield", "POST", "/api/v1/allocate", json={**BUDGET, "budget": "100"}), {}),
    (Request("shield", "POST", "/api/v1/reserve",
             json={**BUDGET, "amount": "2", "platform": "meta"}),
     {"reservation": "reservation_id"}),
    (Request("shield", "POST", "/api/v1/commit",
             json={**BUDGET, "reservation_id": "<reservation>", "actual_spend": "1.5"}), {}),
    (Request("shield", "POST", "/api/v1/consent", json={"records": [
        {**CONSENT, "granted": True, "idempotency_key": "<consent_key>"}]}), {}),
    (Request("flow", "PUT", "/api/v1/segments/{segment_id}", {"segment_id": "<flow_segment>"},
             json={"customer_ids": ["<customer>", "<bystander>"]}), {}),
    (Request("flow", "POST", "/api/v1/campaigns", json=spec("<campaign>", name="<name> launch")),
     {}),
    (Request("create", "POST", "/api/v1/generate", json=creative_brief("<name>")),
     {"experiment": "experiment_id", "creative": "variants.0.creative_id"}),
    (Request("create", "POST", "/api/v1/experiments/{experiment_id}/results",
             {"experiment_id": "<experiment>"}, json={"results": [
                 {"creative_id": "<creative>", "impressions": 100, "clicks": 7,
                  "conversions": 2}]}), {}),
    (Request("engage", "PUT", "/api/v1/customers/{customer_id}", CUSTOMER,
             json={"email": "<name>@example.com", "first_name": "<name>"}), {}),
    (Request("engage", "POST", "/api/v1/message",
             json={**MESSAGE, "idempotency_key": "<message_key>"}), {}),
    (Request("engage", "POST", "/api/v1/segments",
             json={**ENGAGE_SEGMENT, "name": "<name> lapsed", "rule": RULE}), {}),
    (Request("engage", "POST", "/api/v1/rules",
             json={**RULE_ID, **RETENTION, "name": "<name> win back",
                   "segment_id": "<engage_segment>"}), {}),
    (Request("engage", "PUT", "/api/v1/crm/{source}", {"source": "<crm>"}, json={
        "enabled": False,
        "config": {"access_token": "pat-<name>", "base_url": "http://127.0.0.1:9/<name>"}}),
     {}),
    (Request("billing", "POST", "/api/v1/metrics", json={
        "code": "<metric>", "aggregation": "max", "field_name": "n", "name": "<name>"}), {}),
    (Request("billing", "POST", "/api/v1/plans", json=PLAN), {}),
    (Request("billing", "POST", "/api/v1/coupons",
             json={"code": "<coupon>", "percent_off": "10"}), {}),
    (Request("billing", "POST", "/api/v1/customers", json={
        **BILLING_CUSTOMER, "name": "<name>", "email": "<name>@example.com",
        "currency": "USD"}), {}),
    (Request("billing", "POST", "/api/v1/customers/{customer_id}/coupons", BILLING_CUSTOMER,
             json={"coupon_code": "<coupon>"}), {}),
    (Request("billing", "POST", "/api/v1/customers/{customer_id}/credits", BILLING_CUSTOMER,
             json={"amount": "5"}), {}),
    (Request("billing", "POST", "/api/v1/subscriptions", json={
        **BILLING_CUSTOMER, "plan_code": "<plan>", "start_at": "2026-01-01T00:00:00Z"}),
     {"subscription": "id"}),
    (Request("billing", "POST", "/api/v1/events", json={"events": [{
        "transaction_id": "<event>", "customer": "<billing_customer>",
        "metric_code": "<metric>", "timestamp": "2026-01-10T10:00:00Z",
        "properties": {"n": 3}}]}), {}),
    (Request("billing", "POST", "/api/v1/periods/close", json={"as_of": MONTH_CLOSED}), {}),
    (Request("billing", "GET", "/api/v1/invoices", query=BILLING_CUSTOMER), {"invoice": "0.id"}),
    # Last: an endpoint made before the close would be sent its events (to a closed port).
    (Request("billing", "POST", "/api/v1/webhook-endpoints",
             json={"url": "http://127.0.0.1:9/<name>"}), {"endpoint": "endpoint.id"}),
]  # fmt: skip


def seed(a: httpx.Client, ids: dict[str, str], purchases: list[dict]) -> None:
    """Tenant A makes one of every kind of thing through the APIs (and a campaign that has
    run); the ids the platform gives them go into `ids`."""
    ok(a.post("/value/api/v1/transactions", json={"transactions": purchases}))
    for request, answers in SEED:
        sent = request.send(a, ids)
        assert sent.status < 300, f"{sent.request}: {sent.response.text}"
        for name, place in answers.items():
            found = sent.response.json()
            for step in place.split("."):
                found = found[int(step)] if isinstance(found, list) else found[step]
            ids[name] = str(found)
    decisions(a, ids["live_campaign"], ids["name"])


def decisions(a: httpx.Client, campaign_id: str, name: str) -> None:
    """A's live campaign runs until the bid loop has logged a decision of it, then stops."""
    ok(a.post("/flow/api/v1/campaigns", json=spec(campaign_id, name=f"{name} live")))
    ok(a.post(f"/flow/api/v1/campaigns/{campaign_id}/start"))
    deadline = time.monotonic() + 30
    query = {"campaign_id": campaign_id}
    try:
        while not ok(a.get("/flow/api/v1/decisions", params=query))["decisions"]:
            assert time.monotonic() < deadline, "A's live campaign made no decision in 30 s"
            time.sleep(0.5)
    finally:
        ok(a.post(f"/flow/api/v1/campaigns/{campaign_id}/stop"))


@dataclass
class Tenants:
    names: dict[str, str]  # "a", "b", "c"
    made: dict[str, tuple[UUID, str]]  # id and API key
    token: str  # in the names
    purchases: list[dict]  # A's

    def client(self, base_url: str, who: str) -> httpx.Client:
        return httpx.Client(base_url=base_url, timeout=60, headers={"X-API-Key": self.made[who][1]})


@pytest.fixture(scope="module")
def tenants(platform: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> Tenants:
    """A and B with models, C without."""
    token = uuid.uuid4().hex[:10]
    names = {who: f"iso-{who}-{token}" for who in "abc"}
    ltv, churn_url, purchases = models(platform, tmp_path_factory.mktemp("isolation"))
    made = asyncio.run(
        tenants_with_models(platform.database_url, names, ltv, churn_url, modelled={"a", "b"})
    )
    return Tenants(names, made, token, purchases)


@pytest.fixture(scope="module")
def walk(platform: RunningPlatform, tenants: Tenants) -> Iterator[Walk]:
    """B's answers to the Browse cases, taken before A makes anything; then A's world, made
    and read."""
    ids = IDS | {"name": f"alpha{tenants.token}", "key_prefix": key_prefix(tenants.made["a"][1])}
    with tenants.client(platform.base_url, "a") as a, tenants.client(platform.base_url, "b") as b:
        walk = Walk(a=a, b=b, ids=ids, unused=dict(UNUSED), markers=set(), reads=READS)
        walk.baseline = {
            key: case.request(key).send(b, ids).view()
            for key, case in CASES.items()
            if isinstance(case, Browse)
        }
        seed(a, ids, tenants.purchases)
        walk.unused |= {n: str(uuid.uuid4()) for n in ids.keys() - walk.unused.keys()}
        walk.markers = {v for n, v in ids.items() if n not in NOT_MARKERS}
        walk.markers |= {tenants.names["a"], str(tenants.made["a"][0])}
        walk.snapshots = walk.read_as_a()
        yield walk


def specs(base_url: str) -> set[Key]:
    routes = set()
    for app in SERVICES:
        document = httpx.get(f"{base_url}/{app}/openapi.json", timeout=30).json()
        for path, operations in document["paths"].items():
            routes |= {f"{app} {method.upper()} {path}" for method in operations}
    return routes


def test_every_route_has_an_isolation_case(platform: RunningPlatform) -> None:
    routes = specs(platform.base_url)
    missing = sorted(routes - CASES.keys())
    stale = sorted(CASES.keys() - routes)
    where = "CASES in tests/integration/test_tenant_isolation.py"
    assert not missing, (
        "routes without a tenant-isolation case (add one to " + where + "; the kinds are in "
        "tests/integration/isolation.py):\n" + "\n".join(missing)
    )
    assert not stale, f"cases for routes that no longer exist (remove them from {where}):\n" + (
        "\n".join(stale)
    )


def test_tenant_b_can_neither_read_list_change_nor_delete_what_a_made(walk: Walk) -> None:
    problems = []
    for kind in ORDER:
        for key, case in CASES.items():
            if case.kind == kind:
                problems += [f"{key} [{kind}]: {p}" for p in case.check(key, walk)]
    problems += [f"after the walk: {p}" for p in walk.changed_for_a()]
    assert not problems, "\n".join(problems)


def test_platform_wide_routes_are_for_the_operator(walk: Walk) -> None:
    """A tenant's key is refused (403 naming the scope): nothing of A's, or anyone's, in it."""
    problems = []
    for key, case in CASES.items():
        if isinstance(case, Operator):
            problems += [f"{key}: {p}" for p in case.check(key, walk)]
    assert not problems, "\n".join(problems)


def grpc_answer(stub: Any, method: str, request: Any, key: str) -> tuple[Any, str]:
    metadata = [("application", "value"), ("x-api-key", key)]
    try:
        return getattr(stub, method)(request, metadata=metadata, timeout=30), "OK"
    except grpc.RpcError as exc:
        return exc.details(), exc.code().name


def test_grpc_answers_b_as_if_a_had_nothing(walk: Walk, platform: RunningPlatform) -> None:
    """pb.LTVService, every method, as B for a customer of A's (one B never makes its own):
    NOT_FOUND, as for a customer nobody has. (grpc.health.v1 carries no tenant data.)"""
    service = kiki_pb2.DESCRIPTOR.services_by_name["LTVService"]
    assert {m.name for m in service.methods} == {"PredictLTV", "PredictLTVBatch"}, (
        "a new LTVService method: add its isolation check here"
    )
    key = walk.b.headers["X-API-Key"]
    answers = {}
    with grpc.insecure_channel(platform.grpc_target) as channel:
        stub = kiki_pb2_grpc.LTVServiceStub(channel)
        for ids in (walk.ids, walk.unused):
            one = kiki_pb2.PredictLTVRequest(customer_id=ids["bystander"], as_of=AS_OF)
            batch = kiki_pb2.PredictLTVBatchRequest(customers=[one])
            found = [grpc_answer(stub, "PredictLTV", one, key),
                     grpc_answer(stub, "PredictLTVBatch", batch, key)]  # fmt: skip
            answers[ids["bystander"]] = str(found).replace(ids["bystander"], "<customer>")
    theirs, nobodys = answers.values()
    assert "NOT_FOUND" in theirs and "has no purchases" in theirs, theirs
    assert theirs == nobodys
    assert not [m for m in walk.markers if m in theirs]


def test_models_belong_to_their_tenant(
    walk: Walk, tenants: Tenants, platform: RunningPlatform
) -> None:
    """C has no models: it is told to train its own, never served A's."""
    with tenants.client(platform.base_url, "c") as c:
        predicted = c.post("/value/api/v1/predict", json={"customer_id": IDS["customer"]})
        drift = c.get("/value/api/v1/drift")
        churn = c.get("/engage/api/v1/churn-risk")
        key = c.headers["X-API-Key"]
    for answer, command in (
        (predicted, "kiki train ltv"),
        (drift, "kiki train ltv"),
        (churn, "kiki train churn"),
    ):
        assert answer.status_code == 409 and command in answer.text, answer.text
    with grpc.insecure_channel(platform.grpc_target) as channel:
        stub = kiki_pb2_grpc.LTVServiceStub(channel)
        request = kiki_pb2.PredictLTVRequest(customer_id=IDS["customer"], as_of=AS_OF)
        details, code = grpc_answer(stub, "PredictLTV", request, key)
    assert code == "FAILED_PRECONDITION" and "kiki train ltv" in details
