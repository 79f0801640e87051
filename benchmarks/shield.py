"""`kiki bench shield`: budget reservations on the bid loop's path vs a plain SQL baseline.

Baseline: the simplest correct cap in PostgreSQL, one conditional
`UPDATE ... SET spent = spent + $1 WHERE spent + $1 <= cap` per reservation, from 64
concurrent connections. Ours: the budget actors as the bid loop calls them, one batched call
per caller and tick; every reservation is written to the ledger (with its idempotency key)
before its call returns. Both run in the same process against the same PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from actors.budget import BudgetClient
from benchmarks.common import Result, percentiles
from benchmarks.http import Load
from benchmarks.serving import BENCH_ENV, local_serve, uvicorn_app
from kiki.auth import create_api_key
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
        # A seeded simulation, not a secret: the standard generator is right.
        rng = random.Random(seed)  # nosec B311
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
        # A seeded simulation, not a secret: the standard generator is right.
        rng = random.Random(c)  # nosec B311
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


def endpoints(campaigns: int) -> tuple[Load, ...]:
    """The shield calls under load: random campaigns among `campaigns`."""
    last = campaigns - 1
    reserve = '{"campaign_id":"bench_%05d","amount":"0.01","platform":"meta"}'
    return (
        Load(
            "POST /check",
            "/api/v1/check",
            '{"campaign_id":"bench_%05d","bid_amount":"0.50","platform":"google_ads"}',
            0,
            last,
        ),
        Load("POST /reserve", "/api/v1/reserve", reserve, 0, last),
        Load(
            "POST /reserve/batch (100)",
            "/api/v1/reserve/batch",
            reserve,
            0,
            last,
            per_request=100,
            wrapper="reservations",
        ),
    )


@contextmanager
def serve_and_uvicorn(
    url: str, campaigns: int, ingress: str
) -> Iterator[tuple[str, str, str, str]]:
    """The shield app on Ray Serve and the same FastAPI app on plain uvicorn, on one local Ray
    and the same budget actors; yields (Serve URL, uvicorn URL, key, ingress description)."""
    from ray import serve

    from deployments.shield.app import ShieldIngress

    env = {**BENCH_ENV, "KIKI_DATABASE_URL": url}
    with local_serve(ingress) as served:
        deployment = ShieldIngress.options(
            num_replicas=1,
            max_ongoing_requests=256,
            ray_actor_options={"num_cpus": 0.1, "runtime_env": {"env_vars": env}},
        )
        serve.run(deployment.bind(), name="shield", route_prefix="/shield")
        key = asyncio.run(_key_and_campaigns(url, campaigns))
        with uvicorn_app("deployments.shield.app:api", env) as plain:
            yield served["http"], plain, key, served["ingress"]


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
