"""Hosting for the serving benchmarks: an app on a local Ray Serve (with the ingress `kiki up`
would choose) and the same FastAPI app on plain uvicorn in its own process."""

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
from typing import Any

import httpx

from deployments.ingress import configure_ingress
from kiki.config import Settings
from kiki.db.embedded import EmbeddedPostgres, free_port
from kiki.db.migrate import migrate_url
from kiki.errors import Unavailable

# Lift the per-key rate limit: the benchmarks measure the servers, not the limiter.
BENCH_ENV = {
    "KIKI_API_RATE_PER_S": "1e9",
    "KIKI_API_BURST": "1000000000",
    "KIKI_AUTH_CACHE_TTL_S": "300",
}


@contextmanager
def local_ray(namespace: str) -> Iterator[None]:
    """A local Ray for this process only (never a cluster found on the machine)."""
    import ray

    ray.init(
        address="local",
        namespace=namespace,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def local_serve(ingress: str, grpc_servicers: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """A local Ray with Serve started; yields the HTTP URL, gRPC target and ingress chosen."""
    from ray import serve

    home = tempfile.mkdtemp(prefix="kiki-bench-home-")
    chosen = configure_ingress(Settings(home=Path(home), ingress=ingress))
    http_port, grpc_port = free_port(), free_port()
    try:
        with local_ray("kiki"):
            serve.start(
                http_options={"host": "127.0.0.1", "port": http_port},
                grpc_options={"port": grpc_port, "grpc_servicer_functions": grpc_servicers or []},
            )
            try:
                yield {
                    "http": f"http://127.0.0.1:{http_port}",
                    "grpc": f"127.0.0.1:{grpc_port}",
                    "ingress": chosen,
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
