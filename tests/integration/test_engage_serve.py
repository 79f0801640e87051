"""The engage app under Ray Serve (started by the same code as `kiki up`): the seed's calls
reach it through the HTTP proxy with an API key, and answer clearly before any model exists."""

from __future__ import annotations

import httpx

from tests.integration.conftest import RunningPlatform, new_key, run


def test_seed_calls_through_serve(platform: RunningPlatform) -> None:
    key = run(new_key(platform.database_url, "engage_serve"))
    base = f"{platform.base_url}/engage"
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30) as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["service"] == "engage"
        risk = client.get("/api/v1/churn-risk", params={"threshold": 0.7})
        assert risk.status_code == 409
        assert "kiki train churn" in risk.json()["error"]["message"]
        cohort = client.get("/api/v1/cohorts", params={"cohort_id": "cohort_jan_2026"})
        assert cohort.status_code == 404 and "cohort_jan_2026" in cohort.json()["error"]["message"]
        seed = {"customer_id": "cust_123", "channel": "in_app", "template": "win_back",
                "personalization": True}  # fmt: skip
        sent = client.post("/api/v1/message", json=seed)
        assert sent.status_code == 201 and sent.json()["status"] == "sent", sent.text
        inbox = client.get("/api/v1/inbox/cust_123").json()
        assert inbox[0]["message_id"] == sent.json()["message_id"]
        email = client.post("/api/v1/message", json={**seed, "channel": "email"})
        assert email.json()["status"] == "refused"  # no consent recorded: checked first
        assert client.get("/api/v1/churn-risk", headers={"X-API-Key": "nope"}).status_code == 401
