"""Bid-loop actors: a few long-lived processes, each running the bid loop of many campaigns.

Campaigns are sharded over `shards` named actors by the same stable hash as the budget actors.
A tick, for all of a shard's campaigns at once (kiki.flow.engine does the arithmetic):

1. take in what the platforms delivered since the last tick (the sandbox exchange clears its
   auctions for the interval, capped at what was reserved);
2. read each segment's value (one batched call, cached for the tick);
3. decide allowances and bids;
4. renew the budget leases that are due (kiki.flow.leases: commit what a lease used, reserve
   the next window), one batched call per budget actor; and meanwhile
5. push the bids that moved more than the threshold, through the guard actor's breaker and
   rate limit (one admission call per tick), one connector call per platform;
6. hand the decisions to the audit writer (COPY in the background, `decision:` log lines).

Ticks never overlap: one task runs them in turn; a tick that overruns is counted and the next
one starts at once (missed ticks are skipped, not stacked). In a simulation the driver calls
`tick(now)` itself on a virtual clock.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import asyncpg
import httpx
import numpy as np
import ray
from ray import serve
from ray.util import metrics

from actors import shard_options
from actors.budget import BudgetClient
from actors.guard import platform_guard
from actors.resilience import Supervisor, command, within
from kiki.billing import metering
from kiki.clock import Clock, VirtualClock, WallClock
from kiki.db.pool import create_pool
from kiki.errors import FailedPrecondition, KikiError, RateLimited, Unavailable
from kiki.flow import audit, store
from kiki.flow.campaigns import Campaign
from kiki.flow.connectors import build_connector
from kiki.flow.connectors.base import BidChange, PlatformConnector
from kiki.flow.engine import BidEngine, TickPlan
from kiki.flow.exchange import ExchangeConfig, SandboxConnector, SandboxExchange, sandbox_units
from kiki.flow.leases import UNANSWERED, LeaseBook, commit_op
from kiki.flow.live import Delivered, SpendDeltas, parse_credentials
from kiki.money import sum_micros_by
from kiki.shield.book import BudgetOp, OpResult, shard_of

logger = logging.getLogger("kiki.flow")
T = TypeVar("T")
ACTOR_PREFIX = "kiki-bidloop"
PUSH_BATCH = 100  # bid changes per platform API call
MAX_AUDIT_BACKLOG = 500_000  # rows; past this a tick waits for the writer


@dataclass
class TickReport:
    """What one tick did and where its time went (milliseconds)."""

    tick_id: int
    at: datetime
    decisions: int
    ms: float
    phases: dict[str, float]
    pushed: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # platform -> breaker/rate reason
    spent: list[int] = field(default_factory=list)  # per campaign, in the shard's order
    # Per campaign: what the sandbox offered at the goal's highest bids in the interval (the
    # simulator's measure of demand; empty in the live market).
    reachable: list[int] = field(default_factory=list)


@dataclass
class ShardStats:
    """Per campaign, for the simulator and operators: spend, value and budget so far."""

    keys: list[tuple[str, str]]
    budget: list[int]
    spent: list[int]
    value: list[int]
    ticks: int
    slow_ticks: int
    audit_rows: int


@dataclass
class Heartbeat:
    """A shard's liveness: a wall-clock loop that has not completed a tick for a few tick
    intervals is stalled (its campaigns are not bidding)."""

    shard: int
    ticks: int
    autorun: bool
    ticking: bool
    up_s: float
    last_tick_age_s: float | None
    restarts: int

    def problem(self, tick_s: float, grace_s: float) -> str | None:
        """Why this shard is unhealthy, or None. A shard gets `grace_s` to load and tick."""
        if not self.autorun:
            return None  # a simulation's shard, driven tick by tick
        if not self.ticking or self.last_tick_age_s is None:
            if self.up_s < grace_s:
                return None  # still loading its campaigns
            if not self.ticking:
                return "its tick loop is not running (the shard could not load its campaigns)"
            return f"no tick completed in {self.up_s:.0f} s"
        if self.last_tick_age_s > max(3 * tick_s, 10.0):
            return f"last tick completed {self.last_tick_age_s:.0f} s ago"
        return None


class AuditWriter:
    """Buffers ticks' decisions; a background task COPYs them and appends the log lines. With
    `bill`, the same transaction reports the decisions to Billing (`bid_decisions`), so
    usage matches the trail exactly."""

    def __init__(
        self, pool: asyncpg.Pool, log_path: Path | None, supervisor: Supervisor, bill: bool = True
    ) -> None:
        self.pool = pool
        self.log_path = log_path
        self.bill = bill
        self.batches: list[audit.Decisions] = []
        self.backlog = 0  # rows in self.batches
        self.written = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        supervisor.start("audit_writer", self._run)
        if log_path:
            log_path.parent.mkdir(parents=True, exist_ok=True)

    async def add(self, decisions: audit.Decisions) -> None:
        if self.backlog > MAX_AUDIT_BACKLOG:
            await self.flush()  # back-pressure: never let the trail fall far behind
        self.batches.append(decisions)
        self.backlog += len(decisions)
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.batches:
                batches, self.batches = self.batches, []
                rows = sum(len(b) for b in batches)
                try:
                    async with self.pool.acquire() as conn, conn.transaction():
                        await store.copy_decisions(conn, _rows(batches))
                        if self.bill:
                            await metering.record_many(conn, audit.usage(_rows(batches)))
                except Exception as exc:
                    # Keep the rows: the next pass retries them first.
                    logger.warning("audit write failed; retrying", extra={"error": repr(exc)})
                    self.batches = batches + self.batches
                    await asyncio.sleep(0.5)
                    continue
                self.backlog -= rows
                self.written += rows
                await self._log(batches)
            self._idle.set()

    async def _log(self, batches: list[audit.Decisions]) -> None:
        """The `decision:` lines. The rows are already in PostgreSQL, so a failed file write
        (disk full, folder gone) is logged and skipped, never retried into duplicates."""
        if not self.log_path:
            return
        try:
            with self.log_path.open("a") as out:
                for batch in batches:
                    out.write(audit.log_lines(batch))
                    await asyncio.sleep(0)  # let a tick waiting on I/O go on
        except OSError as exc:
            logger.warning("decision log not written", extra={"error": repr(exc)})

    async def flush(self) -> None:
        """Wait until every row handed in so far is in PostgreSQL."""
        self._wake.set()
        while self.batches or not self._idle.is_set():
            await self._idle.wait()
            if self.batches:
                self._idle.clear()
                self._wake.set()


def _rows(batches: list[audit.Decisions]) -> Iterator[tuple]:
    return itertools.chain.from_iterable(b.rows() for b in batches)


class BidLoopShard:
    """One shard of the bid loop. A thin shell: the decisions are kiki.flow.engine's."""

    def __init__(
        self,
        shard: int,
        shards: int,
        database_url: str,
        *,
        tick_s: float = 2.0,
        namespace: str = "kiki",
        budget_shards: int = 2,
        clock: Clock | None = None,
        autorun: bool = True,
        exchange: ExchangeConfig | None = None,
        seed: int = 0,
        outages: Sequence[str] = (),
        value_app: str | None = "value",
        credentials: dict[str, Any] | None = None,
        spend_poll_s: float = 60.0,
        log_dir: str | None = None,
        guard_rate: dict | None = None,
        detached: bool = True,
        tenant_id: str | None = None,
        lease_ticks: int = 10,
        call_timeout_s: float = 10.0,
    ) -> None:
        self.shard, self.shards = shard, shards
        self.call_timeout_s = call_timeout_s
        self.database_url = database_url
        self.tick_s = tick_s
        self.clock = clock or WallClock()
        self.autorun = autorun
        self.exchange_config = exchange or ExchangeConfig()
        self.seed = seed
        self.outages = set(outages)
        # Segment values come from this Serve app (SyncValue); None = the ad groups' defaults.
        self.value_app = value_app
        # With credentials, the live market: the real platforms' connectors, spend from
        # their reports (kiki.flow.live); without, the sandbox exchange.
        self.credentials = parse_credentials(credentials) if credentials else None
        self.spend_poll_s = spend_poll_s
        self._http: dict[str, httpx.AsyncClient] = {}
        self._unit_refs: list[tuple[str, str, str] | None] = []
        self._reported = SpendDeltas()
        self._live_delivery: dict[tuple[str, str], Delivered] = {}  # (platform, ref) -> due
        self._report_call: asyncio.Task | None = None
        self._last_report = 0.0
        self._value_keys: list[tuple[str, str]] = []  # distinct (tenant, segment)
        self._unit_value_key = np.zeros(0, dtype=np.int64)  # unit -> index in _value_keys
        self._segment_values: dict[tuple[str, str], int] = {}
        self._value_call: asyncio.Task | None = None
        self._value_error: str | None = None
        self.tenant_id = tenant_id  # a simulation's tenant: run only its campaigns
        self.budgets = BudgetClient(
            database_url,
            shards=budget_shards,
            namespace=namespace,
            clock=clock if isinstance(clock, VirtualClock) else None,
            detached=detached,
            call_timeout_s=call_timeout_s,
        )
        self.guard = platform_guard(namespace=namespace, rate=guard_rate)
        self.log_path = Path(log_dir) / f"decisions-{shard}-of-{shards}.log" if log_dir else None
        self.engine = BidEngine([])
        self.exchange: SandboxExchange | None = None
        self.connectors: dict[str, PlatformConnector] = {}
        self.lease_ticks = lease_ticks
        self._incarnation = uuid4().hex[:12]  # tells this process's lease keys from earlier ones
        # One SyncShield reservation per pool; pools come with the first campaigns loaded.
        self.leases = LeaseBook(np.zeros(0, dtype=np.int64), lease_ticks)
        self.pending_commits: list[BudgetOp] = []  # commits that failed, retried next tick
        self._reachable: np.ndarray | None = None  # the sandbox's last TickReport.reachable
        self.tick_id = 0
        self.slow_ticks = 0
        self.last_tick_at: datetime | None = None
        self._pool: asyncpg.Pool | None = None
        self._audit: AuditWriter | None = None
        self._ready: asyncio.Task | None = None
        self._tick_lock = asyncio.Lock()
        self._supervisor = Supervisor(f"bidloop-{shard}")
        self._created = time.monotonic()
        self._last_tick_ok: float | None = None  # monotonic time the last tick completed
        tags = {"shard": str(shard)}
        self._tick_ms = metrics.Histogram(
            "kiki_flow_tick_ms",
            "bid-loop tick duration (ms)",
            boundaries=[10, 50, 100, 250, 500, 1000, 2000, 5000],
            tag_keys=("shard",),
        )
        self._tick_ms.set_default_tags(tags)
        self._decisions = metrics.Counter(
            "kiki_flow_decisions", "bid decisions made", tag_keys=("shard",)
        )
        self._decisions.set_default_tags(tags)
        self._slow = metrics.Counter(
            "kiki_flow_slow_ticks", "ticks longer than tick_s", tag_keys=("shard",)
        )
        self._slow.set_default_tags(tags)

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
        self._audit = AuditWriter(
            self._pool, self.log_path, self._supervisor, bill=self.tenant_id is None
        )
        await self.budgets.ready()
        await self._load()
        if self.autorun:
            self._supervisor.start("tick_loop", self._run)

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
            every = await store.running_campaigns(conn, self.tenant_id)
        # A campaign past its end stays one more tick, to commit its last interval.
        horizon = self.clock.now() - timedelta(seconds=self.tick_s)
        mine = [
            c
            for c in every
            if shard_of(c.tenant_id, c.campaign_id, self.shards) == self.shard
            and c.ends_at > horizon
        ]
        await self._rebuild(mine)

    async def _rebuild(self, campaigns: list[Campaign]) -> None:
        old = self.engine
        engine = BidEngine(campaigns)
        engine.carry_from(old)
        new_keys = set(engine.campaign_keys()) - set(old.campaign_keys())
        if new_keys:
            # Spend so far comes from the ledger, not from memory: survives restarts.
            ops = [BudgetOp("status", t, c) for t, c in sorted(new_keys)]
            index = {k: i for i, k in enumerate(engine.campaign_keys())}
            for op, result in zip(ops, await self.budgets.execute(ops), strict=True):
                if result.outcome == "status" and result.snapshot:
                    key = (op.tenant_id, op.campaign_id)
                    engine.spent[index[key]] = result.snapshot["committed"]
        await self._settle_reservations(old)
        self.engine = engine
        tenants = [c.tenant_id for c in campaigns]
        unit_keys = [
            (tenants[c], seg)
            for c, seg in zip(engine.unit_campaign.tolist(), engine.unit_segment, strict=True)
        ]
        self._value_keys = sorted(set(unit_keys))
        index = {k: i for i, k in enumerate(self._value_keys)}
        self._unit_value_key = np.array([index[k] for k in unit_keys], dtype=np.int64)
        self.leases = LeaseBook(engine.pool_campaign, self.lease_ticks)
        self._build_market()

    async def _settle_reservations(self, old: BidEngine) -> None:
        """Before the pools are renumbered, close the open leases: deliver what the sandbox
        owes for the interval, commit it, and start fresh."""
        self.leases.spend(self._deliver(old, self.clock.now()))
        keys = old.campaign_keys()
        closing = self.leases.close_all()
        ops = [commit_op(keys[old.pool_campaign[p]], rid, used) for p, rid, used in closing]
        await self._run_budget_ops(ops)
        old.granted(np.zeros(len(old.pool_campaign)))

    def _build_market(self) -> None:
        if self.credentials is None:
            self._build_exchange()
            return
        engine = self.engine
        self.exchange = None
        refs: list[tuple[str, str, str] | None] = []
        for c, group_id, platform in zip(
            engine.unit_campaign.tolist(), engine.unit_ad_group, engine.unit_platform, strict=True
        ):
            group = next(g for g in engine.campaigns[c].ad_groups if g.ad_group_id == group_id)
            ref = group.platform_refs.get(platform)
            refs.append((ref.account_id, ref.campaign_ref, ref.ad_group_ref) if ref else None)
        self._unit_refs = refs
        for platform, settings in self.credentials.items():
            if platform not in self.connectors:
                self._http[platform] = httpx.AsyncClient(timeout=settings.timeout_s)
                self.connectors[platform] = build_connector(
                    platform, self._http[platform], settings
                )

    def _build_exchange(self) -> None:
        engine = self.engine
        keys = engine.campaign_keys()
        units = sandbox_units(engine)
        previous = self.exchange
        self.exchange = SandboxExchange(units, self.exchange_config, self.seed + self.shard)
        if previous is not None:
            self.exchange.rng = previous.rng
            self.exchange.daily = {}
        self.exchange.bids[:] = engine.pushed_bids
        self._unit_refs = [
            ("sandbox", keys[c][1], f"{keys[c][1]}/{g}/{p}")
            for c, g, p in zip(
                engine.unit_campaign.tolist(),
                engine.unit_ad_group,
                engine.unit_platform,
                strict=True,
            )
        ]
        refs = {ref[2]: i for i, ref in enumerate(self._unit_refs) if ref}
        self.connectors = {
            p: SandboxConnector(p, self.exchange, refs, outage=p in self.outages)
            for p in set(engine.unit_platform)
        }

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
            next_at = max(next_at + self.tick_s, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    @command("bidloop")
    async def stop(self) -> int:
        """Stop ticking, settle open reservations and flush the audit trail. Returns rows
        written in total."""
        await self._supervisor.stop("tick_loop")
        if self._report_call is not None:  # the last spend report counts
            await asyncio.gather(self._report_call, return_exceptions=True)
        async with self._tick_lock:
            await self._settle_reservations(self.engine)
            if self._audit:
                await self._audit.flush()
        for client in self._http.values():
            await client.aclose()
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
            autorun=self.autorun,
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

    def _deliver(self, engine: BidEngine, now: datetime) -> np.ndarray:
        """What the platforms delivered since the last tick; updates the engine. Spend per
        pool."""
        n = len(engine.unit_pool)
        if self.credentials is not None:
            return self._deliver_reported(engine)
        if self.exchange is None or self.last_tick_at is None or n == 0:
            self.last_tick_at = now
            zeros = np.zeros(n, dtype=np.int64)
            return engine.observe(zeros, zeros, zeros, zeros)
        seconds = (now - self.last_tick_at).total_seconds()
        d = self.exchange.run(self.last_tick_at, seconds, engine.pool_cap)
        self.last_tick_at = now
        campaigns = len(engine.campaigns)
        self._reachable = sum_micros_by(engine.unit_campaign, d.reachable_micros, campaigns)
        return engine.observe(d.spend_micros, d.clicks, d.conversions, d.value_micros)

    def _deliver_reported(self, engine: BidEngine) -> np.ndarray:
        """Live market: what the platforms reported since the last tick (polled every
        spend_poll_s by a task of its own, never awaited by a tick)."""
        call = self._report_call
        if call is not None and call.done():
            self._report_call = None
            if call.exception() is not None:
                logger.warning("spend reports failed", extra={"error": repr(call.exception())})
        if self._report_call is None and time.monotonic() - self._last_report >= self.spend_poll_s:
            self._last_report = time.monotonic()
            self._report_call = asyncio.get_running_loop().create_task(self._poll_reports())
        n = len(engine.unit_pool)
        columns = np.zeros((4, n), dtype=np.int64)
        due, self._live_delivery = self._live_delivery, {}
        units = zip(engine.unit_platform, self._unit_refs, strict=True)
        for i, (platform, ref) in enumerate(units):
            got = due.get((platform, ref[2])) if ref else None
            if got is not None:
                columns[:, i] = (got.spend_micros, got.clicks, got.conversions, got.value_micros)
        return engine.observe(*columns)

    async def _poll_reports(self) -> None:
        """Today's (and yesterday's, for the hours around midnight) delivery of every account
        the shard bids in, as increments since the last report."""
        today = self.clock.now().date()
        accounts = {
            (p, ref[0]) for p, ref in zip(self.engine.unit_platform, self._unit_refs, strict=True)
            if ref and p in self.connectors
        }  # fmt: skip
        for platform, account in sorted(accounts):
            rows = await self.connectors[platform].spend_report(
                account, today - timedelta(days=1), today
            )
            for ref, delivered in self._reported.update(rows).items():
                before = self._live_delivery.get((platform, ref), Delivered())
                self._live_delivery[(platform, ref)] = Delivered(
                    before.spend_micros + delivered.spend_micros,
                    before.clicks + delivered.clicks,
                    before.conversions + delivered.conversions,
                    before.value_micros + delivered.value_micros,
                )

    def _values(self) -> np.ndarray:
        """Each unit's segment value (micros; 0 = unknown, the ad group's default applies).

        One batched call to SyncValue for all the shard's segments, never awaited by a tick:
        a tick uses the answer of the last call that finished (values change daily, ticks
        every few seconds), and starts the next call when none is in flight."""
        call = self._value_call
        if call is not None and call.done():
            self._value_call = None
            error = repr(call.exception()) if call.exception() else None
            if error is None:
                for tenant, found in call.result().items():
                    for segment, micros in found.items():
                        self._segment_values[(tenant, segment)] = micros
            elif error != self._value_error:  # once per distinct failure, not every tick
                logger.warning("segment values unavailable", extra={"error": error})
            self._value_error = error
        if self.value_app and self._value_keys and self._value_call is None:
            self._value_call = asyncio.get_running_loop().create_task(self._fetch_values())
        per_key = np.array([self._segment_values.get(k, 0) for k in self._value_keys], np.int64)
        return per_key[self._unit_value_key] if len(per_key) else np.zeros(0, np.int64)

    async def _fetch_values(self) -> dict[str, dict[str, int]]:
        requests: dict[str, list[str]] = {}
        for tenant, segment in self._value_keys:
            requests.setdefault(tenant, []).append(segment)
        handle = serve.get_app_handle(self.value_app)
        return await within(
            handle.segment_values.remote(requests), self.call_timeout_s, "SyncValue"
        )

    async def _tick(self, now: datetime) -> TickReport:
        started = time.perf_counter()
        phases: dict[str, float] = {}
        engine = self.engine
        self.tick_id += 1

        self._reachable = None
        self.leases.spend(self._deliver(engine, now))
        mark = _lap(phases, "deliver", started)

        values = self._values()
        plan = engine.decide(now, now + timedelta(seconds=self.tick_s), values)
        if self.exchange is not None:
            self.exchange.reach_bids = plan.ceiling_bids
        mark = _lap(phases, "decide", mark)

        # Renewing the leases and pushing the bids touch separate state (the bids do not
        # depend on the grants; the caps bound the next interval's delivery): both wait on
        # other processes at once. Both finish before a failure of either ends the tick.
        renewed, sent = await asyncio.gather(
            _timed(phases, "budget", self._renew_leases(engine, plan)),
            _timed(phases, "push", self._push(plan, now)),
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
        self._tick_ms.observe(ms)
        if decisions:
            self._decisions.inc(len(decisions))
        if ms > self.tick_s * 1000:
            self.slow_ticks += 1
            self._slow.inc()
            logger.warning("slow tick", extra={"shard": self.shard, "ms": round(ms)})
        reachable = [] if self._reachable is None else self._reachable.tolist()
        return TickReport(
            self.tick_id, now, len(decisions), ms, phases, pushed, refused,
            engine.spent.tolist(), reachable,
        )  # fmt: skip

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
        results = await self._run_budget_ops(self.pending_commits + commits + reserves)
        denied = self.leases.settle(renewals, results[len(results) - len(reserves) :], self.tick_id)
        engine.granted(self.leases.caps(plan.reserve))
        return denied

    async def _run_budget_ops(self, ops: list[BudgetOp]) -> list:
        """One call per budget actor. Commits that fail are kept and retried next tick (the
        idempotency key makes the retry safe); their reservations expire meanwhile only if
        SyncShield stays down for the whole reservation TTL."""
        if not ops:
            return []
        ops = self.budgets.with_keys(ops)
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
        unanswered = [r for r in results if r.outcome == "error" and r.error_code in UNANSWERED]
        if unanswered:  # each pool's decision says lease_skipped:<error>
            logger.warning(
                "lease renewals skipped this tick",
                extra={"shard": self.shard, "ops": len(unanswered), "error": unanswered[0].message},
            )
        return results

    async def _push(self, plan: TickPlan, now: datetime) -> tuple[np.ndarray, int, dict[str, str]]:
        """Send the bids that moved, platform by platform, through the guard."""
        engine = self.engine
        result = np.full(len(engine.unit_pool), "unchanged", dtype=object)
        moved = np.flatnonzero(plan.push)
        if moved.size == 0:
            return result, 0, {}
        platforms = np.array(engine.unit_platform, dtype=object)
        by_platform = {p: moved[platforms[moved] == p] for p in sorted(set(platforms[moved]))}
        calls = [(p, -(-len(units) // PUSH_BATCH)) for p, units in by_platform.items()]
        try:
            admissions = await within(
                self.guard.admit_many.remote(calls), self.call_timeout_s, "the platform guard"
            )
        except Unavailable as exc:  # no admission, no push: the bids wait for the next tick
            logger.warning("bids not pushed", extra={"error": exc.message})
            result[moved] = "guard_unavailable"
            return result, 0, dict.fromkeys(by_platform, "guard_unavailable")
        refused: dict[str, str] = {}
        jobs = []
        for admission, (platform, units) in zip(admissions, by_platform.items(), strict=True):
            if not admission.allowed:
                refused[platform] = admission.reason
                result[units] = admission.reason
                continue
            if platform not in self.connectors:
                result[units] = "no_connector"
                continue
            routable = np.array([self._unit_refs[u] is not None for u in units.tolist()], bool)
            result[units[~routable]] = "no_platform_ref"
            units = units[routable]
            if units.size == 0:
                continue
            changes = [
                BidChange.model_construct(
                    account_id=self._unit_refs[u][0],
                    campaign_ref=self._unit_refs[u][1],
                    ad_group_ref=self._unit_refs[u][2],
                    bid_micros=int(plan.bids[u]),
                    currency=engine.campaigns[engine.unit_campaign[u]].currency,
                )
                for u in units.tolist()
            ]
            jobs.append((platform, units, self._send(platform, changes)))
        outcomes = await asyncio.gather(*(job for _, _, job in jobs))
        pushed = 0
        reports = []
        for (platform, units, _), (ok, texts, failed) in zip(jobs, outcomes, strict=True):
            result[units] = texts
            engine.pushed(units, ok)
            pushed += int(ok.sum())
            reports.append((platform, not failed))
        if reports:
            try:
                await within(
                    self.guard.record_many.remote(reports), self.call_timeout_s, "the guard"
                )
            except Unavailable as exc:  # the breakers miss one tick's outcomes
                logger.warning("push outcomes not recorded", extra={"error": exc.message})
        return result, pushed, refused

    async def _send(
        self, platform: str, changes: list[BidChange]
    ) -> tuple[np.ndarray, list[str], bool]:
        """Push in batches. Returns per change (accepted, result text), and whether the
        platform itself failed (what its circuit breaker counts)."""
        connector = self.connectors[platform]
        ok, texts, failed = [], [], False
        for start in range(0, len(changes), PUSH_BATCH):
            batch = changes[start : start + PUSH_BATCH]
            try:
                answers = await connector.push_bids(batch)
            except KikiError as exc:
                # Only the platform failing counts against its breaker, not a refused amount.
                failed = failed or isinstance(exc, Unavailable | RateLimited)
                ok.extend([False] * len(batch))
                texts.extend([exc.code] * len(batch))
                logger.warning(
                    "platform push failed", extra={"platform": platform, "error": exc.message}
                )
                continue
            for answer in answers:
                ok.append(answer.ok)
                texts.append("pushed" if answer.ok else f"rejected: {answer.error}")
        return np.array(ok, dtype=bool), texts, failed


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


class BidLoopClient:
    """Creates (or finds) the bid-loop shards and routes campaign changes to them."""

    def __init__(
        self, database_url: str, shards: int = 2, num_cpus: float = 0.2, **options
    ) -> None:
        self.shards = shards
        self.call_timeout_s = float(options.get("call_timeout_s", 10.0))
        detached = options.get("detached", True)
        namespace = options.get("namespace", "kiki")
        self.actors = [
            BidLoopActor.options(
                **shard_options(
                    ACTOR_PREFIX,
                    i,
                    shards,
                    namespace,
                    detached,
                    num_cpus=num_cpus,
                    max_concurrency=100,
                )
            ).remote(i, shards, database_url, **options)
            for i in range(shards)
        ]

    def actor_for(self, tenant_id: str, campaign_id: str) -> ray.actor.ActorHandle:
        return self.actors[shard_of(tenant_id, campaign_id, self.shards)]

    async def ready(self) -> int:
        return sum(await asyncio.gather(*(a.ready.remote() for a in self.actors)))

    async def reload(self, tenant_id: str, campaign_id: str) -> None:
        shard = shard_of(tenant_id, campaign_id, self.shards)
        await within(
            self.actors[shard].reload.remote(), self.call_timeout_s, f"bid-loop shard {shard}"
        )

    async def health(self, tick_s: float, grace_s: float, timeout_s: float) -> dict[str, str]:
        """Each shard's state: "ok" when it completed a tick in the last few intervals."""

        async def one(i: int) -> str:
            try:
                beat = await within(
                    self.actors[i].heartbeat.remote(), timeout_s, f"bid-loop shard {i}"
                )
            except KikiError as exc:
                return f"failed: {exc.message}"
            problem = beat.problem(tick_s, grace_s)
            return "ok" if problem is None else f"failed: {problem}"

        states = await asyncio.gather(*(one(i) for i in range(self.shards)))
        return {f"bidloop_shard_{i}": state for i, state in enumerate(states)}

    async def tick_all(self, now: datetime) -> list[TickReport]:
        return await asyncio.gather(*(a.tick.remote(now) for a in self.actors))

    async def stats(self) -> list[ShardStats]:
        return await asyncio.gather(*(a.stats.remote() for a in self.actors))

    async def flush(self) -> int:
        """Wait until every shard's audit trail is written; returns the rows written."""
        return sum(await asyncio.gather(*(a.flush.remote() for a in self.actors)))

    async def stop(self) -> int:
        return sum(await asyncio.gather(*(a.stop.remote() for a in self.actors)))

    def kill(self) -> None:
        """End the shards (after `stop`): a simulation's actors must not keep holding CPUs."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


def settle_bid_loops(shards: int, namespace: str = "kiki", timeout_s: float = 30.0) -> int:
    """On shutdown: stop every bid-loop shard that exists (no new ticks, open leases
    committed, the audit trail flushed), then end it so a shared cluster does not keep
    bidding. Returns the audit rows the shards had written."""
    found = []
    for i in range(shards):
        try:
            found.append(ray.get_actor(f"{ACTOR_PREFIX}-{i}-of-{shards}", namespace=namespace))
        except ValueError:  # never started
            continue
    if not found:
        return 0
    written = sum(ray.get([a.stop.remote() for a in found], timeout=timeout_s))
    for actor in found:
        ray.kill(actor, no_restart=True)
    return written
