"""`kiki up`'s first-run demo, small, on the session's platform: once planned, every seed call
that needs the models answers 409 saying they are being trained and when they will be ready
(HTTP with Retry-After, and gRPC); the retraining actor then loads 200 CDNOW customers and
trains small models, the console is told each step, and the same calls answer with data. A
tenant with data gets no demo; a step past its estimate pushes the later ones back, and a job
whose worker stopped beating is not read as running."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import httpx
import pytest

from kiki import training_jobs
from kiki.auth import ensure_tenant
from kiki.db.pool import connect
from launcher.first_run import FirstRun
from protos import kiki_pb2, kiki_pb2_grpc
from tests.integration.conftest import RunningPlatform, new_key, run
from training.first_run import PURPOSE, DemoOptions

TENANT = "first-run"
SMALL = DemoOptions(customers=200, ltv_epochs=3, churn_rounds=30)
PREDICT = {"customer_id": "cust_123", "spend": 500, "engagement_score": 0.85}
CALLS: dict[str, tuple[str, str, dict | None]] = {
    "predict": ("POST", "/value/api/v1/predict", PREDICT),
    "churn-risk": ("GET", "/engage/api/v1/churn-risk?threshold=0.7", None),
    "cohorts": ("GET", "/engage/api/v1/cohorts?cohort_id=cohort_jan_2026", None),
}
WAITING_FOR = {
    "predict": "the LTV model is being trained (first-run demo, since ",
    "churn-risk": "the churn model is being trained (first-run demo, since ",
    "cohorts": "the purchase data is being loaded (first-run demo, since ",
}


def call(http: httpx.Client, name: str) -> httpx.Response:
    method, path, body = CALLS[name]
    return http.request(method, path, json=body)


def predict_ltv(platform: RunningPlatform, key: str) -> kiki_pb2.PredictLTVResponse:
    metadata = [("application", "value"), ("x-api-key", key)]
    with grpc.insecure_channel(platform.grpc_target) as channel:
        request = kiki_pb2.PredictLTVRequest(customer_id="cust_123", spend=500)
        return kiki_pb2_grpc.LTVServiceStub(channel).PredictLTV(
            request, metadata=metadata, timeout=30
        )


def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not so after {timeout_s:.0f} s: {what}"
        time.sleep(0.5)


def test_the_seed_calls_say_training_until_the_demo_is_ready_then_answer_with_data(
    platform: RunningPlatform,
) -> None:
    key = run(new_key(platform.database_url, TENANT))
    said: list[str] = []
    first = FirstRun(platform.database_url, platform.settings, said.append, TENANT, SMALL)
    assert first.plan()
    assert said[0].startswith(f"==> first run: tenant {TENANT} has no data: loading the CDNOW")
    assert "`kiki up --no-demo` skips this" in said[0]
    http = httpx.Client(base_url=platform.base_url, timeout=60, headers={"X-API-Key": key})

    # Planned, not started: every replica already reads the jobs from the database.
    for name, waiting in WAITING_FOR.items():
        resp = call(http, name)
        assert resp.status_code == 409, (name, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "training_in_progress", (name, error)
        assert error["message"].startswith(waiting) and "ready in about " in error["message"]
        assert int(resp.headers["Retry-After"]) >= 1
    with pytest.raises(grpc.RpcError) as info:
        predict_ltv(platform, key)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details().startswith(WAITING_FOR["predict"])

    first.launch()
    try:
        eventually(lambda: any("demo: ready" in line for line in said), 300, f"ready: {said}")
    finally:
        first.stop()
    assert said[1].startswith("    demo: loaded ") and "of 200 customers" in said[1]
    assert "(CDNOW moved to 2026-01-01 .. " in said[1]
    assert said[2].startswith("    demo: LTV model version 1 in production (")
    assert said[3].startswith("    demo: churn model version 1 in production (")
    assert said[4] == "    demo: ready: PredictLTV, churn-risk and cohorts answer with data"

    # The replicas re-read the registries within seconds.
    eventually(lambda: call(http, "predict").status_code == 200, 30, "a prediction")
    assert call(http, "predict").json()["model_version"] == 1
    assert predict_ltv(platform, key).model_version == "1"
    eventually(lambda: call(http, "churn-risk").status_code == 200, 30, "churn risk")
    everyone = http.get("/engage/api/v1/churn-risk", params={"threshold": 0}).json()
    assert everyone["model_version"] == 1 and everyone["total"] == 200
    cohort = call(http, "cohorts")
    assert cohort.status_code == 200 and cohort.json()["customers"] > 0, cohort.text

    # A second start finds the data: no demo again.
    assert not FirstRun(platform.database_url, platform.settings, said.append, TENANT).plan()


def test_a_late_step_pushes_the_later_ones_back_and_a_silent_worker_is_not_running(
    platform: RunningPlatform,
) -> None:
    async def scenario() -> tuple[float, float, bool]:
        conn = await connect(platform.database_url)
        try:
            tenant = await ensure_tenant(conn, "first-run-late")
            await training_jobs.plan(conn, tenant.id, PURPOSE, DemoOptions().steps())
            # Planned an hour ago, and the LTV step still not done: its worker beats.
            await conn.execute(
                "UPDATE training_jobs SET ready_by = now() - interval '1 hour' "
                "WHERE tenant_id = $1",
                tenant.id,
            )
            await training_jobs.beat(conn, tenant.id, [("ltv", 45.0), ("churn", 30.0)])
            ltv = await training_jobs.latest(conn, tenant.id, "ltv")
            churn = await training_jobs.latest(conn, tenant.id, "churn")
            # Then the worker goes silent.
            await conn.execute(
                "UPDATE training_jobs SET heartbeat_at = now() - interval '2 minutes' "
                "WHERE tenant_id = $1",
                tenant.id,
            )
            silent = await training_jobs.latest(conn, tenant.id, "ltv")
            assert ltv.live and churn.live and not silent.live
            return (
                (ltv.ready_by - ltv.seen_at).total_seconds(),
                (churn.ready_by - churn.seen_at).total_seconds(),
                silent.status == "running",
            )
        finally:
            await conn.close()

    ltv_left, churn_left, still_marked_running = run(scenario())
    assert abs(ltv_left) < 1  # overdue: "taking longer than the estimate"
    assert 29 < churn_left <= 30  # now + its own 30 s, not an hour ago + 30 s
    assert still_marked_running  # the row stays; readers see it is not live
