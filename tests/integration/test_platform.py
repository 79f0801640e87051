"""The six apps on real Ray Serve with a real PostgreSQL: health, auth, errors, gRPC, metrics."""

from __future__ import annotations

import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kiki.config import SERVICES
from protos import kiki_pb2, kiki_pb2_grpc
from tests.integration.conftest import RunningPlatform, new_key, run


@pytest.fixture(scope="module")
def http(platform: RunningPlatform):
    with httpx.Client(base_url=platform.base_url, timeout=10) as client:
        yield client


@pytest.mark.parametrize("service", SERVICES)
def test_every_app_is_healthy_with_its_database_check(http: httpx.Client, service: str) -> None:
    resp = http.get(f"/{service}/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok" and body["service"] == service
    # The database, and each app's own dependencies (test_health_failure.py names them).
    assert body["checks"]["database"] == "ok" and set(body["checks"].values()) == {"ok"}
    assert body["version"]


@pytest.mark.parametrize("service", SERVICES)
def test_calls_need_a_valid_api_key(
    http: httpx.Client, platform: RunningPlatform, service: str
) -> None:
    resp = http.get(f"/{service}/api/v1/whoami")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthenticated"
    resp = http.get(f"/{service}/api/v1/whoami", headers={"X-API-Key": "kiki_AAAAAAAA_" + "x" * 43})
    assert resp.status_code == 401
    resp = http.get(f"/{service}/api/v1/whoami", headers={"X-API-Key": platform.api_key})
    assert resp.status_code == 200
    assert resp.json()["tenant"] == platform.settings.dev_tenant
    assert resp.json()["service"] == service


def test_the_proxy_root_lists_every_service_and_its_state(http: httpx.Client) -> None:
    """The seed's `curl .../health | grep syncvalue`: no prefix, no key; each service on a
    line of its own. Any other path on the root is a 404 in the error shape."""
    resp = http.get("/health")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    names = {"syncvalue", "syncshield", "syncflow", "synccreate", "syncengage", "billing"}
    assert body["status"] == "ok" and set(body["checks"]) == names == set(body["services"])
    assert set(body["checks"].values()) == {"ok"}
    value = body["services"]["syncvalue"]
    assert (value["app"], value["prefix"], value["status"]) == ("value", "/value", "ok")
    assert value["checks"]["database"] == "ok" and "ltv_models" in value["checks"]
    [line] = [ln for ln in resp.text.splitlines() if '"syncvalue": {' in ln]
    assert '"prefix":"/value","status":"ok"' in line

    for path in ("/nowhere", "/api/v1/generate"):
        missing = http.get(path)
        assert missing.status_code == 404
        error = missing.json()["error"]
        assert error["code"] == "not_found" and f"no route GET {path}" in error["message"]
        assert "/value, /shield, /flow, /create, /engage, /billing" in error["message"]


def test_each_key_resolves_to_its_own_tenant(http: httpx.Client, platform: RunningPlatform) -> None:
    key = run(new_key(platform.database_url, "acme"))
    resp = http.get("/billing/api/v1/whoami", headers={"X-API-Key": key})
    assert resp.json()["tenant"] == "acme"


def test_openapi_docs_are_served(http: httpx.Client) -> None:
    spec = http.get("/shield/openapi.json").json()
    assert spec["info"]["title"] == "SyncShield"
    assert "/api/v1/whoami" in spec["paths"]


def test_grpc_health_and_auth(platform: RunningPlatform) -> None:
    app = [("application", "value")]
    with grpc.insecure_channel(platform.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(), metadata=app, timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        ltv = kiki_pb2_grpc.LTVServiceStub(channel)
        request = kiki_pb2.PredictLTVRequest(customer_id="cust_123", spend=500)
        with pytest.raises(grpc.RpcError) as info:
            ltv.PredictLTV(request, metadata=app, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            ltv.PredictLTV(request, metadata=[*app, ("x-api-key", platform.api_key)], timeout=10)
        # Authenticated; no model is trained at this stage, and the status says so.
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "kiki train ltv" in info.value.details()


def test_request_metrics_reach_prometheus(http: httpx.Client, platform: RunningPlatform) -> None:
    for _ in range(3):
        http.get("/engage/api/v1/whoami")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = httpx.get(platform.metrics_url, timeout=5).text
        lines = [ln for ln in text.splitlines() if ln.startswith("ray_kiki_http_requests")]
        if any('app="engage"' in ln and 'status="401"' in ln for ln in lines):
            assert any(ln.startswith("ray_kiki_http_request_latency_ms_bucket") for ln in
                       text.splitlines())  # fmt: skip
            return
        time.sleep(1)
    pytest.fail("kiki_http_requests for engage did not show up in Ray's metrics export")
