"""A cache for values that take seconds to build (a tenant's customers scored, a drift report)
and are read by people waiting on a page.

A value is fresh for `fresh_s`. Until `max_stale_s`, a read that may take it stale gets it at
once while one background task builds its successor (stale-while-revalidate); past that, or
for a read that must be fresh (one that acts on the value), the read waits for the build.
Concurrent misses share one build, and a caller that gives up (a closed browser tab) does not
cancel a build others wait on. So a slow build is paid off the request path whenever a recent
value exists, and once per key when none does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    built_at: float


class RefreshingCache(Generic[K, V]):
    """At most `maxsize` values, least recently used dropped first."""

    def __init__(
        self,
        maxsize: int,
        fresh_s: float,
        max_stale_s: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_s = fresh_s
        self.max_stale_s = max_stale_s
        self._timer = timer
        self._entries: LRUCache[K, _Entry[V]] = LRUCache(maxsize)
        self._building: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K, build: Callable[[], Awaitable[V]], *, stale_ok: bool = True) -> V:
        """The value of `key`: fresh, or stale (if `stale_ok`) while a rebuild runs, or built
        now."""
        served = self._entries.get(key)
        if served is not None:
            age = self._timer() - served.built_at
            if age < self.fresh_s:
                return served.value
            if not stale_ok or age >= self.max_stale_s:
                served = None
        task = self._building.get(key)
        if task is None:
            task = self._building[key] = asyncio.create_task(self._build(key, build))
            task.add_done_callback(_log_failure if served is not None else _retrieve_failure)
        if served is not None:
            return served.value
        return await asyncio.shield(task)

    async def _build(self, key: K, build: Callable[[], Awaitable[V]]) -> V:
        try:
            value = await build()
            self._entries[key] = _Entry(value, self._timer())
            return value
        finally:
            del self._building[key]


def _log_failure(task: asyncio.Task[object]) -> None:
    """A background rebuild that failed: the stale value stays, and the next read tries again."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("refreshing a cached value failed; the previous one is kept: %r", error)


def _retrieve_failure(task: asyncio.Task[object]) -> None:
    """A first build's failure reaches its waiters; read here as well, so that a build whose
    waiters all gave up is not reported as an exception nobody retrieved."""
    if not task.cancelled():
        task.exception()
