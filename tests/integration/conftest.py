"""One PostgreSQL and one Ray (with the six Serve apps) for the whole integration session.

The apps are started by the same `Platform` code that `kiki up` runs, on free ports, so
these tests cover the launcher too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kiki.auth import create_api_key
from kiki.config import Settings
from kiki.db.embedded import free_port
from kiki.db.pool import connect
from launcher.platform import Platform
from tests.conftest import S3Server


@dataclass
class RunningPlatform:
    settings: Settings
    base_url: str
    grpc_target: str
    metrics_url: str
    api_key: str
    database_url: str


def run(coro):
    return asyncio.run(coro)


async def new_key(url: str, tenant: str) -> str:
    conn = await connect(url)
    try:
        return (await create_api_key(conn, tenant))[1]
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def platform(
    pg_url: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    """The platform keeps its artifacts (models, creative images) in S3, as on a cluster."""
    home: Path = tmp_path_factory.mktemp("kiki-home")
    settings = Settings(
        home=home,
        database_url=pg_url,
        artifacts_url=f"s3://{s3_server.bucket()}/kiki",
        artifacts_endpoint_url=s3_server.endpoint_url,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        auth_cache_ttl_s=0,
    )
    platform = Platform(settings, echo=print)
    try:
        platform.start()
        yield RunningPlatform(
            settings=settings,
            base_url=f"http://127.0.0.1:{settings.http_port}",
            grpc_target=f"127.0.0.1:{settings.grpc_port}",
            metrics_url=f"http://127.0.0.1:{settings.metrics_port}/metrics",
            api_key=platform.dev_key or "",
            database_url=pg_url,
        )
    finally:
        platform.stop()


@pytest.fixture(scope="session")
def localstripe() -> Iterator[str]:
    """localstripe, a Stripe-compatible server (GPL: run as a test-time process, never
    imported), on a free port; its data is reset with `DELETE /_config/data`."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                httpx.delete(f"{url}/_config/data", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("localstripe did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
