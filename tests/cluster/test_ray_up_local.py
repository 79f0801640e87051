"""cluster.local.yaml is real: cluster.yaml's node types as Ray's fake multi-node cluster on
this machine, KIKI put on it with `kiki up` from a shell holding RAY_ADDRESS, requests through
the proxy, `kiki status` showing where everything runs, `kiki down` taking it all off.

Everything runs as the user's commands would, in subprocesses. `ray up`/`ray down` cannot
drive this provider in Ray 2.60 (cluster.local.yaml says why), so the head starts as Ray
documents the fake cluster: `RAY_FAKE_CLUSTER=1 ray start --head --block
--autoscaling-config=...`. Its autoscaler starts the other nodes as raylets of its own process
group, so ending that group takes the whole cluster down without `ray stop`, which would also
stop the other Ray clusters on this machine. The head's 2 CPUs cannot hold the YAML's requests
(about 5.5 CPUs for the six apps), so the deploy proves `kiki up` kept them: the autoscaler
adds workers and the replicas land on several nodes. Then GPU autoscaling: a generate request
brings a GPU node for a `CreativeGenerator` replica, and idleness takes both away (scale-down
delays shortened; on this CPU-only machine torch runs the tiny pipeline on the CPU, even on
the "GPU" node). (`serve deploy serve_config.yaml` is tests/cluster/test_multi_node.py's.)
"""

from __future__ import annotations

import asyncio
import json
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

from actors.registry import kiki_actors
from kiki.auth import authenticate
from kiki.config import APPS, SERVICES, Settings
from kiki.db.embedded import free_port, port_in_use
from kiki.db.pool import connect
from kiki.value import registry
from kiki.value.features import FEATURE_NAMES
from launcher.dashboard import ServeRest, nodes, state_api
from tests.cluster.nodes import node_env, wait_for
from tests.conftest import REPO, S3Server
from tests.integration.test_value_api import CUT, synthetic_purchases, tiny_model

BIN = Path(sys.executable).parent
DEADLINE_S = 420  # head start, worker nodes added on demand, six apps deployed on 2 cores
GENERATOR = "CreativeGenerator"


