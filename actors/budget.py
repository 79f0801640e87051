"""Budget actors: a few long-lived processes, each holding the budget book of many campaigns.

Campaigns are sharded over `shards` named actors by a stable hash. Each actor group-commits:
calls queue their commands, one writer task executes everything queued against the book,
writes the resulting ledger events to PostgreSQL in one transaction, and only then answers
every waiting call. A crashed actor is restarted by Ray (`max_restarts=-1`) and rebuilds
its book from the ledger before it answers anything; calls in flight are retried by Ray
(`max_task_retries=-1`) and are safe to repeat because every write carries an idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timedelta
from uuid import uuid4

import asyncpg
import ray
from ray.util import metrics

from actors import shard_options
from kiki.clock import Clock, VirtualClock, WallClock
from kiki.config import Settings
from kiki.db.pool import create_pool
from kiki.errors import FailedPrecondition, Unavailable
from kiki.shield import store
from kiki.shield.book import BudgetBook, BudgetOp, CampaignKey, NewCampaign, OpResult, shard_of
from kiki.shield.budget import LedgerEvent

logger = logging.getLogger("kiki.budget")
ACTOR_PREFIX = "kiki-budget"
EXPIRY_INTERVAL_S = 1.0
# Commands that change state must carry a key, so Ray's retries cannot apply them twice.
_WRITES = {"allocate", "policy", "reserve", "commit", "release", "unblock"}


class BudgetShard:
    """One shard of the budget book. A thin shell: the rules live in kiki.shield."""

    def __init__(
        self,
        shard: int,
        shards: int,
        database_url: str,
        reservation_ttl_s: float = 900.0,
        clock: Clock | None = None,
    ) -> None:
        self.shard, self.shards = shard, shards
        self.database_url = database_url
        self.clock = clock or WallClock()
        self.book = BudgetBook(timedelta(seconds=reservation_ttl_s))
        self._pool: asyncpg.Pool | None = None
        self._ready: asyncio.Task | None = None
        self._queue: list[tuple[Sequence[BudgetOp], asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        tags = {"shard": str(shard)}
        self._ops = metrics.Counter(
            "kiki_budget_ops", "budget commands by outcome", tag_keys=("shard", "kind", "outcome")
        )
        self._batch_ms = metrics.Histogram(
            "kiki_budget_batch_ms",
            "group-commit batch latency (ms)",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 250, 1000],
            tag_keys=("shard",),
        )
        self._batch_ms.set_default_tags(tags)

    async def _start(self) -> None:
        self._pool = await create_pool(self.database_url, min_size=1, max_size=4)
        async with self._pool.acquire() as conn:
            started = time.perf_counter()
            replayed = await store.rebuild(conn, self.book, self.shard, self.shards)
        logger.info(
            "budget shard ready",
            extra={
                "shard": self.shard,
                "campaigns": len(self.book.campaigns),
                "events": replayed,
                "ms": round((time.perf_counter() - started) * 1000),
            },
        )
        asyncio.get_running_loop().create_task(self._writer())

    async def ready(self) -> int:
        """Wait until the book is rebuilt; returns the number of campaigns held."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_task(self._start())
        try:
            await asyncio.shield(self._ready)
        except Exception as exc:
            self._ready = None  # the next call tries again
            raise Unavailable(f"budget shard {self.shard} cannot load its ledger: {exc}") from None
        return len(self.book.campaigns)

    def pid(self) -> int:
        return os.getpid()

    def advance_clock(self, moment: datetime) -> None:
        """Move a simulation's virtual clock to `moment` (the simulator drives time)."""
        if not isinstance(self.clock, VirtualClock):
            raise FailedPrecondition("only a simulation's budget shard has a virtual clock")
        self.clock.advance((moment - self.clock.now()).total_seconds())

    async def execute(self, ops: Sequence[BudgetOp]) -> list[OpResult]:
        """Run a batch of commands; answered only after their ledger rows are committed."""
        await self.ready()
        future = asyncio.get_running_loop().create_future()
        self._queue.append((ops, future))
        self._wakeup.set()
        return await future

    async def _writer(self) -> None:
        """The only task that changes the book: queued batches and due expiries, in order."""
        next_expiry = time.monotonic() + EXPIRY_INTERVAL_S
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), EXPIRY_INTERVAL_S)
            self._wakeup.clear()
            while True:
                batch, self._queue = self._queue, []
                expire = time.monotonic() >= next_expiry
                if expire:
                    next_expiry = time.monotonic() + EXPIRY_INTERVAL_S
                if not batch and not expire:
                    break
                started = time.perf_counter()
                await self._commit_batch(batch, expire)
                if batch:
                    self._batch_ms.observe((time.perf_counter() - started) * 1000)

    async def _commit_batch(
        self, batch: list[tuple[Sequence[BudgetOp], asyncio.Future]], expire: bool
    ) -> None:
        for attempt in (1, 2):
            now = self.clock.now()
            events: list[tuple[CampaignKey, LedgerEvent]] = []
            created: list[NewCampaign] = []
            if expire:
                self.book.expire(now, events)
            answers = [
                [self.book.execute(op, now, events, created) for op in ops] for ops, _ in batch
            ]
            touched = {key for key, _ in events} | {(c.tenant_id, c.campaign_id) for c in created}
            try:
                await self._persist(created, events)
                break
            except asyncpg.UniqueViolationError:
                # Another incarnation of this shard wrote a key we had not seen: reload the
                # touched campaigns and run the batch again; the keys now replay.
                await self._reload(touched)
                if attempt == 2:
                    return self._fail(batch, "conflicting ledger writes; retry the request")
            except Exception as exc:
                logger.warning("ledger write failed", extra={"error": repr(exc)})
                await self._reload(touched)
                return self._fail(batch, f"budget ledger unavailable ({exc.__class__.__name__})")
        outcomes: Counter[tuple[str, str]] = Counter()
        for (ops, future), results in zip(batch, answers, strict=True):
            outcomes.update((op.kind, r.outcome) for op, r in zip(ops, results, strict=True))
            if not future.done():
                future.set_result(results)
        for (kind, outcome), count in outcomes.items():
            self._ops.inc(count, tags={"shard": str(self.shard), "kind": kind, "outcome": outcome})

    async def _persist(self, created: list[NewCampaign], events: list) -> None:
        if not created and not events:
            return
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            await store.append(conn, created, events)

    async def _reload(self, keys: set[CampaignKey]) -> None:
        assert self._pool is not None
        try:
            async with self._pool.acquire() as conn:
                await store.rebuild(conn, self.book, self.shard, self.shards, only=keys)
        except Exception:
            # Memory may now be ahead of the ledger: exit, and Ray restarts the shard, which
            # rebuilds everything from the ledger before answering.
            logger.exception("could not reload campaigns from the ledger; restarting the shard")
            os._exit(1)

    @staticmethod
    def _fail(batch: list[tuple[Sequence[BudgetOp], asyncio.Future]], message: str) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(Unavailable(message))

    def snapshot_all(self) -> dict[str, dict]:
        """Every campaign's state, for tests and operators (keyed 'tenant:campaign')."""
        now = self.clock.now()
        return {f"{t}:{c}": b.snapshot(now) for (t, c), b in self.book.campaigns.items()}


