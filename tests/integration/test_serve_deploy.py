"""serve_config.yaml is real: `serve deploy` puts it on a `ray start --head` cluster.

`ray start --block` keeps the head in the foreground, so ending that one process takes its
cluster down without `ray stop`, which would also stop this session's own Ray.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from kiki.config import SERVICES
from kiki.db.embedded import free_port, port_in_use
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def test_serve_deploy_on_ray_start_head(pg_url: str) -> None:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    http_port = config["http_options"]["port"]
    grpc_port = config["grpc_options"]["port"]
    for port in (http_port, grpc_port):
        if port_in_use(port, "0.0.0.0"):
            pytest.fail(f"port {port} from serve_config.yaml is busy; stop what uses it")

    temp_dir = tempfile.mkdtemp(prefix="kr", dir="/tmp")  # short: Ray's socket paths are long
    dashboard = f"http://127.0.0.1:{free_port()}"
    # As a user's shell would be: nothing of this session's own Serve settings (ingress files).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    env = {**inherited, "RAY_AUTH_MODE": "token", "KIKI_DATABASE_URL": pg_url}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard.rsplit(':', 1)[1]}",
         "--num-cpus=8", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            deploy = subprocess.run(
                [str(BIN / "serve"), "deploy", str(REPO / "serve_config.yaml"), "-a", dashboard],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if deploy.returncode == 0:
                break
            assert time.monotonic() < deadline, deploy.stderr[-2000:]
            time.sleep(2)  # the dashboard is still starting

        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            out = subprocess.run(
                [str(BIN / "serve"), "status", "-a", dashboard],
                env=env, capture_output=True, text=True, timeout=60,
            ).stdout  # fmt: skip
            apps = (yaml.safe_load(out) or {}).get("applications") or {}
            statuses = {name: app["status"] for name, app in apps.items()}
            if sorted(statuses) == sorted(SERVICES) and set(statuses.values()) == {"RUNNING"}:
                break
            assert "DEPLOY_FAILED" not in statuses.values(), out
            time.sleep(2)
        assert set(statuses.values()) == {"RUNNING"}, statuses

        resp = httpx.get(f"http://127.0.0.1:{http_port}/shield/health", timeout=30)
        assert resp.status_code == 200
        assert resp.json()["checks"]["database"] == "ok"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
