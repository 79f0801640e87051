"""The user's path: `kiki up --detach --no-demo`, every health endpoint (the root's too), the
printed curl, `kiki down`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kiki.config import APPS, SERVICES
from kiki.db.embedded import free_port, port_in_use

KIKI = [sys.executable, "-m", "launcher.cli"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KIKI_", "RAY_"))}
    return {
        **inherited,
        "KIKI_HOME": str(tmp_path / "home"),
        "KIKI_PG_PORT": str(free_port()),
        "KIKI_HTTP_PORT": str(free_port()),
        "KIKI_GRPC_PORT": str(free_port()),
        "KIKI_METRICS_PORT": str(free_port()),
    }


def kiki(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*KIKI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_up_detach_health_curl_down(env: dict[str, str]) -> None:
    http = int(env["KIKI_HTTP_PORT"])
    try:
        # The first-run demo trains models for minutes: tests/integration/test_first_run.py
        # runs it small; here --no-demo must reach the background process.
        up = kiki(["up", "--detach", "--no-demo"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout
        assert "first run" not in out
        for step in ("PostgreSQL", "migrations", "Ray", "Serve"):
            assert f"==> {step}" in out
        for service in SERVICES:
            assert f"http://127.0.0.1:{http}/{service}" in out
        assert out.count("healthy") == len(APPS)

        for service in SERVICES:
            resp = httpx.get(f"http://127.0.0.1:{http}/{service}/health", timeout=10)
            assert resp.status_code == 200 and resp.json()["checks"]["database"] == "ok"
        root = httpx.get(f"http://127.0.0.1:{http}/health", timeout=10)  # every service
        assert root.status_code == 200 and set(root.json()["checks"].values()) == {"ok"}

        # The ready-to-paste curl works as printed.
        curl_line = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("curl "))
        argv = shlex.split(curl_line)
        header, url = argv[argv.index("-H") + 1], argv[-1]
        name, value = header.split(": ", 1)
        resp = httpx.get(url, headers={name: value}, timeout=10)
        assert resp.status_code == 200 and resp.json()["tenant"] == "dev"

        key = kiki(["keys", "create", "--tenant", "e2e"], env).stdout.strip()
        resp = httpx.get(f"http://127.0.0.1:{http}/flow/api/v1/whoami",
                         headers={"X-API-Key": key}, timeout=10)  # fmt: skip
        assert resp.json()["tenant"] == "e2e"

        status = kiki(["status", "--json"], env)
        assert status.returncode == 0 and '"healthy": true' in status.stdout
    finally:
        down = kiki(["down"], env)
    assert down.returncode == 0, down.stderr
    assert "KIKI stopped." in down.stdout
    assert kiki(["status"], env).returncode == 3
    assert not port_in_use(http, "0.0.0.0")
    assert not port_in_use(int(env["KIKI_PG_PORT"]))
