"""cluster.local.yaml is real: cluster.yaml's node types as Ray's fake multi-node cluster on
this machine, serve_config.yaml deployed on it with `serve deploy`, requests through the proxy.

Everything runs as the user's commands would, in subprocesses. `ray up`/`ray down` cannot
drive this provider in Ray 2.60 (cluster.local.yaml says why), so the head starts as Ray
documents the fake cluster: `RAY_FAKE_CLUSTER=1 ray start --head --block
--autoscaling-config=...`. Its autoscaler starts the other nodes as raylets of its own process
group, so ending that group takes the whole cluster down without `ray stop`, which would also
stop the other Ray clusters on this machine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from kiki.auth import authenticate
from kiki.config import SERVICES, Settings
from kiki.db.embedded import free_port, port_in_use
from kiki.db.pool import connect
from kiki.value import registry
from kiki.value.features import FEATURE_NAMES
from tests.cluster.nodes import apps_running, wait_for
from tests.conftest import REPO, S3Server
from tests.integration.test_value_api import CUT, synthetic_purchases, tiny_model

BIN = Path(sys.executable).parent
DEADLINE_S = 420  # head start, worker nodes added on demand, six apps deployed on 2 cores


def shield_allocate(api: httpx.Client) -> None:
    resp = api.post(
        "/shield/api/v1/allocate",
        json={"campaign_id": "camp_001", "budget": 1000, "currency": "USD"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["budget"]["micros"] == 1_000_000_000
    resp = api.get("/shield/api/v1/budget/camp_001")
    assert resp.status_code == 200, resp.text
    assert resp.json()["campaign_id"] == "camp_001"


def ltv_prediction(api: httpx.Client) -> None:
    """The tenant's purchases in, one customer valued by the model registered before the
    deploy (its weights in S3, fetched by a scorer replica on whichever node it runs)."""
    resp = api.post("/value/api/v1/transactions", json={"transactions": PURCHASES})
    assert resp.status_code == 201, resp.text
    body = {"customer_id": "cust_0001", "as_of": CUT.isoformat()}
    resp = api.post("/value/api/v1/predict", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["model_version"] == 1 and resp.json()["source"] == "history"


# The calls made through the proxy once every app is up, each with a tenant's API key.
REQUESTS: tuple[Callable[[httpx.Client], None], ...] = (shield_allocate, ltv_prediction)
PURCHASES = synthetic_purchases(customers=200, seed=3)


async def register_model(pg_url: str, api_key: str, settings: Settings, folder: Path) -> None:
    """A small LTV model in production for the key's tenant, its files in the store."""
    url, reference = tiny_model(PURCHASES, folder, settings)
    conn = await connect(pg_url)
    try:
        tenant = (await authenticate(conn, api_key)).tenant
        record = await registry.register(
            conn, tenant.id, metrics={}, feature_schema=list(FEATURE_NAMES),
            config={"currency": "USD"}, calibration_end=CUT, horizon_days=90, data_window={},
            artifact_url=url, reference=reference,
        )  # fmt: skip
        await registry.promote(conn, tenant.id, record.version)
    finally:
        await conn.close()


@dataclass
class FakeCluster:
    head: subprocess.Popen[bytes]
    temp_dir: str
    gcs_port: int
    dashboard: str
    http_port: int
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def processes(self) -> list[int]:
        """Our cluster's processes still alive: every one names its private temp dir."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and self.temp_dir in (proc / "cmdline").read_text():
                    found.append(int(proc.name))
            except OSError:
                continue  # gone meanwhile
        return found

    def down(self) -> None:
        """End the head's process group, then any process of ours that left it."""
        for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.head.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.head.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        deadline = time.monotonic() + 20
        while (pids := self.processes()) and time.monotonic() < deadline:
            time.sleep(1)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _copy_with_ports(name: str, temp_dir: str, edit: Callable[[dict], None]) -> str:
    """A copy of a repository YAML with only its ports changed (the fixed ones may be busy on
    a shared machine)."""
    data = yaml.safe_load((REPO / name).read_text())
    edit(data)
    path = os.path.join(temp_dir, name)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextmanager
