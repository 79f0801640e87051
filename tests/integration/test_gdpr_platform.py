"""An erasure through SyncShield sticks in the other apps of the running platform: each
replica derives the suppression key from the same secret, so SyncValue, SyncEngage and
SyncFlow all recognise the erased customer."""

from __future__ import annotations

import httpx

from tests.integration.conftest import RunningPlatform, new_key, run


def test_an_erasure_through_shield_is_honoured_by_value_engage_and_flow(
    platform: RunningPlatform,
) -> None:
    key = run(new_key(platform.database_url, "gdpr_platform"))
    with httpx.Client(base_url=platform.base_url, timeout=60, headers={"X-API-Key": key}) as api:

        def purchase(order: str, customer: str) -> dict[str, str]:
            return {"order_id": order, "customer_id": customer, "occurred_at": "2026-01-05",
                    "amount": "10.00"}  # fmt: skip

        resp = api.put("/engage/api/v1/customers/ada", json={"email": "ada@example.com"})
        assert resp.status_code == 200, resp.text
        resp = api.post("/value/api/v1/transactions", json={"transactions": [purchase("1", "ada")]})
        assert resp.status_code == 201, resp.text

        resp = api.delete("/shield/api/v1/gdpr/customers/ada")
        assert resp.status_code == 200, resp.text
        erased = resp.json()["erased"]
        assert (erased["engage_customers"], erased["transactions"]) == (1, 1)

        resp = api.put("/engage/api/v1/customers/ada", json={"first_name": "Ada"})
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "customer_erased"
        assert "'ada' was erased at their request" in resp.json()["error"]["message"]
        message = {"customer_id": "ada", "channel": "in_app", "template": "win_back"}
        resp = api.post("/engage/api/v1/message", json=message)
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "customer_erased"
        batch = [purchase("1", "ada"), purchase("2", "ada"), purchase("3", "bob")]
        resp = api.post("/value/api/v1/transactions", json={"transactions": batch})
        assert resp.status_code == 201
        assert resp.json() == {"received": 3, "inserted": 1, "duplicates": 0, "suppressed": 2}
        resp = api.put("/flow/api/v1/segments/vip", json={"customer_ids": ["ada", "bob"]})
        assert resp.json() == {"segment_id": "vip", "customers": 1, "suppressed": 1}
        export = api.get("/shield/api/v1/gdpr/customers/ada/export").json()
        assert all(rows == [] for rows in export.values())
