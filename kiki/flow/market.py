"""Where a bid loop's bids meet a market: the sandbox exchange, or the live ad platforms.

A bid-loop shard asks its market three things and holds no market logic itself: where each
bidding unit lives on its platform (`unit_refs`: account, campaign, ad group), which
connector takes its bids (`connectors`), and what was delivered since the last tick
(`deliver`, which feeds the engine). Plain Python and asyncio: no Ray.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

import httpx
import numpy as np

from kiki.clock import Clock
from kiki.flow.connectors import PlatformSettings, build_connector
from kiki.flow.connectors.base import PlatformConnector
from kiki.flow.engine import BidEngine, TickPlan
from kiki.flow.exchange import (
    ExchangeConfig,
    SandboxConnector,
    SandboxExchange,
    SpendReports,
    sandbox_units,
)
from kiki.flow.live import ReportMark, SpendMarks
from kiki.money import sum_micros_by

logger = logging.getLogger("kiki.flow")
UnitRef = tuple[str, str, str]  # account, campaign ref, ad group ref
CapKey = tuple[str, str, str]  # platform, account, the platform's campaign ref


@dataclass(frozen=True, slots=True)
class Allowance:
    """The most one platform campaign may deliver today: spend already delivered today plus
    what is left of the leases of the pools bidding in it."""

    micros: int
    currency: str
    tenant_id: str
    campaign_id: str  # KIKI's campaign
    pools: tuple[int, ...]


class Market(Protocol):
    connectors: dict[str, PlatformConnector]
    unit_refs: list[UnitRef | None]
    # Per campaign, what the market offered at the goal's highest bids in the last interval
    # (the sandbox's measure of demand; None in the live market).
    reachable: np.ndarray | None
    # The live platforms: reported spend is tracked per report (marks) and each platform
    # campaign's daily budget is pushed from the leases; the sandbox caps each tick itself.
    live: bool

    def rebuild(self, engine: BidEngine) -> None:
        """The shard's campaigns changed: map the engine's units anew."""

    def offer(self, plan: TickPlan) -> None:
        """The tick's plan, before its bids go out."""

    def deliver(self, engine: BidEngine, now: datetime, flush: bool = False) -> np.ndarray:
        """What was delivered since the last tick, fed to the engine; spend per pool.
        `flush`: report all delivery held back (before the units are renumbered)."""

    def pending_marks(self, pool: int) -> tuple[ReportMark, ...]:
        """The report totals a commit of this pool's lease carries to the ledger."""

    def settled(self, marks: tuple[ReportMark, ...], committed: bool) -> None:
        """What became of a commit that carried `marks`."""

    def rewind(self, in_flight: list[tuple[ReportMark, ...]]) -> None:
        """The open leases were dropped: deliver again what no commit charged."""

    async def close(self) -> None: ...


