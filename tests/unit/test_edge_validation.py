"""Requests the fuzz (`kiki bench fuzz`) answered with 500 now get a 422 that names the field.

The apps run in-process with the tenant and the database connection stubbed out: each request
here must be refused by validation, before anything would reach PostgreSQL.
"""

from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from deployments._serve.deps import pooled_connection, require_grant, suppressions_of
from deployments.billing.app import api as billing_api
from deployments.billing.context import billing_context
from deployments.create.app import api as create_api
from deployments.create.context import create_context
from deployments.engage.app import api as engage_api
from deployments.engage.context import engage_context
from deployments.value.app import api as value_api
from deployments.value.context import value_context
from kiki.auth import TENANT_ADMIN, Grant, Tenant
from kiki.billing.reports import parse_month

APPS: dict[str, tuple[FastAPI, list[Any]]] = {
    # the app's context too: a dependency is resolved before the request is validated
    "billing": (billing_api, [pooled_connection, billing_context]),
    "engage": (engage_api, [pooled_connection, engage_context, suppressions_of]),
    "value": (value_api, [pooled_connection, value_context, suppressions_of]),
    "create": (create_api, [create_context]),
}
PRODUCT = {"name": "Sync"}
BRAND = {"name": "Tech", "primary_colors": ["#3b82f6"]}


async def _no_connection() -> Iterator[None]:
    yield None


@pytest.fixture
def clients() -> Iterator[dict[str, TestClient]]:
    for api, connections in APPS.values():
        api.dependency_overrides[require_grant] = lambda: Grant(
            tenant=Tenant(id=uuid4(), name="t"), key_id=uuid4(), prefix="AbCd1234",
            scopes=TENANT_ADMIN, expires_at=None,
        )  # fmt: skip
        for dependency in connections:
            api.dependency_overrides[dependency] = _no_connection
    yield {name: TestClient(api, raise_server_exceptions=False) for name, (api, _) in APPS.items()}
    for api, _ in APPS.values():
        api.dependency_overrides.clear()


@pytest.mark.parametrize(
    ("app", "method", "url", "body", "field"),
    [
        # NUL in text: PostgreSQL's text and jsonb refuse it inside the query
        ("engage", "POST", "/api/v1/message", {"customer_id": "c\x00", "channel": "email",
                                               "template": "win_back"}, "customer_id"),
        ("engage", "PUT", "/api/v1/customers/c1", {"first_name": "\x00x"}, "first_name"),
        ("engage", "GET", "/api/v1/messages?customer_id=%00", None, "query.customer_id"),
        ("engage", "PUT", "/api/v1/crm/hubspot", {"config": {"\x00": 1}}, "config"),
        ("billing", "GET", "/api/v1/subscriptions?customer_id=a%00", None, "query.customer_id"),
        ("billing", "POST", "/api/v1/customers", {"customer_id": "c", "name": "\x00",
                                                  "currency": "USD"}, "name"),
        ("billing", "POST", "/api/v1/events", {"events": [
            {"transaction_id": "t", "customer": "c", "metric_code": "m",
             "timestamp": "2026-01-01T00:00:00Z", "properties": {"k": "\x00"}}]},
         "events.0.properties"),
        ("value", "POST", "/api/v1/predict", {"customer_id": "c\x00"}, "Customer.customer_id"),
        ("create", "POST", "/api/v1/generate", {"product": {"name": "a\x00"}, "brand": BRAND,
                                                "platform": "tiktok_9_16"}, "product.name"),
        # numbers past the integer column or BIGINT micros
        ("billing", "GET", "/api/v1/plans/p?version=271354908740", None, "query.version"),
        # found by `kiki bench fuzz`: a metric's name went to PostgreSQL unchecked (500)
        ("billing", "POST", "/api/v1/metrics", {"code": "seats", "aggregation": "count",
                                                "name": "a\x00b"}, "name"),
        ("billing", "POST", "/api/v1/plans", {"code": "p", "interval": "monthly",
                                              "currency": "USD", "version": 2**31}, "version"),
        ("billing", "POST", "/api/v1/plans", {"code": "p", "interval": "monthly",
                                              "currency": "JPY", "base_fee_minor": 10**13},
         "base_fee_minor"),
        ("billing", "POST", "/api/v1/customers/c/credits", {"amount": "1e16"}, "amount"),
        ("value", "POST", "/api/v1/predict", {"customer_id": "c", "spend": "1e300"},
         "Customer.spend"),
        ("value", "POST", "/api/v1/transactions", {"transactions": [
            {"order_id": "o", "customer_id": "c", "occurred_at": "2026-01-01",
             "amount": "-1"}]}, "transactions.0.amount"),
        # a month that matches YYYY-MM but does not exist
        ("billing", "GET", "/api/v1/analytics/mrr?month=0000-00", None, "query.month"),
        ("billing", "GET", "/api/v1/analytics/mrr?month=8932-85", None, "query.month"),
        ("billing", "GET", "/api/v1/analytics/mrr?months=25", None, "query.months"),
    ],
)  # fmt: skip
def test_refused_at_the_edge(
    clients: dict[str, TestClient], app: str, method: str, url: str, body: Any, field: str
) -> None:
    resp = clients[app].request(method, url, json=body)
    assert resp.status_code == 422, resp.text
    message = resp.json()["error"]["message"]
    assert message.startswith(f"{field}:") or f"; {field}:" in message, message


def test_a_nul_in_the_path_is_refused_before_routing(clients: dict[str, TestClient]) -> None:
    resp = clients["engage"].request("PUT", "/api/v1/customers/c%00", json={})
    assert resp.status_code == 400 and "NUL" in resp.json()["error"]["message"], resp.text


@pytest.mark.parametrize("text", ["0000-01", "2026-00", "2026-13", "9999-12"])
def test_parse_month_refuses_months_that_do_not_exist(text: str) -> None:
    with pytest.raises(ValueError, match="0001-01 to 9999-11"):
        parse_month(text)


def test_parse_month_gives_the_first_day() -> None:
    assert parse_month("2026-03").isoformat() == "2026-03-01"
