"""SyncValue end to end: purchases in over HTTP, a small model registered and promoted, then
predictions over HTTP and gRPC through Serve (batched scorer), A/B split, rollback, drift."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import httpx
import numpy as np
import pandas as pd
import pytest

from kiki.auth import authenticate
from kiki.config import Settings
from kiki.db.pool import connect
from kiki.value import drift, registry
from kiki.value.features import FEATURE_NAMES, compute_features
from kiki.value.ziln import ZILNConfig, train_ziln
from protos import kiki_pb2, kiki_pb2_grpc
from tests.conftest import store_in
from tests.integration.conftest import RunningPlatform, new_key

CUT = date(2025, 12, 31)


def synthetic_purchases(customers: int = 300, seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        first = CUT - timedelta(days=int(rng.integers(30, 400)))
        for n in range(int(rng.integers(1, 6))):
            day = first + timedelta(days=int(rng.integers(0, (CUT - first).days + 1)))
            rows.append(
                {
                    "order_id": f"o{c}-{n}",
                    "customer_id": f"cust_{c:04d}",
                    "occurred_at": day.isoformat(),
                    "amount": f"{rng.gamma(2, 20):.2f}",
                }
            )
    return rows


def tiny_model(rows: list[dict], folder: Path, settings: Settings) -> tuple[str, dict]:
    frame = pd.DataFrame(rows).assign(
        ts=lambda d: pd.to_datetime(d["occurred_at"]), amount=lambda d: d["amount"].astype(float)
    )
    mid = CUT - timedelta(days=90)
    x = compute_features(frame, mid)
    later = frame[(frame["ts"] > pd.Timestamp(mid)) & (frame["ts"] <= pd.Timestamp(CUT))]
    y = later.groupby("customer_id")["amount"].sum().reindex(x.index, fill_value=0.0)
    model = train_ziln(x, y.to_numpy(), ZILNConfig(hidden=(8,), max_epochs=5), seed=0)
    url = store_in(settings, model.save(folder), "ltv")
    reference = drift.profile(x, model.predict(x)["expected"])
    return url, {k: v.model_dump() for k, v in reference.items()}


async def register_tiny_model(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, artifact: str, reference: dict
) -> registry.ModelRecord:
    """A model made by `tiny_model`, registered (not promoted) for the tenant."""
    return await registry.register(
        conn,
        tenant_id,
        metrics={"gini": 0.5},
        feature_schema=list(FEATURE_NAMES),
        config={"currency": "USD"},
        calibration_end=CUT,
        horizon_days=90,
        data_window={"start": "2024-11-01", "end": CUT.isoformat()},
        artifact_url=artifact,
        reference=reference,
    )


@pytest.fixture(scope="module")
def value(platform: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    key = asyncio.run(new_key(platform.database_url, f"value-{uuid.uuid4().hex[:6]}"))
    client = httpx.Client(
        base_url=f"{platform.base_url}/value", timeout=60, headers={"X-API-Key": key}
    )
    rows = synthetic_purchases()
    resp = client.post("/api/v1/transactions", json={"transactions": rows})
    assert resp.status_code == 201, resp.text
    assert resp.json() == {
        "received": len(rows),
        "inserted": len(rows),
        "duplicates": 0,
        "suppressed": 0,
    }
    again = client.post("/api/v1/transactions", json={"transactions": rows[:10]}).json()
    assert again == {"received": 10, "inserted": 0, "duplicates": 10, "suppressed": 0}

    artifact, reference = tiny_model(
        rows, tmp_path_factory.mktemp("model") / "v1", platform.settings
    )

    async def register() -> uuid.UUID:
        conn = await connect(platform.database_url)
        try:
            tenant = (await authenticate(conn, key)).tenant
            for _ in range(2):  # versions 1 and 2, same weights: the A/B test tells them apart
                record = await register_tiny_model(conn, tenant.id, artifact, reference)
            await registry.promote(conn, tenant.id, 1)
            assert record.version == 2
            return tenant.id
        finally:
            await conn.close()

    tenant_id = asyncio.run(register())
    yield {"client": client, "key": key, "tenant_id": tenant_id}
    client.close()


def test_predict_one_known_customer(value: dict) -> None:
    resp = value["client"].post(
        "/api/v1/predict", json={"customer_id": "cust_0001", "as_of": CUT.isoformat()}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model_version"] == 1 and body["source"] == "history"
    assert body["horizon_days"] == 90 and body["currency"] == "USD"
    assert 0 <= body["p_purchase"] <= 1
    q = body["quantiles"]
    assert float(q["p10"]) <= float(q["p50"]) <= float(q["p90"])
    assert body["ltv_micros"] == round(float(body["ltv"]) * 1_000_000)


def test_seed_request_for_an_unknown_customer_and_clear_errors(value: dict) -> None:
    client = value["client"]
    seed = {"customer_id": "cust_123", "spend": 500, "engagement_score": 0.85}
    resp = client.post("/api/v1/predict", json=seed)
    assert resp.status_code == 200 and resp.json()["source"] == "fields"
    missing = client.post("/api/v1/predict", json={"customer_id": "nobody"})
    assert missing.status_code == 404 and "send `spend`" in missing.json()["error"]["message"]
    bad = client.post("/api/v1/predict", json={"customer_id": "x", "engagement_score": 3})
    assert bad.status_code == 422


def test_batch_of_many_with_a_stable_ab_split(value: dict, platform: RunningPlatform) -> None:
    client = value["client"]
    ids = [f"cust_{i:04d}" for i in range(300)]
    body = {"customers": [{"customer_id": c, "as_of": CUT.isoformat()} for c in ids]}

    async def candidate(percent: int) -> None:
        conn = await connect(platform.database_url)
        try:
            await registry.promote(conn, value["tenant_id"], 2, traffic_percent=percent)
        finally:
            await conn.close()

    asyncio.run(candidate(30))
    time.sleep(6)  # replicas re-read the registry every 5 s
    first = client.post("/api/v1/predict", json=body).json()["predictions"]
    second = client.post("/api/v1/predict", json=body).json()["predictions"]
    versions = [p["model_version"] for p in first]
    assert versions == [p["model_version"] for p in second]  # the same customer, same model
    share = versions.count(2) / len(versions)
    assert 0.2 < share < 0.4
    expected = [2 if registry.ab_bucket(c) < 30 else 1 for c in ids]
    assert versions == expected


def test_grpc_predict_and_batch(value: dict, platform: RunningPlatform) -> None:
    metadata = [("application", "value"), ("x-api-key", value["key"])]
    with grpc.insecure_channel(platform.grpc_target) as channel:
        stub = kiki_pb2_grpc.LTVServiceStub(channel)
        seed = kiki_pb2.PredictLTVRequest(customer_id="cust_123", spend=500, engagement_score=0.85)
        reply = stub.PredictLTV(seed, metadata=metadata, timeout=30)
        assert reply.model_version in ("1", "2") and reply.ltv and reply.horizon_days == 90
        batch = kiki_pb2.PredictLTVBatchRequest(
            customers=[
                kiki_pb2.PredictLTVRequest(customer_id=f"cust_{i:04d}", as_of=CUT.isoformat())
                for i in range(50)
            ]
            + [kiki_pb2.PredictLTVRequest(customer_id="nobody")]
        )
        replies = stub.PredictLTVBatch(batch, metadata=metadata, timeout=30).predictions
        assert len(replies) == 51 and all(r.ltv for r in replies[:50])
        assert replies[50].error and not replies[50].ltv
        with pytest.raises(grpc.RpcError) as info:
            stub.PredictLTV(kiki_pb2.PredictLTVRequest(), metadata=metadata, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_drift_against_the_training_reference(value: dict) -> None:
    same = (
        value["client"]
        .get("/api/v1/drift", params={"as_of": (CUT - timedelta(days=90)).isoformat()})
        .json()
    )
    assert set(same["psi"]) == {*FEATURE_NAMES, drift.PREDICTION}
    later = value["client"].get("/api/v1/drift", params={"as_of": "2027-06-30"}).json()
    assert later["psi"]["days_since_last"] > same["psi"]["days_since_last"]
    assert later["stale"] is True


def test_rollback_returns_to_the_previous_version(value: dict, platform: RunningPlatform) -> None:
    async def promote_then_rollback() -> int:
        conn = await connect(platform.database_url)
        try:
            await registry.promote(conn, value["tenant_id"], 2)
            return (await registry.rollback(conn, value["tenant_id"])).version
        finally:
            await conn.close()

    assert asyncio.run(promote_then_rollback()) == 1
    time.sleep(6)
    body = {"customer_id": "cust_0002", "as_of": CUT.isoformat()}
    assert value["client"].post("/api/v1/predict", json=body).json()["model_version"] == 1


def test_flow_bids_on_the_segment_value_from_syncvalue(
    value: dict, platform: RunningPlatform
) -> None:
    """SyncFlow's bid loop values an ad group's segment as the mean predicted LTV of its
    members, asked of this app through a deployment handle (one call per tick)."""
    members = [f"cust_{c:04d}" for c in range(0, 60, 2)]
    predicted = value["client"].post(
        "/api/v1/predict", json={"customers": [{"customer_id": c} for c in members]}
    )
    ltv = [p["ltv_micros"] for p in predicted.json()["predictions"]]
    expected = round(sum(ltv) / len(ltv))

    now = datetime.now(UTC)
    flow = httpx.Client(
        base_url=f"{platform.base_url}/flow", timeout=30, headers={"X-API-Key": value["key"]}
    )
    resp = flow.put("/api/v1/segments/vip", json={"customer_ids": [*members, members[0]]})
    assert resp.json() == {"segment_id": "vip", "customers": len(members), "suppressed": 0}
    campaign = {
        "campaign_id": "valued",
        "name": "valued by SyncValue",
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(hours=1)).isoformat(),
        "budget": "100",
        "goal": {"kind": "roas", "target": "2"},
        "platforms": ["google_ads"],
        "ad_groups": [
            {"ad_group_id": "vip", "segment": "vip", "value_per_conversion": "1"},
            {"ad_group_id": "cold", "segment": "nobody", "value_per_conversion": "7"},
        ],
    }
    assert flow.post("/api/v1/campaigns", json=campaign).status_code == 201
    assert flow.post("/api/v1/campaigns/valued/start").status_code == 200
    deadline = time.monotonic() + 40
    seen: dict[str, set[int]] = {}
    while time.monotonic() < deadline and expected not in seen.get("vip", set()):
        time.sleep(1)
        rows = flow.get("/api/v1/decisions", params={"campaign_id": "valued"}).json()
        for d in rows["decisions"]:
            seen.setdefault(d["ad_group_id"], set()).add(d["value_micros"])
    flow.post("/api/v1/campaigns/valued/stop")
    assert expected in seen["vip"]
    assert seen["cold"] == {7_000_000}  # no members: the ad group's stated value


async def predictions_billed(url: str, tenant_id: uuid.UUID) -> int:
    conn = await connect(url)
    try:
        total = await conn.fetchval(
            """SELECT coalesce(sum((properties->>'quantity')::numeric), 0) FROM billing_events
               WHERE metric_code = 'predictions_served' AND customer_id = $1""",
            str(tenant_id),
        )
    finally:
        await conn.close()
    return int(total)


def settled_billed(url: str, tenant_id: uuid.UUID) -> int:
    """The billed count once earlier tests' reports have landed: unchanged over longer than
    the replicas' 5 s report interval."""
    count = asyncio.run(predictions_billed(url, tenant_id))
    for _ in range(10):
        time.sleep(6)
        again = asyncio.run(predictions_billed(url, tenant_id))
        if again == count:
            return count
        count = again
    raise AssertionError("predictions_served never settled")


def test_predictions_served_are_metered_for_billing(value: dict, platform: RunningPlatform) -> None:
    before = settled_billed(platform.database_url, value["tenant_id"])
    customers = [{"customer_id": f"cust_{c:04d}"} for c in range(100, 112)]
    resp = value["client"].post("/api/v1/predict", json={"customers": customers})
    assert resp.status_code == 200, resp.text
    # Replicas report every 5 s; wait for this batch to arrive, then make sure it stays once.
    deadline = time.monotonic() + 30
    billed = before
    while time.monotonic() < deadline and billed < before + len(customers):
        time.sleep(1)
        billed = asyncio.run(predictions_billed(platform.database_url, value["tenant_id"]))
    time.sleep(6)
    billed = asyncio.run(predictions_billed(platform.database_url, value["tenant_id"]))
    assert billed == before + len(customers)
