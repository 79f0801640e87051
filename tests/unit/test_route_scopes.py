"""Every route of the six apps says in its OpenAPI which scope it needs (issue 19); a new
route without one, or a state-changing route open to read-only keys, fails here."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from kiki.auth import Scope
from kiki.config import SERVICES

# Routes that take no API key, and why.
PUBLIC = {
    ("*", "GET", "/health"): "liveness probes and load balancers call it without a key",
    ("create", "GET", "/metrics"): "Prometheus scrapes it; platform-wide counters, no tenant data",
    ("billing", "POST", "/webhooks/stripe"): "Stripe's signature authenticates it",
    ("billing", "POST", "/webhooks/paypal"): "PayPal verifies its signature (PAYPAL-* headers)",
    ("billing", "GET", "/paypal/return"): "the payer's browser from PayPal; the invoice and "
    "PayPal's order id must name a payment KIKI waits on",
    ("billing", "GET", "/paypal/cancel"): "the payer's browser from PayPal; the invoice and "
    "PayPal's order id must name a payment KIKI waits on",
}
# Any valid key will do: it says only what the key itself may do.
ANY_KEY = {("*", "GET", "/api/v1/whoami")}
# POST routes that only read: a query too large or too structured for a query string.
READING_POSTS = {
    ("shield", "/api/v1/check"),
    ("shield", "/api/v1/consent/audience"),
    ("value", "/api/v1/predict"),
    ("engage", "/api/v1/segments/preview"),
}


def _operations() -> list[tuple[str, str, str, dict[str, Any]]]:
    found = []
    for app in SERVICES:
        spec = importlib.import_module(f"deployments.{app}.app").api.openapi()
        for path, item in spec["paths"].items():
            for method, operation in item.items():
                found.append((app, method.upper(), path, operation))
    return found


OPERATIONS = _operations()


def _listed(table: set | dict, app: str, method: str, path: str) -> bool:
    return (app, method, path) in table or ("*", method, path) in table


@pytest.mark.parametrize(
    ("app", "method", "path", "operation"),
    OPERATIONS,
    ids=[f"{a} {m} {p}" for a, m, p, _ in OPERATIONS],
)
def test_the_route_declares_its_scope(
    app: str, method: str, path: str, operation: dict[str, Any]
) -> None:
    security = operation.get("security")
    if _listed(PUBLIC, app, method, path):
        assert not security, "a public route must not ask for a key"
        return
    assert security, f"{app} {method} {path} takes no key: give it Reader/Writer/Admin/Operator"
    scopes = [s for requirement in security for s in requirement["ApiKey"]]
    if _listed(ANY_KEY, app, method, path):
        assert scopes == []
        return
    assert all(len(r["ApiKey"]) == 1 for r in security), "one scope per alternative"
    assert {Scope(s) for s in scopes}, "a scope named"
    if method != "GET" and (app, path) not in READING_POSTS:
        assert Scope.READ.value not in scopes, (
            f"{app} {method} {path} changes state: a read-only key must not be enough"
        )
