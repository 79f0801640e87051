"""Pushing a tick's bids to the platforms: one admission call to the guard actor (breakers
and rate budgets), one connector call per platform and batch, outcomes back to the breakers.
In the live market, the platform campaigns' daily budgets go out the same way first, and the
ad groups of pools left without one in force are paused there."""

from __future__ import annotations

import asyncio
import logging
from datetime import date

import asyncpg
import numpy as np

from actors.resilience import within
from kiki.errors import KikiError, RateLimited, Unavailable
from kiki.flow import caps, store
from kiki.flow.connectors.base import BidChange, BudgetChange, StatusChange
from kiki.flow.engine import BidEngine, TickPlan
from kiki.flow.market import Allowance, CapKey, LiveMarket, Market
from kiki.shield import Admission

logger = logging.getLogger("kiki.flow")
PUSH_BATCH = 100  # bid changes per platform API call


class BidPusher:
    def __init__(self, guard: object, market: Market, timeout_s: float) -> None:
        self.guard, self.market, self.timeout_s = guard, market, timeout_s

    async def push(
        self, engine: BidEngine, plan: TickPlan
    ) -> tuple[np.ndarray, int, dict[str, str]]:
        """Send the bids that moved, platform by platform, through the guard. Returns each
        unit's connector result, the bids accepted, and the platforms refused (why)."""
        refs = self.market.unit_refs
        result = np.full(len(engine.unit_pool), "unchanged", dtype=object)
        moved = np.flatnonzero(plan.push)
        if moved.size == 0:
            return result, 0, {}
        platforms = np.array(engine.unit_platform, dtype=object)
        by_platform = {p: moved[platforms[moved] == p] for p in sorted(set(platforms[moved]))}
        admissions = await self._admit(by_platform)
        if admissions is None:
            result[moved] = "guard_unavailable"
            return result, 0, dict.fromkeys(by_platform, "guard_unavailable")
        refused: dict[str, str] = {}
        jobs = []
        for admission, (platform, units) in zip(admissions, by_platform.items(), strict=True):
            if not admission.allowed:
                refused[platform] = admission.reason
                result[units] = admission.reason
                continue
            if platform not in self.market.connectors:
                result[units] = "no_connector"
                continue
            routable = np.array([refs[u] is not None for u in units.tolist()], bool)
            result[units[~routable]] = "no_platform_ref"
            units = units[routable]
            if units.size == 0:
                continue
            changes = [
                BidChange.model_construct(
                    account_id=refs[u][0],
                    campaign_ref=refs[u][1],
                    ad_group_ref=refs[u][2],
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
        await record_outcomes(self.guard, reports, self.timeout_s)
        return result, pushed, refused

    async def _admit(self, by_platform: dict[str, np.ndarray]) -> list[Admission] | None:
        """One admission call to the guard for the tick's pushes (None: the guard did not
        answer in time, nothing is pushed and the bids wait for the next tick)."""
        calls = [(p, -(-len(units) // PUSH_BATCH)) for p, units in by_platform.items()]
        try:
            return await within(
                self.guard.admit_many.remote(calls),
                self.timeout_s,
                "the platform guard",
            )
        except Unavailable as exc:
            logger.warning("bids not pushed", extra={"error": exc.message})
            return None

    async def _send(
        self, platform: str, changes: list[BidChange]
    ) -> tuple[np.ndarray, list[str], bool]:
        """Push in batches. Returns per change (accepted, result text), and whether the
        platform itself failed (what its circuit breaker counts)."""
        connector = self.market.connectors[platform]
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


class CapPusher:
    """The live market's platform-side caps: each platform campaign's allowance for the day
    (kiki.flow.market.LiveMarket.allowances) pushed as its daily budget in the platform's
    terms (kiki.flow.caps), through the guard like the bids. Pushed before the tick's bids;
    a pool whose cap could not be pushed does not bid, and its ad groups are paused at the
    platform (`hold`): the bids it placed earlier would otherwise keep spending there under
    no budget of KIKI's (none at all, one below the platform's minimum, or an older one)."""

    def __init__(
        self, guard: object, market: LiveMarket, timeout_s: float, threshold: float
    ) -> None:
        self.guard, self.market, self.timeout_s = guard, market, timeout_s
        self.threshold = threshold
        self.last: dict[CapKey, tuple[date, int]] = {}  # the budget each campaign holds now
        # (platform, account, ad group) paused by KIKI; loaded at a shard's start
        self.paused: set[tuple[str, str, str]] = set()

    def due(self, remaining: np.ndarray, today: date) -> dict[CapKey, tuple[Allowance, int]]:
        """The platform campaigns whose daily budget should change, and to what."""
        wanted = {}
        for key, allowance in self.market.allowances(remaining, today).items():
            budget = caps.daily_budget(key[0], allowance.micros, allowance.currency)
            last = self.last.get(key)
            held = last[1] if last is not None and last[0] == today else None
            if caps.push_due(held, budget, self.threshold):
                wanted[key] = (allowance, budget)
        return wanted

    async def push(self, remaining: np.ndarray, today: date, pool: asyncpg.Pool | None) -> set[int]:
        """Push the budgets that are due; returns the pools left without a cap in force."""
        wanted = self.due(remaining, today)
        by_platform: dict[str, list[CapKey]] = {}
        for key in wanted:
            by_platform.setdefault(key[0], []).append(key)
        if not by_platform:
            return set()
        try:
            calls = [(p, len(keys)) for p, keys in by_platform.items()]
            admissions = await within(
                self.guard.admit_many.remote(calls), self.timeout_s, "the platform guard"
            )
        except Unavailable as exc:
            logger.warning("daily budgets not pushed", extra={"error": exc.message})
            admissions = [None] * len(by_platform)
        blocked: set[int] = set()
        outcomes, accepted = [], []
        for admission, (platform, keys) in zip(admissions, by_platform.items(), strict=True):
            if admission is None or not admission.allowed or platform not in self.market.connectors:
                blocked.update(p for key in keys for p in wanted[key][0].pools)
                continue
            failed = False
            for key in keys:
                allowance, budget = wanted[key]
                ok, platform_failed = await self._push_one(key, allowance, budget)
                failed = failed or platform_failed
                if ok:
                    self.last[key] = (today, budget)
                    accepted.append(
                        (allowance.tenant_id, allowance.campaign_id, *key, today,
                         allowance.currency, budget)
                    )  # fmt: skip
                else:
                    self.last.pop(key, None)  # unknown now: pushed again next tick
                    blocked.update(allowance.pools)
            outcomes.append((platform, not failed))
        await record_outcomes(self.guard, outcomes, self.timeout_s)
        if accepted and pool is not None:
            async with pool.acquire() as conn:
                await store.record_budget_pushes(conn, accepted)
        return blocked

    async def _push_one(self, key: CapKey, allowance: Allowance, budget: int) -> tuple[bool, bool]:
        """(accepted, the platform itself failed: what its breaker counts)."""
        change = BudgetChange(
            account_id=key[1],
            campaign_ref=key[2],
            daily_budget_micros=budget,
            currency=allowance.currency,
        )
        try:
            result = await self.market.connectors[key[0]].push_budget(change)
        except KikiError as exc:
            logger.warning(
                "daily budget not pushed", extra={"platform": key[0], "error": exc.message}
            )
            return False, isinstance(exc, Unavailable | RateLimited)
        if not result.ok:
            logger.warning(
                "daily budget refused", extra={"platform": key[0], "error": result.error}
            )
        return result.ok, False

    async def hold(
        self, units: list[int], blocked: set[int], pool: asyncpg.Pool | None
    ) -> dict[int, str]:
        """Pause the ad groups of the `blocked` pools at their platform, and let those KIKI
        paused serve again once their pool's budget is in force, through the guard. `units`:
        each unit's pool. Returns, per unit of a blocked pool, the decision log's text: why
        it did not bid and whether its ad group is paused (a pause not sent or failed is
        tried again next tick)."""
        if not blocked and not self.paused:  # every tick's usual case: nothing to walk
            return {}
        refs = self.market.unit_refs
        changes: dict[str, list[tuple[int, StatusChange]]] = {}
        texts: dict[int, str] = {}
        for unit, ref in enumerate(refs):
            if ref is None:
                continue
            platform = self.market.platform_of(unit)
            key, stop = (platform, ref[0], ref[2]), units[unit] in blocked
            if stop:
                texts[unit] = "cap_not_pushed: ad group paused"
            if stop == (key in self.paused):
                continue
            change = StatusChange(
                account_id=ref[0], campaign_ref=ref[1], ad_group_ref=ref[2], paused=stop
            )
            changes.setdefault(platform, []).append((unit, change))
        if not changes:
            return texts
        admissions: list[Admission | None]
        try:
            calls = [(p, -(-len(c) // PUSH_BATCH)) for p, c in changes.items()]
            admissions = await within(
                self.guard.admit_many.remote(calls), self.timeout_s, "the platform guard"
            )
        except Unavailable as exc:
            admissions = [None] * len(changes)
            logger.warning("ad group statuses not pushed", extra={"error": exc.message})
        paused, resumed, outcomes = [], [], []
        for admission, (platform, items) in zip(admissions, changes.items(), strict=True):
            connector = self.market.connectors.get(platform)
            why = (
                "guard_unavailable" if admission is None
                else admission.reason if not admission.allowed
                else None if connector else "no_connector"
            )  # fmt: skip
            if why is None:
                try:
                    results = await connector.push_status([c for _, c in items])
                except KikiError as exc:
                    # Only the platform failing counts against its breaker.
                    outcomes.append((platform, not isinstance(exc, Unavailable | RateLimited)))
                    logger.warning("ad group statuses not pushed",
                                   extra={"platform": platform, "error": exc.message})  # fmt: skip
                    why = exc.code
            if why is not None:
                texts.update({u: f"cap_not_pushed: not paused ({why})" for u, c in items
                              if c.paused})  # fmt: skip
                continue
            outcomes.append((platform, True))
            for (unit, change), result in zip(items, results, strict=True):
                key = (platform, change.account_id, change.ad_group_ref)
                if not result.ok:
                    if change.paused:
                        texts[unit] = f"cap_not_pushed: not paused ({result.error})"
                    continue
                if change.paused:
                    self.paused.add(key)
                    paused.append((*self.market.owner(units[unit]), *key))
                else:
                    self.paused.discard(key)
                    resumed.append(key)
        await record_outcomes(self.guard, outcomes, self.timeout_s)
        if (paused or resumed) and pool is not None:
            async with pool.acquire() as conn:
                await store.record_paused(conn, paused, resumed)
        return texts


async def record_outcomes(guard: object, reports: list[tuple[str, bool]], timeout_s: float) -> None:
    """Each platform's push outcome to its breaker (a missed deadline loses one tick's)."""
    if not reports:
        return
    try:
        await within(guard.record_many.remote(reports), timeout_s, "the guard")
    except Unavailable as exc:
        logger.warning("push outcomes not recorded", extra={"error": exc.message})
