"""A bid-loop shard: one long-lived actor running the bid loop of many campaigns.

Campaigns are sharded over a few named actors by the same stable hash as the budget actors.
A tick, for all of a shard's campaigns at once (kiki.flow.engine does the arithmetic):

1. take in what was delivered since the last tick (kiki.flow.market: the sandbox exchange
   clears its auctions for the interval, capped at what was reserved; or the live platforms'
   reports);
2. read each segment's value (values.SegmentValues: one batched call, never awaited);
3. decide allowances and bids;
4. renew the budget leases that are due (kiki.flow.leases: commit what a lease used, reserve
   the next window), one batched call per budget actor; and meanwhile
5. push the bids that moved more than the threshold, through the guard actor's breaker and
   rate limit (one admission call per tick), one connector call per platform. In the live
   market the leases are renewed first, then each platform campaign's daily budget is pushed
   from them (pushes.CapPusher), and only then the bids of the pools whose cap is in force
   (the ad groups of the others are paused at their platform until one is);
6. hand the decisions to the audit writer (audit.AuditWriter).

Ticks never overlap: one task runs them in turn; a tick that overruns is counted and the next
one starts at once (missed ticks are skipped, not stacked). In a simulation the driver calls
`tick(now)` itself on a virtual clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

import asyncpg
import numpy as np
import ray

from actors.budget import BudgetClient
from actors.flow.audit import AuditWriter, DecisionLog
from actors.flow.config import BidLoopConfig
from actors.flow.pushes import BidPusher, CapPusher
from actors.flow.reports import Heartbeat, ShardStats, TickMetrics, TickReport
from actors.flow.values import SegmentValues
from actors.guard import platform_guard
from actors.resilience import Supervisor, command
from kiki.clock import Clock, VirtualClock, WallClock
from kiki.db.pool import create_pool
from kiki.errors import FailedPrecondition
from kiki.flow import audit, store
from kiki.flow.campaigns import Campaign
from kiki.flow.engine import BidEngine, TickPlan
from kiki.flow.leases import UNANSWERED, LeaseBook, commit_op
from kiki.flow.live import parse_credentials
from kiki.flow.market import LiveMarket, Market, SandboxMarket
from kiki.flow.pacing import ControllerConfig
from kiki.shield import BudgetOp, OpResult, shard_of

logger = logging.getLogger("kiki.flow")
T = TypeVar("T")


class BidLoopShard:
    """One shard of the bid loop. A thin shell: the decisions are kiki.flow.engine's."""

    def __init__(
        self,
        shard: int,
        shards: int,
        database_url: str,
        config: BidLoopConfig,
        clock: Clock | None = None,
    ) -> None:
        self.shard, self.shards = shard, shards
        self.database_url = database_url
        self.config = config
        self.clock = clock or WallClock()
        self.budgets = BudgetClient(
            database_url,
            shards=config.budget_shards,
            namespace=config.namespace,
            clock=clock if isinstance(clock, VirtualClock) else None,
            detached=config.detached,
            call_timeout_s=config.call_timeout_s,
        )
        rate = config.guard_rate.model_dump() if config.guard_rate else None
        self.guard = platform_guard(namespace=config.namespace, rate=rate)
        # With credentials, the live market (kiki.flow.live); without, the sandbox exchange.
        self.market: Market = (
            LiveMarket(parse_credentials(config.credentials), config.spend_poll_s, self.clock)
            if config.credentials
            else SandboxMarket(
                config.exchange,
                config.seed + shard,
                config.outages,
                tick_cap=config.sandbox_tick_cap,
                report_s=config.sandbox_report_s,
            )
        )
        self.values = SegmentValues(config.value_app, config.call_timeout_s)
        self.pusher = BidPusher(self.guard, self.market, config.call_timeout_s)
        self.capper = (
            CapPusher(self.guard, self.market, config.call_timeout_s, config.cap_push_threshold)
            if isinstance(self.market, LiveMarket)
            else None
        )
        log_dir = config.log_dir
        self.log_path = Path(log_dir) / f"decisions-{shard}-of-{shards}.log" if log_dir else None
        self.engine = BidEngine([], self._controller())
        self._incarnation = uuid4().hex[:12]  # tells this process's lease keys from earlier ones
        # One SyncShield reservation per pool; pools come with the first campaigns loaded.
        self.leases = LeaseBook(np.zeros(0, dtype=np.int64), config.lease_ticks)
        self.pending_commits: list[BudgetOp] = []  # commits that failed, retried next tick
        self.tick_id = 0
        self.slow_ticks = 0
        self._pool: asyncpg.Pool | None = None
        self._audit: AuditWriter | None = None
        self._ready: asyncio.Task | None = None
        self._tick_lock = asyncio.Lock()
        self._supervisor = Supervisor(f"bidloop-{shard}")
        self._created = time.monotonic()
        self._last_tick_ok: float | None = None  # monotonic time the last tick completed
        self._metrics = TickMetrics(shard)
        if config.autorun:
            # Ray re-runs __init__ after a crash or the loss of the shard's node, and then
            # nobody calls `ready`: the shard starts its own loop (queued after __init__).
            ray.get_runtime_context().current_actor.ready.remote()

    def _controller(self) -> ControllerConfig:
        """The pacing controller; it knows whether each tick is capped (the sandbox's mode)."""
        capped = isinstance(self.market, SandboxMarket) and self.market.tick_cap
        return ControllerConfig(kind=self.config.controller, tick_capped=capped)

    # --- life cycle ------------------------------------------------------------------------

    @command("bidloop")
    async def ready(self) -> int:
        """Load this shard's running campaigns; start the loop unless driven by a simulator.
        Returns the number of campaigns held."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_task(self._start())
        try:
            await asyncio.shield(self._ready)
        except Exception:
            self._ready = None
            raise
        return len(self.engine.campaigns)

    async def _start(self) -> None:
        self._pool = await create_pool(self.database_url, min_size=1, max_size=4)
        # A simulation's decisions are not billed.
        log = (
            DecisionLog(self.log_path, self.config.log_max_bytes, self.config.log_backups)
            if self.log_path
            else None
        )
        self._audit = AuditWriter(
            self._pool, log, self._supervisor, bill=self.config.tenant_id is None
        )
        await self.budgets.ready()
        if isinstance(self.market, LiveMarket):
            # What committed leases already charged: a restart charges only new spend.
            since = self.clock.now().date() - timedelta(days=1)
            async with self._pool.acquire() as conn:
                marks = await store.spend_marks(conn, since, self.config.tenant_id)
                paused = await store.paused_ad_groups(conn, self.config.tenant_id)
            self.market.marks.restore(marks)
            if self.capper is not None:  # the ad groups a shard before this one paused
                self.capper.paused = paused
        await self._load()
        if self.config.autorun:
            self._metrics.alive()  # the stall alert counts from the loop's start
            self._supervisor.start("tick_loop", self._run)
            # Apart from the loop, so a stalled loop's last tick stays exported.
            self._supervisor.start_every("tick_metrics", 5.0, self._metrics.keep_exported)

    @command("bidloop")
    async def reload(self) -> int:
        """Pick up created, started, paused or stopped campaigns (the API calls this)."""
        await self.ready()
        async with self._tick_lock:
            await self._load()
        return len(self.engine.campaigns)

    async def _load(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            every = await store.running_campaigns(conn, self.config.tenant_id)
        # A campaign past its end stays one more tick, to commit its last interval.
        horizon = self.clock.now() - timedelta(seconds=self.config.tick_s)
        mine = [
            c
            for c in every
            if shard_of(c.tenant_id, c.campaign_id, self.shards) == self.shard
            and c.ends_at > horizon
        ]
        await self._rebuild(mine)

    async def _rebuild(self, campaigns: list[Campaign]) -> None:
        old = self.engine
        # Settle first: the old engine takes in the interval delivered since the last tick
        # (and any report held back), so what the new one carries includes it.
        await self._settle_reservations(old)
        engine = BidEngine(campaigns, self._controller())
        engine.carry_from(old)
        new_keys = set(engine.campaign_keys()) - set(old.campaign_keys())
        if new_keys:
            # Spend so far comes from the ledger, not from memory: survives restarts.
            ops = [BudgetOp("status", t, c) for t, c in sorted(new_keys)]
            index = {k: i for i, k in enumerate(engine.campaign_keys())}
            pools = {k: i for i, k in enumerate(engine.pool_keys())}
            for op, result in zip(ops, await self.budgets.execute(ops), strict=True):
                if result.outcome == "status" and result.snapshot:
                    key = (op.tenant_id, op.campaign_id)
                    engine.spent[index[key]] = result.snapshot["committed"]
                    for platform, book in result.snapshot["platforms"].items():
                        if (key, platform) in pools:
                            engine.pool_spent[pools[key, platform]] = book["committed"]
        self.market.rewind([op.reports for op in self.pending_commits])
        self.engine = engine
        self.values.rebuild(engine, [c.tenant_id for c in campaigns])
        self.leases = LeaseBook(engine.pool_campaign, self.config.lease_ticks, self.market.live)
        self.market.rebuild(engine)

    async def _settle_reservations(self, old: BidEngine) -> None:
        """Before the pools are renumbered, close the open leases: deliver what the sandbox
        owes for the interval, commit it, and start fresh."""
        self.leases.spend(self.market.deliver(old, self.clock.now(), flush=True))
        keys = old.campaign_keys()
        closing = self.leases.close_all()
        ops = [
            commit_op(keys[old.pool_campaign[p]], rid, used, self.market.pending_marks(p))
            for p, rid, used in closing
        ]
        await self._run_budget_ops(ops)
        old.granted(np.zeros(len(old.pool_campaign)))

    async def _run(self) -> None:
        """The wall-clock loop: one tick every tick_s, never two at once."""
        next_at = time.monotonic()
        while True:
            try:
                await self.tick()
            except Exception:
                logger.exception("tick failed; the next one runs on schedule")
            else:
                self._last_tick_ok = time.monotonic()
                self._metrics.alive()
            next_at = max(next_at + self.config.tick_s, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    @command("bidloop")
    async def stop(self) -> int:
        """Stop ticking, settle open reservations and flush the audit trail. Returns rows
        written in total."""
        await self._supervisor.stop("tick_loop")
        async with self._tick_lock:
            await self._settle_reservations(self.engine)
            if self._audit:
                await self._audit.flush()
        await self.market.close()
        return self._audit.written if self._audit else 0

    @command("bidloop")
    async def flush(self) -> int:
        assert self._audit is not None
        await self._audit.flush()
        return self._audit.written

    @command("bidloop")
    def stats(self) -> ShardStats:
        e = self.engine
        return ShardStats(
            keys=e.campaign_keys(),
            budget=e.budget.tolist(),
            spent=e.spent.tolist(),
            value=e.value_total.tolist(),
            ticks=self.tick_id,
            slow_ticks=self.slow_ticks,
            audit_rows=self._audit.written if self._audit else 0,
        )

    def pid(self) -> int:
        return os.getpid()

    @command("bidloop")
    def heartbeat(self) -> Heartbeat:
        """How recently this shard completed a tick, for the flow app's health check."""
        now = time.monotonic()
        return Heartbeat(
            shard=self.shard,
            ticks=self.tick_id,
            autorun=self.config.autorun,
            ticking=self._supervisor.running("tick_loop"),
            up_s=now - self._created,
            last_tick_age_s=None if self._last_tick_ok is None else now - self._last_tick_ok,
            restarts=sum(self._supervisor.restarts.values()),
        )

    # --- the tick --------------------------------------------------------------------------

    @command("bidloop")
    async def tick(self, now: datetime | None = None) -> TickReport:
        """One tick at `now` (a simulation's virtual time) or at the clock's now."""
        await self.ready()
        async with self._tick_lock:
            if now is not None:
                if not isinstance(self.clock, VirtualClock):
                    raise FailedPrecondition("only a simulation's bid loop is given the time")
                self.clock.advance_to(now)
            return await self._tick(self.clock.now())

    async def _tick(self, now: datetime) -> TickReport:
        started = time.perf_counter()
        phases: dict[str, float] = {}
        engine = self.engine
        self.tick_id += 1

        self.leases.spend(self.market.deliver(engine, now))
        mark = _lap(phases, "deliver", started)

        values = self.values.current()
        plan = engine.decide(now, now + timedelta(seconds=self.config.tick_s), values)
        self.market.offer(plan)
        mark = _lap(phases, "decide", mark)

        if self.capper is not None:
            denied, (connector_result, pushed, refused) = await self._capped_push(
                engine, plan, now, phases
            )
        else:
            # Renewing the leases and pushing the bids touch separate state (the bids do not
            # depend on the grants; the caps bound the next interval's delivery): both wait on
            # other processes at once. Both finish before a failure of either ends the tick.
            renewed, sent = await asyncio.gather(
                _timed(phases, "budget", self._renew_leases(engine, plan)),
                _timed(phases, "push", self.pusher.push(engine, plan)),
                return_exceptions=True,
            )
            for failure in (renewed, sent):
                if isinstance(failure, BaseException):
                    raise failure
            denied, (connector_result, pushed, refused) = renewed, sent
        mark = time.perf_counter()

        outcome = audit.TickOutcome(audit.budget_reasons(engine, plan, denied), connector_result)
        decisions = audit.records(engine, plan, outcome, self.tick_id, now, self.shard)
        assert self._audit is not None
        await self._audit.add(decisions)
        _lap(phases, "audit", mark)

        ms = (time.perf_counter() - started) * 1000
        if self._metrics.record(ms, len(decisions), self.config.tick_s):
            self.slow_ticks += 1
            logger.warning("slow tick", extra={"shard": self.shard, "ms": round(ms)})
        reachable = self.market.reachable
        reachable = [] if reachable is None else reachable.tolist()
        return TickReport(
            self.tick_id, now, len(decisions), ms, phases, pushed, refused,
            engine.spent.tolist(), reachable,
        )  # fmt: skip

    async def _capped_push(
        self, engine: BidEngine, plan: TickPlan, now: datetime, phases: dict[str, float]
    ) -> tuple[dict[int, str], tuple[np.ndarray, int, dict[str, str]]]:
        """The live market: leases first, then the daily budgets they allow, then the bids
        of the pools whose budget is in force. A pool whose budget could not be pushed (guard
        refused, platform failed) spends nothing more here and pushes no bid this tick, and its
        ad groups are paused at the platform until a budget is in force again."""
        assert self.capper is not None
        denied = await _timed(phases, "budget", self._renew_leases(engine, plan))
        held = np.array([r is not None for r in self.leases.reservation], dtype=bool)
        remaining = np.where(held, np.maximum(self.leases.remaining(), 0), 0)
        blocked = await _timed(phases, "caps", self.capper.push(remaining, now.date(), self._pool))
        uncapped = np.isin(engine.unit_pool, sorted(blocked))
        if blocked:
            engine.pool_cap[sorted(blocked)] = 0
            plan.push[uncapped] = False
        units = engine.unit_pool.tolist()
        pauses = await _timed(phases, "hold", self.capper.hold(units, blocked, self._pool))
        result, pushed, refused = await _timed(phases, "push", self.pusher.push(engine, plan))
        result[uncapped] = "cap_not_pushed"
        for unit, why in pauses.items():
            result[unit] = why
        return denied, (result, pushed, refused)

    async def _renew_leases(self, engine: BidEngine, plan: TickPlan) -> dict[int, str]:
        """Commit the leases that are due and reserve their next windows; set each pool's cap
        for the tick. Returns the pools whose reservation was refused, with the reason."""
        keys = engine.campaign_keys()
        renewals = self.leases.renewals(
            self.tick_id,
            plan.reserve,
            plan.live[engine.pool_campaign],
            engine.budget - engine.spent,
        )
        # Keys made here, not by BudgetClient.with_keys (a uuid4 and a dataclass copy per op):
        # this incarnation, tick and pool name each reservation once.
        tag = f"lease:{self._incarnation}:{self.tick_id}"
        commits, reserves = self.leases.ops(renewals, keys, engine.pool_platform, tag)
        if self.market.live:  # each commit carries the report totals it charges
            commits = [
                replace(op, reports=self.market.pending_marks(p))
                for op, (p, _, _) in zip(commits, renewals.commits, strict=True)
            ]
        results = await self._run_budget_ops(commits + reserves)
        denied = self.leases.settle(renewals, results[len(results) - len(reserves) :], self.tick_id)
        engine.granted(self.leases.caps(plan.reserve))
        return denied

    async def _run_budget_ops(self, ops: list[BudgetOp]) -> list:
        """One call per budget actor, the commits still pending from an earlier call first;
        the results follow that order, so `ops`' own are the last len(ops). Commits that fail
        are kept and retried by the next call, a tick's or a reload's settling (the
        idempotency key makes the retry safe); their reservations expire meanwhile only if
        SyncShield stays down for the whole reservation TTL."""
        ops = self.budgets.with_keys(self.pending_commits + ops)
        if not ops:
            return []
        try:
            results = await self.budgets.execute(ops)
        except Exception as exc:
            logger.warning("budget actors unavailable", extra={"error": repr(exc)})
            self.pending_commits = [op for op in ops if op.kind == "commit"]
            return [_unavailable(op) for op in ops]
        self.pending_commits = [
            op
            for op, r in zip(ops, results, strict=True)
            if op.kind == "commit" and r.outcome == "error" and r.error_code in UNANSWERED
        ]
        for op, r in zip(ops, results, strict=True):
            if op.reports and not (r.outcome == "error" and r.error_code in UNANSWERED):
                self.market.settled(op.reports, r.outcome == "committed")
        unanswered = [r for r in results if r.outcome == "error" and r.error_code in UNANSWERED]
        if unanswered:  # each pool's decision says lease_skipped:<error>
            logger.warning(
                "lease renewals skipped this tick",
                extra={"shard": self.shard, "ops": len(unanswered), "error": unanswered[0].message},
            )
        return results


async def _timed(phases: dict[str, float], name: str, step: Awaitable[T]) -> T:
    """Await `step`, recording how long it took as phase `name` (steps may overlap)."""
    started = time.perf_counter()
    result = await step
    phases[name] = (time.perf_counter() - started) * 1000
    return result


def _lap(phases: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    phases[name] = (now - since) * 1000
    return now


def _unavailable(op: BudgetOp) -> OpResult:
    return OpResult("error", op.campaign_id, message="budget actors unavailable",
                    error_code="unavailable")  # fmt: skip


BidLoopActor = ray.remote(max_restarts=-1, max_task_retries=-1)(BidLoopShard)