class SandboxMarket:
    """The sandbox exchange (kiki.flow.exchange): auctions cleared for each interval, capped
    at what each pool may spend in the tick; or, in the live market's conditions
    (`tick_cap=False`), only at the daily budget last pushed to each pool's platform, with
    spend reported every `report_s` seconds."""

    def __init__(
        self,
        config: ExchangeConfig,
        seed: int,
        outages: Iterable[str] = (),
        tick_cap: bool = True,
        report_s: float = 0.0,
    ) -> None:
        self.config, self.seed, self.outages = config, seed, set(outages)
        self.tick_cap, self.report_s = tick_cap, report_s
        self.reports: SpendReports | None = None
        self.daily = np.zeros(0, dtype=np.int64)  # per pool: the daily budget pushed
        self.exchange: SandboxExchange | None = None
        self.connectors: dict[str, PlatformConnector] = {}
        self.unit_refs: list[UnitRef | None] = []
        self.reachable: np.ndarray | None = None
        self.last_tick_at: datetime | None = None
        self.live = False

    def rebuild(self, engine: BidEngine) -> None:
        keys = engine.campaign_keys()
        previous = self.exchange
        self.exchange = SandboxExchange(sandbox_units(engine), self.config, self.seed)
        if previous is not None:
            self.exchange.rng = previous.rng
            self.exchange.daily = {}
        # Each pool's spend so far, which its platform holds against the daily budget.
        self.exchange.pool_spent[:] = engine.pool_spent
        self.daily = engine.daily_budgets()
        self.exchange.bids[:] = engine.pushed_bids
        self.unit_refs = [
            ("sandbox", keys[c][1], f"{keys[c][1]}/{g}/{p}")
            for c, g, p in zip(
                engine.unit_campaign.tolist(),
                engine.unit_ad_group,
                engine.unit_platform,
                strict=True,
            )
        ]
        refs = {ref[2]: i for i, ref in enumerate(self.unit_refs) if ref}
        self.connectors = {
            p: SandboxConnector(p, self.exchange, refs, outage=p in self.outages)
            for p in set(engine.unit_platform)
        }

    def offer(self, plan: TickPlan) -> None:
        if self.exchange is not None:
            self.exchange.reach_bids = plan.ceiling_bids

    def deliver(self, engine: BidEngine, now: datetime, flush: bool = False) -> np.ndarray:
        self.reachable = None
        n = len(engine.unit_pool)
        zeros = np.zeros(n, dtype=np.int64)
        if self.exchange is None or self.last_tick_at is None or n == 0:
            self.last_tick_at = now
            self.reports = SpendReports(self.report_s, now)
            return engine.observe(zeros, zeros, zeros, zeros)
        assert self.reports is not None
        seconds = (now - self.last_tick_at).total_seconds()
        caps = (
            engine.pool_cap
            if self.tick_cap
            else np.maximum(self.daily - self.exchange.pool_spent, 0)
        )
        d = self.exchange.run(self.last_tick_at, seconds, caps)
        self.last_tick_at = now
        campaigns = len(engine.campaigns)
        self.reachable = sum_micros_by(engine.unit_campaign, d.reachable_micros, campaigns)
        if not self.reports.add(d, now) and not flush:
            return engine.observe(zeros, zeros, zeros, zeros, fresh=False)
        pool_spend = engine.observe(*self.reports.take())
        self.daily = engine.daily_budgets()
        return pool_spend

    def pending_marks(self, pool: int) -> tuple[ReportMark, ...]:
        return ()

    def settled(self, marks: tuple[ReportMark, ...], committed: bool) -> None:
        return None

    def rewind(self, in_flight: list[tuple[ReportMark, ...]]) -> None:
        return None

    async def close(self) -> None:
        return None


