"""Micro-batching: concurrent callers that ask within a few milliseconds share one call.

Serve's `@serve.batch` does this for deployment methods; this one also works where the same
FastAPI app runs outside Serve, and batches by key (e.g. tenant and day) so only compatible
requests are merged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class KeyedBatcher(Generic[K, T, R]):
    """`await submit(key, items)` returns `run(key, all items queued under key)`: one shared
    result (say, a frame indexed by item) from which each caller takes its own items."""

    def __init__(
        self,
        run: Callable[[K, list[T]], Awaitable[R]],
        max_wait_s: float = 0.003,
        max_items: int = 5_000,
    ) -> None:
        self._run = run
        self._max_wait_s = max_wait_s
        self._max_items = max_items
        self._queues: dict[K, list[tuple[list[T], asyncio.Future[R]]]] = {}

    async def submit(self, key: K, items: list[T]) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(key, [])
        queue.append((items, future))
        if len(queue) == 1:
            asyncio.get_running_loop().call_later(self._max_wait_s, self._flush, key)
        elif sum(len(i) for i, _ in queue) >= self._max_items:
            self._flush(key)
        return await future

    def _flush(self, key: K) -> None:
        batch = self._queues.pop(key, None)
        if batch:
            asyncio.get_running_loop().create_task(self._deliver(key, batch))

    async def _deliver(self, key: K, batch: list[tuple[list[T], asyncio.Future[R]]]) -> None:
        merged = [item for items, _ in batch for item in items]
        try:
            shared = await self._run(key, merged)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(shared)
