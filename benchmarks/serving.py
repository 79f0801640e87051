"""Hosting for the benchmarks: a local Ray, or a private 3-node Ray cluster on this machine;
an app on Ray Serve (with the ingress `kiki up` would choose) and the same FastAPI app on plain
uvicorn in its own process; a scratch PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from deployments.ingress import configure_ingress
from kiki.config import Settings
from kiki.db.embedded import EmbeddedPostgres, free_port
from kiki.db.migrate import migrate_url
from kiki.errors import Unavailable

if TYPE_CHECKING:
    from ray._private.node import Node
    from ray.cluster_utils import Cluster

# Lift the per-key rate limit: the benchmarks measure the servers, not the limiter.
BENCH_ENV = {
    "KIKI_API_RATE_PER_S": "1e9",
    "KIKI_API_BURST": "1000000000",
    "KIKI_AUTH_CACHE_TTL_S": "300",
}


@contextmanager
def local_ray(namespace: str, dashboard: bool = False) -> Iterator[None]:
    """A local Ray for this process only (never a cluster found on the machine); `dashboard`
    for Ray's state API (which node holds an actor, its pid)."""
    import ray

    ray.init(
        address="local",
        namespace=namespace,
        include_dashboard=dashboard,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def local_cluster() -> Iterator[tuple[Cluster, Path]]:
    """A head node in a private temp folder: RAY_TMPDIR also keeps the cluster's address file
    out of /tmp/ray, where another process's bare `ray.init()` would join it. The dashboard
    (the state API) and its agent get free ports; the head has no CPUs."""
    import ray
    from ray.cluster_utils import Cluster

    # mkdtemp makes a private (0700) folder; /tmp keeps Ray's socket paths short.
    folder = Path(tempfile.mkdtemp(prefix="kr", dir="/tmp"))  # nosec B108
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(folder)
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": True,
                "dashboard_port": free_port(),
                "dashboard_agent_listen_port": free_port(),
                "env_vars": {"KIKI_HOME": str(folder / "home-head")},
            },
        )
        yield cluster, folder
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(folder, ignore_errors=True)


def add_worker(cluster: Cluster, folder: Path, name: str) -> Node:
    """A worker node with one CPU, a custom resource of its own (`on_worker(name)` places an
    actor there) and a KIKI_HOME of its own (its raylet's environment, inherited by its
    workers): nothing may rely on another node's disk."""
    return cluster.add_node(
        num_cpus=1,
        resources={_resource(name): 1000},
        env_vars={"KIKI_HOME": str(folder / f"home-{name}")},
    )


def on_worker(name: str) -> dict[str, Any]:
    """Actor options that pin an actor (or a Serve replica) to worker `name`."""
    return {"resources": {_resource(name): 1}}


def _resource(name: str) -> str:
    return f"kiki_bench_worker_{name}"


@contextmanager
def three_nodes(namespace: str) -> Iterator[dict[str, str]]:
    """The 3-node cluster the benchmarks compare with one node: a head without CPUs (the
    driver, and Serve's controller and proxy) and workers "a" and "b", this process connected
    to it. Yields node id -> name, to say where each actor ran."""
    import ray

    with local_cluster() as (cluster, folder):
        names = {cluster.head_node.node_id: "head"}
        for worker in ("a", "b"):
            names[add_worker(cluster, folder, worker).node_id] = f"worker {worker}"
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address,
            namespace=namespace,
            log_to_driver=False,
            configure_logging=False,
        )
        yield names


def actor_nodes(namespace: str) -> dict[str, tuple[str, int]]:
    """Each live named actor of `namespace` on the connected Ray: (node id, pid), from Ray's
    state API (the dashboard must run)."""
    import ray
    from ray.util.state import list_actors

    found = list_actors(
        address=ray.get_runtime_context().gcs_address,
        filters=[("ray_namespace", "=", namespace), ("state", "=", "ALIVE")],
        detail=True,
        limit=10_000,
        raise_on_missing_output=False,
    )
    return {a.name: (a.node_id or "", a.pid or 0) for a in found if a.name}


@contextmanager
def local_serve(
    ingress: str, grpc_servicers: list[str] | None = None, nodes: int = 1
) -> Iterator[dict[str, Any]]:
    """Ray Serve on a local Ray (`nodes` 1) or on the 3-node cluster (`nodes` 3, one proxy on
    the head: the workers would all bind the same ports on this machine). Yields the HTTP URL,
    gRPC target, ingress chosen, and node id -> name."""
    import ray
    from ray import serve

    home = tempfile.mkdtemp(prefix="kiki-bench-home-")
    # Before Ray starts: the nodes (and Serve's controller) read the ingress's variables.
    chosen = configure_ingress(Settings(home=Path(home), ingress=ingress))
    http_port, grpc_port = free_port(), free_port()
    hosting = three_nodes("kiki") if nodes > 1 else local_ray("kiki")
    try:
        with hosting as names:
            serve.start(
                proxy_location="HeadOnly",
                http_options={"host": "127.0.0.1", "port": http_port},
                grpc_options={"port": grpc_port, "grpc_servicer_functions": grpc_servicers or []},
            )
            try:
                yield {
                    "http": f"http://127.0.0.1:{http_port}",
                    "grpc": f"127.0.0.1:{grpc_port}",
                    "ingress": chosen,
                    "nodes": names or {ray.get_runtime_context().get_node_id(): "the node"},
                }
            finally:
                serve.shutdown()
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def uvicorn_app(asgi: str, env: dict[str, str]) -> Iterator[str]:
    """`asgi` (module:attribute) on plain uvicorn in its own process, joined to the running
    Ray so it can reach the same actors; yields its URL once /health answers."""
    import ray

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            asgi,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env={
            **os.environ,
            **BENCH_ENV,
            **env,
            "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
            "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
        },
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)  # uvicorn's graceful stop
        process.wait(timeout=30)


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"uvicorn exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise Unavailable(f"{url} not healthy after {timeout_s:.0f}s")


@contextmanager
def scratch_database() -> Iterator[str]:
    """A migrated PostgreSQL in a temporary folder, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="kiki-bench-"))
    server = EmbeddedPostgres(folder / "pgdata", free_port())
    try:
        url = server.start()
        asyncio.run(migrate_url(url))
        yield url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
