"""A budget shard: one long-lived actor holding the budget book of many campaigns.

Each shard group-commits: calls queue their commands, one writer task executes everything
queued against the book, writes the resulting ledger events to PostgreSQL in one transaction,
and only then answers every waiting call. A crashed shard is restarted by Ray
(`max_restarts=-1`) and rebuilds its book from the ledger before it answers anything; calls in
flight are retried by Ray (`max_task_retries=-1`) and are safe to repeat because every write
carries an idempotency key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime, timedelta

import asyncpg
import ray
from ray.util import metrics

from actors.resilience import Supervisor, command
from actors.telemetry import counter
from kiki.clock import Clock, VirtualClock, WallClock
from kiki.db.pool import create_pool
from kiki.errors import FailedPrecondition, Unavailable
from kiki.shield import store
from kiki.shield.book import (
    OP_KINDS,
    BudgetBook,
    BudgetOp,
    CampaignKey,
    NewCampaign,
    OpResult,
)
from kiki.shield.budget import LedgerEvent, over_deliveries

logger = logging.getLogger("kiki.budget")
EXPIRY_INTERVAL_S = 1.0


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
        self._queue: list[Waiting] = []
        self._inflight: list[Waiting] = []  # the batch being committed
        self._wakeup = asyncio.Event()
        self._supervisor = Supervisor(f"budget-{shard}")
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
        self._write_errors = counter(
            "kiki_budget_ledger_write_errors",
            "ledger writes that failed, by reason (conflict, refused, unavailable)",
            ("shard", "reason"),
            [{**tags, "reason": reason} for reason in WRITE_ERRORS],
        )
        self._over_deliveries = counter(
            "kiki_budget_over_deliveries",
            "commits that recorded spend beyond their reservation (each blocks its campaign)",
            ("shard",),
            [tags],
        )

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
        self._supervisor.start("group_commit", self._writer)

    @command("budget")
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

    @command("budget")
    def advance_clock(self, moment: datetime) -> None:
        """Move a simulation's virtual clock to `moment` (the simulator drives time)."""
        if not isinstance(self.clock, VirtualClock):
            raise FailedPrecondition("only a simulation's budget shard has a virtual clock")
        self.clock.advance_to(moment)

    @command("budget")
    async def execute(self, ops: Sequence[BudgetOp]) -> list[OpResult]:
        """Run a batch of commands; answered only after their ledger rows are committed."""
        await self.ready()
        future = asyncio.get_running_loop().create_future()
        self._queue.append((list(ops), future))
        self._wakeup.set()
        return await future

    @command("budget")
    async def probe(self) -> dict[str, int]:
        """A cheap command through the group commit (an empty batch), so a health check sees
        what every caller would: the writer serving, or not."""
        await self.execute([])
        return {"campaigns": len(self.book.campaigns), "restarts": self._restarts()}

    def _restarts(self) -> int:
        return self._supervisor.restarts.get("group_commit", 0)

    async def _writer(self) -> None:
        """The only task that changes the book: queued batches and due expiries, in order.
        A batch a previous run of this task was committing when it died is answered first."""
        if self._inflight:
            self._inflight, interrupted = [], self._inflight
            await self._recover(interrupted, "the budget shard's writer restarted")
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
                self._inflight = batch
                try:
                    await self._commit_batch(batch, expire)
                except Exception:
                    logger.exception(
                        "group commit failed outside any one command",
                        extra={"shard": self.shard, "commands": _describe(batch)},
                    )
                    await self._recover(batch, "internal error in the budget shard")
                self._inflight = []
                if batch:
                    self._batch_ms.observe((time.perf_counter() - started) * 1000)

    async def _recover(self, batch: list[Waiting], why: str) -> None:
        """Answer a batch whose outcome is unknown and make memory match the ledger again."""
        self._fail(batch, f"{why}; nothing of this request is acknowledged, retry it")
        await self._reload(set(self.book.campaigns))

    def _run(
        self, batch: list[Waiting], expire: bool, now: datetime
    ) -> tuple[list[list[OpResult]], list[NewCampaign], list[tuple[CampaignKey, LedgerEvent]]]:
        events: list[tuple[CampaignKey, LedgerEvent]] = []
        created: list[NewCampaign] = []
        if expire:
            self.book.expire(now, events)
        answers = [[self.book.execute(op, now, events, created) for op in ops] for ops, _ in batch]
        return answers, created, events

    async def _commit_batch(self, batch: list[Waiting], expire: bool) -> None:
        for attempt in (1, 2):
            answers, created, events = self._run(batch, expire, self.clock.now())
            try:
                await self._persist(created, events)
                break
            except asyncpg.UniqueViolationError:
                self._write_error("conflict")
                # Another incarnation of this shard wrote a key we had not seen: reload the
                # touched campaigns and run the batch again; the keys now replay.
                await self._reload(_touched(created, events))
                if attempt == 2:
                    return self._fail(batch, "conflicting ledger writes; retry the request")
            except _REFUSED as exc:
                self._write_error("refused")
                # The database refused some command's data: commit the others one by one.
                logger.warning("ledger refused a batch", extra={"error": repr(exc)})
                await self._reload(_touched(created, events))
                answers = await self._commit_alone(batch)
                break
            except Exception as exc:
                self._write_error("unavailable")
                logger.warning("ledger write failed", extra={"error": repr(exc)})
                await self._reload(_touched(created, events))
                return self._fail(batch, f"budget ledger unavailable ({exc.__class__.__name__})")
        self._answer(batch, answers)

    async def _commit_alone(self, batch: list[Waiting]) -> list[list[OpResult]]:
        """Each command in its own transaction, so the one the ledger refuses is answered
        with an error and every other is committed (slow; only after a refused batch)."""
        answers = []
        for ops, _ in batch:
            results = []
            for op in ops:
                ((result,),), created, events = self._run([([op], None)], False, self.clock.now())
                try:
                    await self._persist(created, events)
                except Exception as exc:
                    await self._reload(_touched(created, events))
                    refused = isinstance(exc, _REFUSED)
                    self._write_error("refused" if refused else "unavailable")
                    result = OpResult(
                        "error",
                        op.campaign_id,
                        message=f"the budget ledger refused this command ({exc})"
                        if refused
                        else f"budget ledger unavailable ({exc.__class__.__name__})",
                        error_code="invalid_input" if refused else "unavailable",
                    )
                results.append(result)
            answers.append(results)
        return answers

    def _answer(self, batch: list[Waiting], answers: list[list[OpResult]]) -> None:
        outcomes: Counter[tuple[str, str]] = Counter()
        for (ops, future), results in zip(batch, answers, strict=True):
            outcomes.update((_kind(op), r.outcome) for op, r in zip(ops, results, strict=True))
            if future is not None and not future.done():
                future.set_result(results)
        for (kind, outcome), count in outcomes.items():
            self._ops.inc(count, tags={"shard": str(self.shard), "kind": kind, "outcome": outcome})

    async def _persist(self, created: list[NewCampaign], events: list) -> None:
        if not created and not events:
            return
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            await store.append(conn, created, events)
        if over := over_deliveries(event for _, event in events):
            self._over_deliveries.inc(over, tags={"shard": str(self.shard)})

    def _write_error(self, reason: str) -> None:
        self._write_errors.inc(1, tags={"shard": str(self.shard), "reason": reason})

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
    def _fail(batch: list[Waiting], message: str) -> None:
        for _, future in batch:
            if future is not None and not future.done():
                future.set_exception(Unavailable(message, retry_after_s=1.0))


# A caller's commands and the future its answers go to (None: not awaited by anyone).
Waiting = tuple[list[BudgetOp], "asyncio.Future[list[OpResult]] | None"]
# The database refused a command's data (class 22 data exceptions, class 23 constraint
# violations other than the unique keys handled above), not the connection.
_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
# Why a ledger write failed: another incarnation wrote the same key, the database refused
# the data, or it could not be reached.
WRITE_ERRORS = ("conflict", "refused", "unavailable")


def _kind(op: BudgetOp) -> str:
    """The command's kind as a metric tag (a malformed one is counted, not trusted)."""
    return op.kind if isinstance(op.kind, str) and op.kind in OP_KINDS else "malformed"


def _touched(created: list[NewCampaign], events: list) -> set[CampaignKey]:
    return {key for key, _ in events} | {(c.tenant_id, c.campaign_id) for c in created}


def _describe(batch: list[Waiting]) -> str:
    ops = [op for ops, _ in batch for op in ops]
    return f"{len(ops)} commands, first {ops[:3]!r}"[:1000]


BudgetShardActor = ray.remote(max_restarts=-1, max_task_retries=-1)(BudgetShard)
