"""A replica's side of the cluster-wide key rate limit (actors/keyrates.py).

The first request goes to the actor at once; the requests that arrive while that call is in
flight queue and go together in the next call. Under load the actor sees one call per replica
per round trip; at rest a request waits one actor round trip and no batching window.

Should the actor not answer within the actor-call deadline (its node lost, the cluster
restarting), requests fall back to the replica's own bucket: the limit is then per replica
until the actor is back, which is better than refusing every request or admitting all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from actors.resilience import within
from kiki.shield.ratelimit import RateLimiter

logger = logging.getLogger("kiki.serve")


class ClusterKeyLimit:
    def __init__(
        self, find_actor: Callable[[], Any], fallback: RateLimiter, timeout_s: float
    ) -> None:
        self._find_actor = find_actor
        self._actor: Any = None
        self._fallback = fallback
        self._timeout_s = timeout_s
        self._queue: list[tuple[str, asyncio.Future[float]]] = []
        self._sending = False
        self._pump_task: asyncio.Task[None] | None = None  # held: the loop keeps weak refs

    async def check(self, key_hash: str) -> float:
        """0.0 when the key may make this request now, else the seconds to wait."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queue.append((key_hash, future))
        if not self._sending:
            self._sending = True
            self._pump_task = asyncio.create_task(self._pump())
        return await future

    async def _pump(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                keys = [k for k, _ in batch]
                try:
                    if self._actor is None:
                        self._actor = self._find_actor()
                    call = self._actor.check_many.remote(keys)
                    waits = await within(call, self._timeout_s, "the key rate limiter")
                    if len(waits) != len(keys):
                        raise ValueError(f"{len(waits)} answers for {len(keys)} requests")
                except Exception as exc:  # any failure: the replica's own bucket, found anew next
                    logger.warning("key rate limiter unavailable, limiting per replica: %s", exc)
                    self._actor = None
                    waits = [self._fallback.check(k) for k in keys]
                for (_, future), wait in zip(batch, waits, strict=True):
                    if not future.done():
                        future.set_result(wait)
        finally:
            self._sending = False