def fake_cluster(pg_url: str, store: dict[str, str]) -> Iterator[tuple[FakeCluster, str]]:
    """The head of cluster.local.yaml's cluster, and a serve_config.yaml copy on free ports."""
    temp_dir = tempfile.mkdtemp(prefix="kr", dir="/tmp")  # short: Ray's socket paths are long
    gcs_port, http_port, grpc_port = free_port(), free_port(), free_port()
    dashboard_port = free_port()
    cluster_yaml = _copy_with_ports(
        "cluster.local.yaml", temp_dir,
        lambda c: c["provider"].update(gcs_address=f"127.0.0.1:{gcs_port}"),
    )  # fmt: skip

    def serve_ports(config: dict) -> None:
        config["http_options"]["port"] = http_port
        config["grpc_options"]["port"] = grpc_port

    serve_yaml = _copy_with_ports("serve_config.yaml", temp_dir, serve_ports)
    head = yaml.safe_load((REPO / "cluster.local.yaml").read_text())
    head_resources = head["available_node_types"][head["head_node_type"]]["resources"]
    # As a user's shell would be: nothing of this session's own Serve settings. Every node
    # starts from the head's environment, so its replicas get KIKI_DATABASE_URL.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    env = {**inherited, "RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": "token",
           "KIKI_DATABASE_URL": pg_url, **store}  # fmt: skip
    log = open(os.path.join(temp_dir, "head.log"), "wb")  # noqa: SIM115 - the head's lifetime
    process = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", f"--num-cpus={head_resources['CPU']}",
         f"--num-gpus={head_resources['GPU']}", f"--temp-dir={temp_dir}",
         f"--autoscaling-config={cluster_yaml}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    cluster = FakeCluster(
        process, temp_dir, gcs_port, f"http://127.0.0.1:{dashboard_port}", http_port, env
    )
    try:
        yield cluster, serve_yaml
    finally:
        cluster.down()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _serve_deploy(cluster: FakeCluster, serve_yaml: str, deadline: float) -> None:
    while True:
        deploy = cluster.run("serve", "deploy", serve_yaml, "-a", cluster.dashboard)
        if deploy.returncode == 0:
            return
        assert cluster.head.poll() is None, "the head exited; see head.log in its temp dir"
        assert time.monotonic() < deadline, deploy.stderr[-2000:]
        time.sleep(2)  # the dashboard is still starting


@pytest.mark.timeout(DEADLINE_S + 180)
def test_fake_cluster_serves_serve_config(
    fresh_db: str, s3_server: S3Server, tmp_path: Path
) -> None:
    created = subprocess.run(
        [str(BIN / "kiki"), "keys", "create", "--tenant", "cluster-test"],
        env={**os.environ, "KIKI_DATABASE_URL": fresh_db}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    api_key = created.stdout.strip()
    store = {
        "KIKI_ARTIFACTS_URL": f"s3://{s3_server.bucket()}/kiki",
        "KIKI_ARTIFACTS_ENDPOINT_URL": s3_server.endpoint_url,
    }
    settings = Settings(
        home=tmp_path, artifacts_url=store["KIKI_ARTIFACTS_URL"],
        artifacts_endpoint_url=store["KIKI_ARTIFACTS_ENDPOINT_URL"],
    )  # fmt: skip
    asyncio.run(register_model(fresh_db, api_key, settings, tmp_path / "model"))

    with fake_cluster(fresh_db, store) as (cluster, serve_yaml):
        deadline = time.monotonic() + DEADLINE_S
        _serve_deploy(cluster, serve_yaml, deadline)
        wait_for(
            lambda: apps_running(cluster.run("serve", "status", "-a", cluster.dashboard).stdout),
            max(1.0, deadline - time.monotonic()), "every app RUNNING", every_s=3,
        )  # fmt: skip

        base = f"http://127.0.0.1:{cluster.http_port}"
        for app in SERVICES:
            resp = httpx.get(f"{base}/{app}/health", timeout=30)
            assert resp.status_code == 200, (app, resp.text)
        root = httpx.get(f"{base}/health", timeout=30)  # the proxy root: every service
        assert root.status_code == 200 and "syncvalue" in root.json()["services"], root.text
        with httpx.Client(base_url=base, timeout=30, headers={"X-API-Key": api_key}) as api:
            for request in REQUESTS:
                request(api)

        # The apps did not all fit on the head: the autoscaler added worker nodes.
        status = cluster.run("ray", "status", f"--address=127.0.0.1:{cluster.gcs_port}")
        assert "cpu_worker" in status.stdout, status.stdout + status.stderr

        cluster.down()
        assert cluster.processes() == []
        assert not port_in_use(cluster.gcs_port, "127.0.0.1")
