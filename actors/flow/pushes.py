"""Pushing a tick's bids to the platforms: one admission call to the guard actor (breakers
and rate budgets), one connector call per platform and batch, outcomes back to the breakers."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from actors.resilience import within
from kiki.errors import KikiError, RateLimited, Unavailable
from kiki.flow.connectors.base import BidChange
from kiki.flow.engine import BidEngine, TickPlan
from kiki.flow.market import Market
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
        await self._record(reports)
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

    async def _record(self, reports: list[tuple[str, bool]]) -> None:
        """Each platform's push outcome to its breaker (a missed deadline loses one tick's)."""
        if not reports:
            return
        try:
            await within(self.guard.record_many.remote(reports), self.timeout_s, "the guard")
        except Unavailable as exc:
            logger.warning("push outcomes not recorded", extra={"error": exc.message})

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
