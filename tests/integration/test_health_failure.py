"""Health tells the truth: a replica whose dependency is unreachable answers /health with 503
and names the check, and Serve's own health check of the replica uses the same probes."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from ray import serve

from deployments._serve import ServiceIngress
from deployments.root.app import platform_health
from deployments.shield.app import ShieldIngress
from kiki.db.embedded import free_port
from tests.integration.conftest import RunningPlatform


def test_health_is_503_and_names_the_failing_check(platform: RunningPlatform) -> None:
    dead = f"postgresql://kiki@127.0.0.1:{free_port()}/kiki"
    broken = ShieldIngress.options(
        name="BrokenShield",
        ray_actor_options={
            "num_cpus": 0.05,
            "runtime_env": {"env_vars": {"KIKI_DATABASE_URL": dead}},
        },
    )
    serve.run(broken.bind(), name="broken-shield", route_prefix="/broken-shield")
    try:
        resp = httpx.get(f"{platform.base_url}/broken-shield/health", timeout=30)
        assert resp.status_code == 503
        body = resp.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["database"].startswith("failed: cannot reach PostgreSQL")
        # The healthy apps are unaffected.
        assert httpx.get(f"{platform.base_url}/shield/health", timeout=10).status_code == 200
        # The proxy root's report, with this replica standing in for SyncShield: 503 naming
        # it and its failing check, the others ok.
        report = asyncio.run(platform_health({"shield": serve.get_app_handle("broken-shield")}, 20))
        assert report.status == "unavailable"
        assert report.checks["syncshield"].startswith(
            "unavailable: database: failed: cannot reach PostgreSQL"
        )
        assert {v for k, v in report.checks.items() if k != "syncshield"} == {"ok"}
        assert report.services["syncshield"].prefix == "/shield"
    finally:
        serve.delete("broken-shield")


def test_health_checks_what_each_app_depends_on(platform: RunningPlatform) -> None:
    """Not only the database: the budget shards and the guard (shield), every bid-loop shard's
    last tick (flow), the automation and retraining actors and that serving models load
    (engage, value)."""
    expected = {
        "shield": {"budget_shard_0", "budget_shard_1", "guard"},
        "flow": {"bidloop_shard_0", "bidloop_shard_1"},
        "value": {"ltv_models", "retrainer"},
        "engage": {"churn_models", "automation"},
    }
    for app, names in expected.items():
        resp = httpx.get(f"{platform.base_url}/{app}/health", timeout=30)
        assert resp.status_code == 200, resp.text
        checks = resp.json()["checks"]
        assert names | {"database"} <= set(checks), checks
        assert set(checks.values()) == {"ok"}, checks


def test_serves_own_health_check_fails_once_a_replica_is_past_its_grace(
    platform: RunningPlatform,
) -> None:
    """Serve replaces a replica whose check_health raises: a replica that cannot reach a
    dependency is given health_grace_s to start, then reported."""

    class Replica(ServiceIngress):
        service = "grace-test"

    async def dead_shard() -> dict[str, str]:
        return {"budget_shard_1": "failed: budget shard 1 did not answer within 3 s"}

    async def scenario() -> None:
        replica = Replica()
        runtime = replica.runtime
        runtime.settings = platform.settings.model_copy(update={"health_grace_s": 60})
        runtime.probes["budget_shards"] = dead_shard
        await replica.check_health()  # within its grace: tolerated
        runtime.settings = platform.settings.model_copy(update={"health_grace_s": 0})
        with pytest.raises(RuntimeError, match="budget_shard_1"):
            await replica.check_health()
        del runtime.probes["budget_shards"]
        await replica.check_health()  # healthy again
        await runtime.close()

    asyncio.run(scenario())
