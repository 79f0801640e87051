"""SyncShield over HTTP through Serve: the seed calls, reservations, idempotency, breakers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from actors.budget import BudgetClient
from kiki.auth import Scope
from kiki.shield.book import BudgetOp, shard_of
from tests.integration.conftest import RunningPlatform, new_key, run


@pytest.fixture(scope="module")
def shield(platform: RunningPlatform) -> Iterator[httpx.Client]:
    key = run(new_key(platform.database_url, "shield-api"))
    with httpx.Client(
        base_url=f"{platform.base_url}/shield", timeout=30, headers={"X-API-Key": key}
    ) as client:
        yield client


def test_seed_calls_allocate_budget_check(shield: httpx.Client) -> None:
    resp = shield.post(
        "/api/v1/allocate", json={"campaign_id": "camp_001", "budget": 1000, "currency": "USD"}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["budget"] == {"amount": "1000", "micros": 1_000_000_000, "currency": "USD"}
    assert body["remaining"]["amount"] == "1000"

    assert shield.get("/api/v1/budget/camp_001").json()["campaign_id"] == "camp_001"

    resp = shield.post(
        "/api/v1/check",
        json={"campaign_id": "camp_001", "bid_amount": 50, "platform": "google_ads"},
    )
    assert resp.status_code == 200
    assert resp.json()["allowed"] is True and resp.json()["denials"] == []
    assert resp.json()["headroom"]["amount"] == "1000"


def test_reserve_commit_release_exactly(shield: httpx.Client) -> None:
    shield.post(
        "/api/v1/allocate",
        json={"campaign_id": "camp_rc", "budget": "10.00", "platform_budgets": {"meta": "4"}},
    )
    r = shield.post(
        "/api/v1/reserve", json={"campaign_id": "camp_rc", "amount": "0.1", "platform": "meta"}
    ).json()
    assert r["status"] == "granted" and r["granted"]["micros"] == 100_000
    partial = shield.post(
        "/api/v1/reserve", json={"campaign_id": "camp_rc", "amount": 5, "platform": "meta"}
    ).json()
    assert partial["status"] == "partial" and partial["granted"]["amount"] == "3.9"
    denied = shield.post(
        "/api/v1/reserve", json={"campaign_id": "camp_rc", "amount": 1, "platform": "meta"}
    ).json()
    assert denied["status"] == "denied"
    assert denied["denial"]["rule"] == "platform_cap_exhausted"

    done = shield.post(
        "/api/v1/commit",
        json={
            "campaign_id": "camp_rc",
            "actual_spend": "0.07",
            "reservation_id": r["reservation_id"],
        },
    )
    assert done.status_code == 200 and done.json()["amount"]["amount"] == "0.07"
    back = shield.post(
        "/api/v1/release",
        json={"campaign_id": "camp_rc", "reservation_id": partial["reservation_id"]},
    )
    assert back.json()["status"] == "released"
    budget = shield.get("/api/v1/budget/camp_rc").json()
    assert (budget["committed"]["amount"], budget["reserved"]["amount"]) == ("0.07", "0")
    assert budget["remaining"]["amount"] == "9.93"


def test_idempotency_key_header_applies_once(shield: httpx.Client) -> None:
    shield.post("/api/v1/allocate", json={"campaign_id": "camp_idem", "budget": 100})
    body = {"campaign_id": "camp_idem", "amount": "30", "platform": "tiktok"}
    first = shield.post("/api/v1/reserve", json=body, headers={"Idempotency-Key": "k-1"}).json()
    again = shield.post("/api/v1/reserve", json=body, headers={"Idempotency-Key": "k-1"}).json()
    assert again["reservation_id"] == first["reservation_id"] and again["replayed"] is True
    assert shield.get("/api/v1/budget/camp_idem").json()["reserved"]["amount"] == "30"


def test_batch_reserve_and_compliance_denials(shield: httpx.Client) -> None:
    shield.post(
        "/api/v1/allocate",
        json={
            "campaign_id": "camp_rules",
            "budget": 100,
            "allowed_platforms": ["meta"],
            "bid_max": "2.50",
            "daily_budget": 20,
        },
    )
    resp = shield.post(
        "/api/v1/reserve/batch",
        json={
            "reservations": [
                {"campaign_id": "camp_rules", "amount": 1, "platform": "meta"},
                {"campaign_id": "camp_rules", "amount": 1, "platform": "linkedin"},
                {"campaign_id": "camp_rules", "amount": 1, "platform": "meta", "bid": "3"},
                {"campaign_id": "camp_rules", "amount": 50, "platform": "meta"},
                {"campaign_id": "no_such_campaign", "amount": 1, "platform": "meta"},
            ]
        },
    )
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert results[0]["status"] == "granted"
    assert results[1]["denial"]["rule"] == "platform_not_allowed"
    assert results[2]["denial"]["rule"] == "bid_above_max"
    assert results[3]["status"] == "partial" and results[3]["granted"]["amount"] == "19"
    assert results[4]["error"]["code"] == "not_found"
    check = shield.post(
        "/api/v1/check", json={"campaign_id": "camp_rules", "bid_amount": 3, "platform": "tiktok"}
    ).json()
    rules = {d["rule"] for d in check["denials"]}
    assert {"platform_not_allowed", "bid_above_max"} <= rules and check["allowed"] is False


def test_clear_errors_and_tenant_isolation(shield: httpx.Client, platform: RunningPlatform) -> None:
    shield.post("/api/v1/allocate", json={"campaign_id": "camp_mine", "budget": 10})
    other = run(new_key(platform.database_url, "someone-else"))
    resp = httpx.get(
        f"{platform.base_url}/shield/api/v1/budget/camp_mine",
        headers={"X-API-Key": other},
        timeout=30,
    )
    assert resp.status_code == 404  # another tenant's campaign does not exist for you

    bad = shield.post(
        "/api/v1/reserve",
        json={"campaign_id": "camp_mine", "amount": "0.0000001", "platform": "meta"},
    )
    message = bad.json()["error"]["message"]  # refused at the edge, the field named
    assert bad.status_code == 422 and "amount" in message and "6 decimal places" in message
    bad = shield.post(
        "/api/v1/reserve", json={"campaign_id": "camp_mine", "amount": 1, "platform": "myspace"}
    )
    assert bad.status_code == 422 and "platform" in bad.json()["error"]["message"]
    lower = shield.patch("/api/v1/budget/camp_mine", json={"budget": 5})
    assert lower.status_code == 200 and lower.json()["budget"]["amount"] == "5"
    shield.post(
        "/api/v1/reserve", json={"campaign_id": "camp_mine", "amount": 5, "platform": "meta"}
    )
    too_low = shield.patch("/api/v1/budget/camp_mine", json={"budget": 4})
    assert too_low.status_code == 409 and "committed and reserved" in too_low.text


def test_a_tenants_reports_trip_only_its_own_breaker_and_only_operators_hold_the_shared_one(
    shield: httpx.Client, platform: RunningPlatform
) -> None:
    """Issue 19: one tenant's thousand fake failures must not stop every tenant's calls."""
    other_key = run(new_key(platform.database_url, "shield-bystander"))
    operator_key = run(new_key(platform.database_url, "shield-ops", [Scope.OPERATOR]))
    url = f"{platform.base_url}/shield"
    with (
        httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": other_key}) as other,
        httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": operator_key}) as operator,
    ):
        assert shield.post("/api/v1/platforms/amazon/admit").status_code == 200
        for _ in range(2):
            shield.post("/api/v1/platforms/amazon/outcomes", json={"success": False, "calls": 10})
        amazon = next(
            p for p in shield.get("/api/v1/platforms").json() if p["platform"] == "amazon"
        )
        assert amazon["tenant_breaker"]["state"] == "OPEN"
        assert amazon["breaker"]["state"] == "CLOSED"
        refused = shield.post("/api/v1/platforms/amazon/admit")
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "your own amazon circuit breaker" in refused.json()["error"]["message"]
        assert other.post("/api/v1/platforms/amazon/admit").status_code == 200

        # The shared breaker is an operator's: a tenant admin is told the scope it lacks.
        for action in ("open", "reset"):
            denied = shield.post(f"/api/v1/platforms/amazon/{action}")
            assert denied.status_code == 403, denied.text
            assert denied.json()["error"]["code"] == "scope_missing"
            assert "'operator'" in denied.json()["error"]["message"]
        opened = operator.post("/api/v1/platforms/amazon/open")
        assert opened.status_code == 200 and opened.json()["breaker"]["state"] == "OPEN"
        shut_out = other.post("/api/v1/platforms/amazon/admit")
        assert shut_out.status_code == 503 and "amazon circuit breaker is open" in shut_out.text
        # The state is a Prometheus gauge too (2 = open), exported by Ray's metrics agent.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = httpx.get(platform.metrics_url, timeout=5).text
            if any(
                ln.startswith("ray_kiki_breaker_state{")
                and 'platform="amazon"' in ln
                and ln.endswith(" 2.0")
                for ln in text.splitlines()
            ):
                break
            time.sleep(1)
        else:
            pytest.fail("ray_kiki_breaker_state for amazon never showed OPEN (2)")
        assert (
            operator.post("/api/v1/platforms/amazon/reset").json()["breaker"]["state"] == "CLOSED"
        )
        assert other.post("/api/v1/platforms/amazon/admit").status_code == 200
        assert shield.post("/api/v1/platforms/nowhere/admit").status_code == 404


def test_the_wedging_request_is_refused_and_every_campaign_on_its_shard_still_answers(
    shield: httpx.Client, platform: RunningPlatform
) -> None:
    """Issue 16's report: `timezone: null` reached a budget shard and killed its group
    commit, and every campaign on that shard hung. Now the edge refuses it naming the field;
    and the same command sent past the edge (as a buggy caller could) is answered alone."""
    bad = {"campaign_id": "tz_null", "budget": "1", "currency": "USD", "timezone": None}
    resp = shield.post("/api/v1/allocate", json=bad)
    assert resp.status_code == 422 and "timezone" in resp.json()["error"]["message"], resp.text

    shards = platform.settings.budget_shards
    tenant = shield.get("/api/v1/whoami").json()["tenant_id"]
    campaigns = [f"wedge_{i}" for i in range(12)]
    for c in campaigns:
        assert shield.post("/api/v1/allocate", json={"campaign_id": c, "budget": 5}).is_success
    assert {shard_of(tenant, c, shards) for c in campaigns} == set(range(shards))

    past_the_edge = BudgetOp(
        "allocate", tenant, "tz_null", "tz-null-1", currency="USD",
        caps_patch={"total": 10**6}, policy_patch={"timezone": None},
    )  # fmt: skip
    budgets = BudgetClient(platform.database_url, shards=shards)
    (answer,) = run(budgets.execute([past_the_edge]))
    assert (answer.outcome, answer.error_code) == ("error", "invalid_input"), answer
    for c in campaigns:  # every shard, the bad command's own included, still answers
        got = shield.get(f"/api/v1/budget/{c}", timeout=10)
        assert got.status_code == 200 and got.json()["budget"]["amount"] == "5"
    assert shield.get("/api/v1/budget/tz_null").status_code == 404

    health = httpx.get(f"{platform.base_url}/shield/health", timeout=10)
    assert health.status_code == 200, health.text
    checks = health.json()["checks"]
    assert {f"budget_shard_{i}" for i in range(shards)} | {"guard", "database"} == set(checks)
    assert set(checks.values()) == {"ok"}
