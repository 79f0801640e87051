"""A replica whose database is unreachable answers /health with 503 and names the check."""

from __future__ import annotations

import httpx
from ray import serve

from deployments.shield import ShieldIngress
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
    finally:
        serve.delete("broken-shield")
