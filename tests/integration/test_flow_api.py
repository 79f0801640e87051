"""SyncFlow over HTTP through Serve: campaign CRUD, start/pause/stop, the live bid loop on
the wall clock against the sandbox exchange, and the decisions endpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import httpx
import pytest

from kiki.auth import Scope
from tests.integration.conftest import RunningPlatform, new_key, run


@pytest.fixture(scope="module")
def flow(platform: RunningPlatform) -> Iterator[httpx.Client]:
    key = run(new_key(platform.database_url, "flow-api"))
    with httpx.Client(
        base_url=f"{platform.base_url}/flow", timeout=30, headers={"X-API-Key": key}
    ) as client:
        yield client


def spec(campaign_id: str, **overrides: object) -> dict:
    now = datetime.now(UTC)
    body = {
        "campaign_id": campaign_id,
        "name": "Spring sale",
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(hours=1)).isoformat(),
        "timezone": "Europe/Paris",
        "budget": "500.00",
        "currency": "USD",
        "goal": {"kind": "roas", "target": "2.5"},
        "platforms": ["google_ads", "meta"],
        "ad_groups": [
            {"ad_group_id": "loyal", "segment": "high_ltv", "value_per_conversion": "80"},
            {"ad_group_id": "new", "segment": "lookalike", "value_per_conversion": 40},
        ],
        "max_bid": "4.00",
    }
    return {**body, **overrides}


async def usage_and_decisions(url: str, flow: httpx.Client) -> tuple[int, int]:
    tenant = flow.get("/api/v1/whoami").json()["tenant_id"]
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT coalesce(sum((properties->>'quantity')::numeric), 0)
                       FROM billing_events WHERE metric_code = 'bid_decisions'
                         AND customer_id = $1) AS billed,
                      (SELECT count(*) FROM flow_decisions WHERE tenant_id = $2) AS made""",
            tenant,
            UUID(tenant),
        )
    finally:
        await conn.close()
    return int(row["billed"]), row["made"]


def test_campaign_lifecycle_and_live_decisions(
    flow: httpx.Client, platform: RunningPlatform
) -> None:
    created = flow.post("/api/v1/campaigns", json=spec("spring"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "draft"
    assert body["budget"] == {"amount": "500", "micros": 500_000_000, "currency": "USD"}
    assert body["goal"] == {"kind": "roas", "target": "2.5"}

    patched = flow.patch("/api/v1/campaigns/spring", json={"budget": "600", "name": "Sale"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["budget"]["amount"] == "600" and patched.json()["name"] == "Sale"

    started = flow.post("/api/v1/campaigns/spring/start")
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "running"

    # The live loop ticks every 2 s: 2 ad groups x 2 platforms = 4 decisions per tick.
    deadline = time.monotonic() + 30
    decisions: list[dict] = []
    while time.monotonic() < deadline and len({d["tick_id"] for d in decisions}) < 3:
        time.sleep(1)
        resp = flow.get("/api/v1/decisions", params={"campaign_id": "spring"})
        assert resp.status_code == 200, resp.text
        decisions = resp.json()["decisions"]
    ticks = {d["tick_id"] for d in decisions}
    assert len(ticks) >= 3
    for tick in ticks - {max(ticks)}:
        assert len([d for d in decisions if d["tick_id"] == tick]) == 4
    assert {d["platform"] for d in decisions} == {"google_ads", "meta"}
    assert all(0 < d["bid_micros"] <= 4_000_000 for d in decisions)
    budget_reasons = {d["reason"].split("; pace:")[0] for d in decisions}
    assert budget_reasons <= {"reserved", "ahead_of_pace"}
    assert all("; pace:" in d["reason"] for d in decisions)

    since = decisions[-1]["decided_at"]
    later = flow.get("/api/v1/decisions", params={"campaign_id": "spring", "since": since})
    assert all(d["decided_at"] >= since for d in later.json()["decisions"])

    # Billing's `bid_decisions` for the tenant equal its decisions, read in one snapshot.
    billed, made = run(usage_and_decisions(platform.database_url, flow))
    assert billed == made > 0

    paused = flow.post("/api/v1/campaigns/spring/pause")
    assert paused.json()["status"] == "paused"
    shown = flow.get("/api/v1/campaigns/spring").json()
    assert 0 <= shown["spent"]["micros"] <= 600_000_000
    stopped = flow.post("/api/v1/campaigns/spring/stop")
    assert stopped.json()["status"] == "stopped"
    again = flow.post("/api/v1/campaigns/spring/start")
    assert again.status_code == 409
    assert "stopped" in again.json()["error"]["message"]

    listed = flow.get("/api/v1/campaigns", params={"status": "stopped"}).json()
    assert [c["campaign_id"] for c in listed["campaigns"]] == ["spring"]
    # The shards hold every tenant's campaigns: their figures are an operator's.
    assert flow.get("/api/v1/loop").status_code == 403
    operator = run(new_key(platform.database_url, "flow-ops", [Scope.OPERATOR]))
    loop = flow.get("/api/v1/loop", headers={"X-API-Key": operator}).json()
    assert len(loop) >= 1 and sum(s["ticks"] for s in loop) > 0


def test_bad_input_and_tenant_isolation(flow: httpx.Client, platform: RunningPlatform) -> None:
    bad = flow.post("/api/v1/campaigns", json=spec("bad", budget="1.0000001"))
    assert bad.status_code in (400, 422) and "micro" in bad.json()["error"]["message"]
    backwards = spec("backwards", ends_at="2020-01-01T00:00:00Z")
    resp = flow.post("/api/v1/campaigns", json=backwards)
    assert resp.status_code == 422 and "ends_at" in resp.json()["error"]["message"]
    unknown = flow.post("/api/v1/campaigns", json=spec("x", platforms=["myspace"]))
    assert unknown.status_code == 422 and "platforms" in unknown.json()["error"]["message"]

    assert flow.post("/api/v1/campaigns", json=spec("mine")).status_code == 201
    assert flow.post("/api/v1/campaigns", json=spec("mine")).status_code == 409
    other = run(new_key(platform.database_url, "flow-other"))
    resp = httpx.get(
        f"{platform.base_url}/flow/api/v1/campaigns/mine", headers={"X-API-Key": other}
    )
    assert resp.status_code == 404
