"""`kiki bench keyrate`: what the cluster-wide API-key rate limit costs per request.

Baseline: the per-replica token bucket it replaces (a dictionary lookup in the replica's own
process). Ours: `ClusterKeyLimit`, each request's key checked by the key-rate actor, the
requests that arrive during a call sent together in the next. Both are measured in one process
(the driver, a Ray worker like a replica) on the same local Ray, with `concurrency` requests
in flight, as a replica under load has, and with one (a replica at rest: the added latency).
The limit is set high enough that no request is refused: the figures are the check's cost.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from actors.keyrates import KeyRatesActor
from benchmarks.common import Result, percentiles
from deployments._serve.keyrates import ClusterKeyLimit
from kiki.clock import WallClock
from kiki.shield.ratelimit import RateLimiter

UNLIMITED = (1e9, 1_000_000_000)  # rate, burst: the bench measures the check, not refusals


async def _drive(
    name: str, check: Callable[[str], Awaitable[float]], concurrency: int, seconds: float
) -> Result:
    keys = [uuid.uuid4().hex for _ in range(16)]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            wait = await check(keys[i % len(keys)])
            latencies.append((time.perf_counter() - started) * 1000)
            if wait:
                raise RuntimeError("a request was refused: the bench limit is too low")

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    return Result(name, len(latencies), elapsed, p50, p99)


async def key_rate_checks(concurrency: int, seconds: float) -> tuple[Result, list[Result]]:
    """The per-replica bucket, then the cluster-wide limit at `concurrency` and at 1."""
    local = RateLimiter(*UNLIMITED, WallClock())

    async def local_check(key: str) -> float:
        return local.check(key)

    actor = KeyRatesActor.options(num_cpus=0).remote(*UNLIMITED)
    await actor.check_many.remote(["warm-up"])
    cluster = ClusterKeyLimit(lambda: actor, local, timeout_s=30)
    baseline = await _drive(
        f"per-replica bucket, {concurrency} in flight", local_check, concurrency, seconds
    )
    loaded = await _drive(
        f"cluster-wide (actor), {concurrency} in flight", cluster.check, concurrency, seconds
    )
    alone = await _drive("cluster-wide (actor), 1 in flight", cluster.check, 1, seconds)
    return baseline, [loaded, alone]
