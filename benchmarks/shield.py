"""`kiki bench shield`: budget reservations on the bid loop's path vs a plain SQL baseline.

Baseline: the simplest correct cap in PostgreSQL, one conditional
`UPDATE ... SET spent = spent + $1 WHERE spent + $1 <= cap` per reservation, from 64
concurrent connections. Ours: the budget actors as the bid loop calls them, one batched call
per caller and tick; every reservation is written to the ledger (with its idempotency key)
before its call returns. Both run in the same process against the same PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx

from actors.budget import BudgetClient
from benchmarks.common import Result, percentiles
from deployments.ingress import configure_ingress
from kiki.auth import create_api_key
from kiki.config import Settings
from kiki.db.embedded import free_port
from kiki.errors import Unavailable
from kiki.shield.book import BudgetOp

PLATFORMS = ("google_ads", "meta", "tiktok", "linkedin", "amazon")


async def sql_baseline(url: str, campaigns: int, concurrency: int, seconds: float) -> Result:
    conn = await asyncpg.connect(url)
    await conn.execute(
        """DROP TABLE IF EXISTS bench_budget;
           CREATE UNLOGGED TABLE bench_budget (campaign_id text PRIMARY KEY,
               spent bigint NOT NULL, cap bigint NOT NULL)"""
    )
    await conn.copy_records_to_table(
        "bench_budget", records=[(f"c{i}", 0, 10**15) for i in range(campaigns)]
    )
    await conn.close()
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await pool.fetchval(
                "UPDATE bench_budget SET spent = spent + $1 "
                "WHERE campaign_id = $2 AND spent + $1 <= cap RETURNING spent",
                rng.randint(1_000, 100_000),
                f"c{rng.randrange(campaigns)}",
            )
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    await pool.execute("DROP TABLE bench_budget")
    await pool.close()
    p50, p99 = percentiles(latencies)
    return Result(
        f"SQL conditional UPDATE, {concurrency} connections",
        len(latencies),
        elapsed,
        p50,
        p99,
        "latency per reservation",
    )


async def budget_actors(
    url: str,
    tenant_id: str,
    shards: int,
    campaigns: int,
    callers: int,
    batch: int,
    seconds: float,
) -> Result:
    budgets = BudgetClient(url, shards=shards, namespace="kiki-bench")
    await budgets.ready()
    names = [f"bench_{i:05d}" for i in range(campaigns)]
    setup = [
        BudgetOp(
            "allocate", tenant_id, n, f"alloc-{n}", currency="USD", caps_patch={"total": 10**15}
        )
        for n in names
    ]
    for start in range(0, len(setup), 500):
        for result in await budgets.execute(setup[start : start + 500]):
            result.raise_for_error()
    latencies: list[float] = []
    reserved = 0
    deadline = time.perf_counter() + seconds

    async def caller(c: int) -> None:
        nonlocal reserved
        rng = random.Random(c)
        # Like a bid-loop actor: a slice of the campaigns, one batched call per tick.
        mine = names[c::callers]
        tick = 0
        while time.perf_counter() < deadline:
            tick += 1
            ops = [
                BudgetOp(
                    "reserve",
                    tenant_id,
                    rng.choice(mine),
                    f"b{c}-{tick}-{i}",
                    amount_micros=rng.randint(1_000, 100_000),
                    platform=rng.choice(PLATFORMS),
                )
                for i in range(batch)
            ]
            started = time.perf_counter()
            results = await budgets.execute(ops)
            latencies.append((time.perf_counter() - started) * 1000)
            reserved += sum(r.outcome == "granted" for r in results)

    began = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    elapsed = time.perf_counter() - began
    p50, p99 = percentiles(latencies)
    return Result(
        f"budget actors ({shards} shards), {callers} callers x {batch}",
        reserved,
        elapsed,
        p50,
        p99,
        "latency per batched call, i.e. what each reservation in "
        "it waits; every reservation written to the ledger first",
    )


async def create_tenant(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        tenant_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO tenants (id, name) VALUES ($1, $2)",
            tenant_id,
            f"bench-{tenant_id.hex[:8]}",
        )
        return str(tenant_id)
    finally:
        await conn.close()


CHECK_BODY = '{"campaign_id":"bench_%05d","bid_amount":"0.50","platform":"google_ads"}'
RESERVE_BODY = '{"campaign_id":"bench_%05d","amount":"0.01","platform":"meta"}'
PICK = "math.random(0, {last})"


def batch_body(size: int) -> tuple[str, str]:
    """A /reserve/batch body of `size` reservations on random campaigns, as a Lua format."""
    items = ",".join(['{"campaign_id":"bench_%05d","amount":"0.01","platform":"meta"}'] * size)
    return '{"reservations":[' + items + "]}", ", ".join([PICK] * size)


ENDPOINTS: tuple[tuple[str, str, str, str, int], ...] = (
    # (label, path, body, Lua args, reservations per request)
    ("POST /check", "/api/v1/check", CHECK_BODY, PICK, 1),
    ("POST /reserve", "/api/v1/reserve", RESERVE_BODY, PICK, 1),
    ("POST /reserve/batch (100)", "/api/v1/reserve/batch", *batch_body(100), 100),
)


@contextmanager
def serve_and_uvicorn(
    url: str, campaigns: int, ingress: str
) -> Iterator[tuple[str, str, str, str]]:
    """The shield app on Ray Serve and the same FastAPI app on plain uvicorn (its own process),
    both on one local Ray and the same budget actors, with Serve's ingress chosen as `kiki up`
    chooses it; yields (Serve URL, uvicorn URL, key, ingress description).
    Per-key rate limits are lifted: the point is to measure the servers."""
    import ray
    from ray import serve

    from deployments.shield import ShieldIngress

    env = {
        "KIKI_DATABASE_URL": url,
        "KIKI_API_RATE_PER_S": "1e9",
        "KIKI_API_BURST": "1000000000",
        "KIKI_AUTH_CACHE_TTL_S": "300",
    }
    serve_port, plain_port = free_port(), free_port()
    home = tempfile.mkdtemp(prefix="kiki-bench-home-")
    chosen = configure_ingress(Settings(home=Path(home), ingress=ingress))
    ray.init(
        address="local",
        namespace="kiki",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    plain = None
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
        deployment = ShieldIngress.options(
            num_replicas=1,
            max_ongoing_requests=256,
            ray_actor_options={"num_cpus": 0.1, "runtime_env": {"env_vars": env}},
        )
        serve.run(deployment.bind(), name="shield", route_prefix="/shield")
        key = asyncio.run(_key_and_campaigns(url, campaigns))
        plain = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "deployments.shield:api",
                "--host",
                "127.0.0.1",
                "--port",
                str(plain_port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env={
                **os.environ,
                **env,
                "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
                "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
            },
        )
        _wait_healthy(f"http://127.0.0.1:{plain_port}/health", plain)
        yield f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{plain_port}", key, chosen
    finally:
        if plain is not None:
            plain.send_signal(signal.SIGINT)  # uvicorn's graceful stop
            plain.wait(timeout=30)
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(home, ignore_errors=True)


async def _key_and_campaigns(url: str, campaigns: int) -> str:
    conn = await asyncpg.connect(url)
    try:
        tenant, key = await create_api_key(conn, "bench-http")
    finally:
        await conn.close()
    budgets = BudgetClient(url, shards=2)
    ops = [
        BudgetOp(
            "allocate",
            str(tenant.id),
            f"bench_{i:05d}",
            f"alloc-{i}",
            currency="USD",
            caps_patch={"total": 10**15},
        )
        for i in range(campaigns)
    ]
    for result in await budgets.execute(ops):
        result.raise_for_error()
    return key


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