BudgetShardActor = ray.remote(max_restarts=-1, max_task_retries=-1)(BudgetShard)


class BudgetClient:
    """Routes commands to the shard that holds each campaign; one call per shard per batch."""

    def __init__(
        self,
        database_url: str,
        shards: int = 2,
        namespace: str = "kiki",
        num_cpus: float = 0.1,
        reservation_ttl_s: float = 900.0,
        clock: Clock | None = None,
        detached: bool = True,
    ) -> None:
        """`clock` and `detached=False` are for simulations: shards on a virtual clock that
        end with the driver that made them."""
        self.shards = shards
        self.actors = [
            BudgetShardActor.options(
                **shard_options(
                    ACTOR_PREFIX,
                    i,
                    shards,
                    namespace,
                    detached,
                    num_cpus=num_cpus,
                    max_concurrency=1000,
                )
            ).remote(i, shards, database_url, reservation_ttl_s, clock)
            for i in range(shards)
        ]

    @classmethod
    def for_settings(cls, database_url: str, settings: Settings) -> BudgetClient:
        """The platform's budget shards, as every app that needs them finds them."""
        return cls(
            database_url,
            shards=settings.budget_shards,
            num_cpus=min(0.1, settings.replica_cpus),
            reservation_ttl_s=settings.reservation_ttl_s,
        )

    def with_keys(self, ops: Sequence[BudgetOp]) -> list[BudgetOp]:
        """Give every write without an idempotency key a fresh one, before the first send,
        so that Ray's retries of the same call carry the same key."""
        out = []
        for op in ops:
            if op.kind in _WRITES and not op.idempotency_key:
                op = replace(op, idempotency_key=f"auto:{uuid4()}")
            out.append(op)
        return out

    async def execute(self, ops: Sequence[BudgetOp]) -> list[OpResult]:
        ops = self.with_keys(ops)
        by_shard: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            by_shard.setdefault(shard_of(op.tenant_id, op.campaign_id, self.shards), []).append(i)
        shard_ids = list(by_shard)
        replies = await asyncio.gather(
            *(self.actors[s].execute.remote([ops[i] for i in by_shard[s]]) for s in shard_ids)
        )
        results: list[OpResult | None] = [None] * len(ops)
        for s, reply in zip(shard_ids, replies, strict=True):
            for i, result in zip(by_shard[s], reply, strict=True):
                results[i] = result
        return results  # type: ignore[return-value]

    async def ready(self) -> int:
        return sum(await asyncio.gather(*(a.ready.remote() for a in self.actors)))

    def kill(self) -> None:
        """End the shards: for a simulation's own budget actors, never the platform's."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)

    async def advance_clock(self, moment: datetime) -> None:
        await asyncio.gather(*(a.advance_clock.remote(moment) for a in self.actors))