class LiveMarket:
    """The real platforms: bids to each ad group's `platform_refs`, spend from the
    platforms' reports, polled every `spend_poll_s` by a task of its own (never awaited by a
    tick) as increments of each ad group's daily total (kiki.flow.live.SpendMarks), and each
    platform campaign's allowance for the day, for its pushed daily budget."""

    def __init__(
        self, credentials: dict[str, PlatformSettings], spend_poll_s: float, clock: Clock
    ) -> None:
        self.credentials, self.spend_poll_s, self.clock = credentials, spend_poll_s, clock
        self.connectors: dict[str, PlatformConnector] = {}
        self.unit_refs: list[UnitRef | None] = []
        self.reachable: np.ndarray | None = None
        self.live = True
        self.marks = SpendMarks()
        self._http: dict[str, httpx.AsyncClient] = {}
        self._platforms: list[str] = []
        self._pool_groups: list[tuple[str, set[str]]] = []  # per pool: platform, ad group refs
        self._pool_campaigns: list[list[CapKey]] = []  # per pool: the platform campaigns
        self._campaign_groups: dict[CapKey, set[str]] = {}
        self._pool_owner: list[tuple[str, str, str]] = []  # per pool: tenant, campaign, currency
        self._report_call: asyncio.Task[None] | None = None
        self._last_report = 0.0
        self._fresh = False  # a poll finished since the last tick: the controller may step

    def rebuild(self, engine: BidEngine) -> None:
        refs: list[UnitRef | None] = []
        for c, group_id, platform in zip(
            engine.unit_campaign.tolist(), engine.unit_ad_group, engine.unit_platform, strict=True
        ):
            group = next(g for g in engine.campaigns[c].ad_groups if g.ad_group_id == group_id)
            ref = group.platform_refs.get(platform)
            refs.append((ref.account_id, ref.campaign_ref, ref.ad_group_ref) if ref else None)
        self.unit_refs, self._platforms = refs, list(engine.unit_platform)
        pools = len(engine.pool_campaign)
        self._pool_groups = [(engine.pool_platform[p], set()) for p in range(pools)]
        self._pool_campaigns = [[] for _ in range(pools)]
        self._campaign_groups = {}
        for pool, platform, ref in zip(engine.unit_pool.tolist(), self._platforms, refs,
                                       strict=True):  # fmt: skip
            if ref is None:
                continue
            key = (platform, ref[0], ref[1])
            self._pool_groups[pool][1].add(ref[2])
            self._campaign_groups.setdefault(key, set()).add(ref[2])
            if key not in self._pool_campaigns[pool]:
                self._pool_campaigns[pool].append(key)
        self._pool_owner = [
            (engine.campaigns[c].tenant_id, engine.campaigns[c].campaign_id,
             engine.campaigns[c].currency)
            for c in engine.pool_campaign.tolist()
        ]  # fmt: skip
        for platform, settings in self.credentials.items():
            if platform not in self.connectors:
                self._http[platform] = httpx.AsyncClient(timeout=settings.timeout_s)
                self.connectors[platform] = build_connector(
                    platform, self._http[platform], settings
                )

    def offer(self, plan: TickPlan) -> None:
        return None

    def deliver(self, engine: BidEngine, now: datetime, flush: bool = False) -> np.ndarray:
        call = self._report_call
        if call is not None and call.done():
            self._report_call = None
            if call.exception() is not None:
                logger.warning("spend reports failed", extra={"error": repr(call.exception())})
        if self._report_call is None and time.monotonic() - self._last_report >= self.spend_poll_s:
            self._last_report = time.monotonic()
            self._report_call = asyncio.get_running_loop().create_task(self._poll_reports())
        columns = np.zeros((4, len(engine.unit_pool)), dtype=np.int64)
        due = self.marks.take()
        fresh, self._fresh = self._fresh, False
        units = zip(engine.unit_platform, self.unit_refs, strict=True)
        for i, (platform, ref) in enumerate(units):
            got = due.pop((platform, ref[2]), None) if ref else None
            if got is not None:
                columns[:, i] = (got.spend_micros, got.clicks, got.conversions, got.value_micros)
        return engine.observe(*columns, fresh=fresh)

    def allowances(self, remaining: np.ndarray, today: date) -> dict[CapKey, Allowance]:
        """Per platform campaign: what it may deliver today. A pool's remaining lease is
        split evenly (rounded down) over the platform campaigns its ad groups live in."""
        out: dict[CapKey, Allowance] = {}
        for pool, keys in enumerate(self._pool_campaigns):
            share = max(0, int(remaining[pool])) // len(keys) if keys else 0
            tenant, campaign, currency = self._pool_owner[pool]
            for key in keys:
                before = out.get(key)
                if before is None:
                    spent = self.marks.spent_on(key[0], self._campaign_groups[key], today)
                    out[key] = Allowance(spent + share, currency, tenant, campaign, (pool,))
                else:
                    out[key] = Allowance(before.micros + share, currency, tenant, campaign,
                                         (*before.pools, pool))  # fmt: skip
        return out

    def platform_of(self, unit: int) -> str:
        return self._platforms[unit]

    def owner(self, pool: int) -> tuple[str, str]:
        """The pool's tenant and campaign."""
        return self._pool_owner[pool][:2]

    def pending_marks(self, pool: int) -> tuple[ReportMark, ...]:
        platform, refs = self._pool_groups[pool]
        return self.marks.pending(platform, refs)

    def settled(self, marks: tuple[ReportMark, ...], committed: bool) -> None:
        self.marks.settled(marks, committed)

    def rewind(self, in_flight: list[tuple[ReportMark, ...]]) -> None:
        self.marks.rewind(in_flight)

    async def _poll_reports(self) -> None:
        """Today's (and yesterday's, for the hours around midnight) delivery of every account
        the shard bids in, as running totals per ad group and day."""
        today = self.clock.now().date()
        accounts = {
            (p, ref[0]) for p, ref in zip(self._platforms, self.unit_refs, strict=True)
            if ref and p in self.connectors
        }  # fmt: skip
        for platform, account in sorted(accounts):
            rows = await self.connectors[platform].spend_report(
                account, today - timedelta(days=1), today
            )
            self.marks.report(platform, rows)
        self.marks.forget_before(today - timedelta(days=1))
        self._fresh = True

    async def close(self) -> None:
        """The last report in flight counts; then the HTTP clients are closed."""
        if self._report_call is not None:
            await asyncio.gather(self._report_call, return_exceptions=True)
        for client in self._http.values():
            await client.aclose()