def kiki(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`kiki ARGS` as the user runs it; it must succeed."""
    done = subprocess.run([str(BIN / "kiki"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"kiki {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


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

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            env=node_env(), capture_output=True, text=True, timeout=timeout,
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


def _edited_copy(name: str, temp_dir: str, edit: Callable[[dict], None]) -> str:
    """A copy of a repository YAML with `edit` applied."""
    data = yaml.safe_load((REPO / name).read_text())
    edit(data)
    path = os.path.join(temp_dir, name)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextmanager
def fake_cluster(pg_url: str, store: dict[str, str]) -> Iterator[FakeCluster]:
    """The head of cluster.local.yaml's cluster, on free ports."""
    temp_dir = tempfile.mkdtemp(prefix="kr", dir="/tmp")  # short: Ray's socket paths are long
    gcs_port, dashboard_port = free_port(), free_port()

    def quick(cluster: dict) -> None:
        """Free ports (the fixed ones may be busy on a shared machine), and an idle node
        removed after 6 s instead of a minute."""
        cluster["provider"]["gcs_address"] = f"127.0.0.1:{gcs_port}"
        cluster["idle_timeout_minutes"] = 0.1

    cluster_yaml = _edited_copy("cluster.local.yaml", temp_dir, quick)
    head = yaml.safe_load((REPO / "cluster.local.yaml").read_text())
    head_resources = head["available_node_types"][head["head_node_type"]]["resources"]
    # As a user's shell would be: nothing of this session's own settings. Every node starts
    # from the head's environment, so its replicas get KIKI_DATABASE_URL and the store.
    env = node_env(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", HF_HUB_OFFLINE="1",
                   KIKI_DATABASE_URL=pg_url, **store)  # fmt: skip
    log = open(os.path.join(temp_dir, "head.log"), "wb")  # noqa: SIM115 - the head's lifetime
    process = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", f"--num-cpus={head_resources['CPU']}",
         f"--num-gpus={head_resources['GPU']}", f"--temp-dir={temp_dir}",
         f"--autoscaling-config={cluster_yaml}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    cluster = FakeCluster(process, temp_dir, gcs_port, f"http://127.0.0.1:{dashboard_port}")
    try:
        yield cluster
    finally:
        cluster.down()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def quick_generator(config: dict) -> None:
    """serve_config.yaml with the GPU generator scaled to zero 2 s after its last request
    (300 s in the YAML), so the test sees its GPU node go."""
    create = next(a for a in config["applications"] if a["name"] == "create")
    generator = next(d for d in create["deployments"] if d["name"] == GENERATOR)
    generator["autoscaling_config"].update(downscale_delay_s=2, upscale_delay_s=0)


def alive_kiki_actors(dashboard: str) -> list[str]:
    return [a.name or a.actor_id for a in kiki_actors(state_api(dashboard)) if a.state == "ALIVE"]


@pytest.mark.timeout(DEADLINE_S + 480)
def test_kiki_up_status_down_on_the_fake_cluster(
    fresh_db: str, s3_server: S3Server, tmp_path: Path
) -> None:
    store = {
        "KIKI_ARTIFACTS_URL": f"s3://{s3_server.bucket()}/kiki",
        "KIKI_ARTIFACTS_ENDPOINT_URL": s3_server.endpoint_url,
    }
    http_port = free_port()
    with fake_cluster(fresh_db, store) as cluster:
        # The user's shell on a node of the cluster: RAY_ADDRESS, the database, the store.
        env = node_env(
            RAY_ADDRESS=f"127.0.0.1:{cluster.gcs_port}", KIKI_DATABASE_URL=fresh_db,
            KIKI_HOME=str(tmp_path / "home"), KIKI_HTTP_PORT=str(http_port),
            KIKI_GRPC_PORT=str(free_port()), **store,
            KIKI_SERVE_CONFIG=_edited_copy("serve_config.yaml", cluster.temp_dir, quick_generator),
        )  # fmt: skip
        api_key = kiki(["keys", "create", "--tenant", "cluster-test"], env).stdout.strip()
        settings = Settings(
            home=tmp_path, artifacts_url=store["KIKI_ARTIFACTS_URL"],
            artifacts_endpoint_url=store["KIKI_ARTIFACTS_ENDPOINT_URL"],
        )  # fmt: skip
        asyncio.run(register_model(fresh_db, api_key, settings, tmp_path / "model"))

        up = kiki(["up", "--detach", "--no-demo"], env, timeout=DEADLINE_S)
        assert "CPU and GPU as serve_config.yaml asks" in up.stdout, up.stdout
        assert up.stdout.count("healthy") == len(APPS), up.stdout

        base = f"http://127.0.0.1:{http_port}"
        for app in SERVICES:
            resp = httpx.get(f"{base}/{app}/health", timeout=30)
            assert resp.status_code == 200, (app, resp.text)
        root = httpx.get(f"{base}/health", timeout=30)  # the proxy root: every service
        assert root.status_code == 200 and "syncvalue" in root.json()["services"], root.text
        with httpx.Client(base_url=base, timeout=30, headers={"X-API-Key": api_key}) as api:
            for request in REQUESTS:
                request(api)

        # The apps did not all fit on the head: the autoscaler added worker nodes, and
        # `kiki status` shows the replicas on several of them and every actor placed.
        status = cluster.run("ray", "status", f"--address=127.0.0.1:{cluster.gcs_port}")
        assert "cpu_worker" in status.stdout, status.stdout + status.stderr
        report = json.loads(kiki(["status", "--json"], env).stdout)
        assert report["placement_error"] is None, report
        replicas = [p for p in report["placement"] if p["kind"] == "replica"]
        actors = [p for p in report["placement"] if p["kind"] == "actor"]
        assert {r["name"].split("/")[0] for r in replicas} == set(APPS)
        assert len({r["node_id"] for r in replicas}) >= 2, replicas
        assert all(r["node_ip"] for r in replicas), replicas
        assert actors and all(a["node_id"] and a["node_ip"] for a in actors), actors
        assert sorted(a["name"] for a in actors) == sorted(alive_kiki_actors(cluster.dashboard))
        text = kiki(["status"], env).stdout
        assert "replica create/CreateIngress" in text and "NODE" in text, text

        # GPU autoscaling: no GPU node until a generate request needs a generator replica
        # (the YAML's `num_gpus: 1` kept at zero replicas), none once it has been idle.
        def gpu_nodes() -> list[str]:
            alive = [n for n in nodes(state_api(cluster.dashboard)) if n.state == "ALIVE"]
            return [n.node_id for n in alive if (n.resources_total or {}).get("GPU")]

        def generators() -> list[tuple[str, str]]:
            app = ServeRest(cluster.dashboard).details().applications["create"]
            return [(r.node_id or "", str(r.state.value))
                    for r in app.deployments[GENERATOR].replicas]  # fmt: skip

        assert gpu_nodes() == [] and generators() == []
        body = {
            "product": {"name": "Test Product"},
            "brand": {"name": "TechCorp", "primary_colors": ["#3b82f6"]},
            "platform": "tiktok_9_16", "variants": 1, "steps": 2,
        }  # fmt: skip
        made = httpx.post(
            f"{base}/create/api/v1/generate", json=body, headers={"X-API-Key": api_key}, timeout=300
        )  # a node to add, a replica to start, the pipeline to build
        assert made.status_code == 201, made.text
        (gpu_node,) = wait_for(gpu_nodes, 10, "the GPU node the autoscaler added")
        assert generators() == [(gpu_node, "RUNNING")], gpu_node
        wait_for(lambda: not generators() and not gpu_nodes(), 120,
                 "the idle generator replica and its GPU node gone", every_s=2)  # fmt: skip

        assert "KIKI stopped." in kiki(["down"], env).stdout
        apps = ServeRest(cluster.dashboard).details().applications
        assert not set(apps) & set(APPS), sorted(apps)
        wait_for(lambda: not alive_kiki_actors(cluster.dashboard), 30, "no KIKI actor alive")
        # Again with no `kiki up` behind it (after `serve deploy` or `serve shutdown`): the
        # same clean-up, idempotent.
        again = kiki(["down"], env).stdout
        assert "KIKI is off the cluster." in again and "none left" in again, again

        cluster.down()
        assert cluster.processes() == []
        assert not port_in_use(cluster.gcs_port, "127.0.0.1")
