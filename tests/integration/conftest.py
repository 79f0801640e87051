"""One PostgreSQL and one Ray (with the six Serve apps) for the whole integration session.

The apps are started by the same `Platform` code that `kiki up` runs, on free ports, so
these tests cover the launcher too.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import asyncpg
import pytest

from kiki.auth import TENANT_ADMIN, Scope, create_api_key
from kiki.config import Settings
from kiki.db.embedded import free_port
from kiki.db.pool import connect
from launcher.platform import Platform
from tests.conftest import S3Server

# Distinctive values of the secret settings, which test_secret_leaks.py looks for everywhere
# the platform writes or answers. None changes what the platform does: no SMTP host, Twilio
# SID or FCM project is set, so those channels stay off; Stripe's API key stays unset (the
# billing tests expect payments unconfigured; test_secret_leaks.py covers it in-process).
SECRETS: dict[str, str] = {
    "stripe_webhook_secret": "whsec_leaktest_7c1f3e9d",
    "smtp_password": "smtp-leaktest-5d2a9b41",
    "twilio_auth_token": "twilio-leaktest-8e4c1d07",
    "fcm_access_token": "fcm-leaktest-3b7f0a26",
    "secret_key": base64.urlsafe_b64encode(b"kiki-leaktest-fernet-key-32bytes").decode(),
}
DATABASE_PASSWORD = "pg-leaktest-9a6e2c53"


def with_password(url: str) -> str:
    """`url` with DATABASE_PASSWORD in it, unless it has a password already. The embedded
    server trusts local connections, so the password is carried (and must be hidden) but not
    checked."""
    parts = urlsplit(url)
    if parts.password is not None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{DATABASE_PASSWORD}@{host}"))


@dataclass
class RunningPlatform:
    settings: Settings
    base_url: str
    grpc_target: str
    metrics_url: str
    api_key: str
    database_url: str
    ray_session_dir: Path


def run(coro):
    return asyncio.run(coro)


async def new_key(url: str, tenant: str, scopes: Iterable[Scope] = TENANT_ADMIN) -> str:
    """A key for the tenant (created if new): a full tenant admin unless scopes are named."""
    conn = await connect(url)
    try:
        return (await create_api_key(conn, tenant, scopes=scopes))[1]
    finally:
        await conn.close()


async def platform_spend_mismatches(conn: asyncpg.Connection, tenant: str) -> list[dict]:
    """The (tick, campaign) pairs of the audit trail whose platforms' spend so far does not add
    up to the campaign's (none, when each pool's spend is kept, across restarts too). Ticks
    are told apart by time: a restarted shard numbers its ticks from 1 again."""
    rows = await conn.fetch(
        """SELECT decided_at, campaign_id, max(spent_micros) AS spent,
                  sum(platform_spent) AS parts
           FROM (SELECT DISTINCT decided_at, campaign_id, platform, spent_micros,
                        platform_spent_micros AS platform_spent
                 FROM flow_decisions WHERE tenant_id = $1) per_platform
           GROUP BY decided_at, campaign_id HAVING max(spent_micros) <> sum(platform_spent)""",
        UUID(tenant),
    )
    return [dict(r) for r in rows]


@pytest.fixture(scope="session")
def platform(
    pg_url: str, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPlatform]:
    """The platform keeps its artifacts (models, creative images) in S3, as on a cluster, and
    runs with every secret setting set (SECRETS)."""
    home: Path = tmp_path_factory.mktemp("kiki-home")
    settings = Settings(
        home=home,
        database_url=with_password(pg_url),
        artifacts_url=f"s3://{s3_server.bucket()}/kiki",
        artifacts_endpoint_url=s3_server.endpoint_url,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        auth_cache_ttl_s=0,
        # A generate past this is a 503: the default (300 s) waits for a GPU replica's cold
        # start, and the CPU placeholder pipeline here takes seconds, more on a busy machine.
        creative_timeout_s=30.0,
        **SECRETS,
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
            ray_session_dir=Path(platform.session_dir or ""),
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
