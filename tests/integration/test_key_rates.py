"""One rate limit per API key across the cluster (issue 19): three replicas' limiters, each in
its own Ray worker process, share the key-rate actor's one bucket per key."""

from __future__ import annotations

import asyncio
import time
import uuid

import ray

from actors.keyrates import KeyRatesActor
from deployments._serve.keyrates import ClusterKeyLimit
from kiki.clock import WallClock
from kiki.shield.ratelimit import RateLimiter
from tests.integration.conftest import RunningPlatform

RATE, BURST, SECONDS = 20.0, 10, 2.0
# A check sent just before the window closes may reach the actor a little after it, when the
# bucket has refilled a little more: on a busy machine, up to this long after.
LAG_S = 1.0


@ray.remote(num_cpus=0)
class Replica:
    """What a Serve replica's runtime does per request, for one key, as fast as it can."""

    def __init__(self, limiter: object | None) -> None:
        local = RateLimiter(RATE, BURST, WallClock())
        self.limit = ClusterKeyLimit(lambda: limiter, local, timeout_s=5) if limiter else None
        self.local = local

    async def check(self, key: str) -> float:
        return await self.limit.check(key) if self.limit else self.local.check(key)

    def ready(self) -> bool:
        return True

    async def hammer(self, key: str, start_at: float) -> int:
        """Requests within one window of wall time shared by every replica."""
        await asyncio.sleep(max(0.0, start_at - time.time()))
        admitted, deadline = 0, start_at + SECONDS
        while time.time() < deadline:
            # Twenty requests at a time, as concurrent requests to one replica arrive.
            waits = await asyncio.gather(*(self.check(key) for _ in range(20)))
            admitted += sum(w == 0 for w in waits)
            await asyncio.sleep(0.005)
        return admitted


def _admitted(limiter: object | None) -> int:
    replicas = [Replica.remote(limiter) for _ in range(3)]
    ray.get([r.ready.remote() for r in replicas], timeout=60)  # started, on a busy machine too
    key, start_at = uuid.uuid4().hex, time.time() + 1
    return sum(ray.get([r.hammer.remote(key, start_at) for r in replicas], timeout=60))


def test_three_replicas_share_one_bucket_per_key(platform: RunningPlatform) -> None:
    limiter = KeyRatesActor.options(num_cpus=0).remote(RATE, BURST)
    most = BURST + RATE * SECONDS  # what one bucket can give in the time
    shared = _admitted(limiter)
    assert most * 0.75 <= shared <= most + RATE * LAG_S, shared
    # The per-replica buckets it replaces would give each replica its own limit.
    per_replica = _admitted(None)
    assert per_replica > 2 * most, per_replica
