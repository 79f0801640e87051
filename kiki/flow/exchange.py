"""The sandbox exchange: a seeded auction simulator that stands in for the ad platforms locally.

Each bidding unit (campaign x ad group x platform) sees its own stream of click auctions:
Poisson arrivals whose rate follows the daily traffic curve in the unit's time zone, one
highest competing bid per auction (log-normal around the platform's market price), cleared at
second price (the winner pays the competing bid, at least the floor) or, per platform, at
first price (the winner pays its bid: Google's ad exchange since 2019). Conversions follow the
segment's true conversion rate and are valued from the segment's customer value with
log-normal spread. Spend is capped per pool (one campaign on one platform) at what the bid
loop passes for the interval: in the sandbox's own mode the budget reserved for the tick; in
the live market's conditions only what is left of the daily budget pushed to the platform.

Vectorised with numpy: a tick of 20,000 units is a few array operations, not a Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kiki.errors import InvalidInput, Unavailable
from kiki.flow.connectors.base import (
    BidChange,
    BudgetChange,
    ChangeResult,
    PlatformConnector,
    SpendRow,
    StatusChange,
)
from kiki.flow.connectors.http import C
from kiki.flow.pacing import HOURLY_TRAFFIC
from kiki.money import sum_micros_by

if TYPE_CHECKING:
    from kiki.flow.engine import BidEngine

# The hourly curve scaled to mean 1, so auctions_per_s is the daily average rate.
_HOURLY_RATE = HOURLY_TRAFFIC * len(HOURLY_TRAFFIC)


class ExchangeConfig(BaseModel):
    """Market parameters; the defaults give a CPC market around $1 where demand exceeds most
    campaigns' budgets (so pacing, not supply, decides spend)."""

    model_config = ConfigDict(frozen=True)

    auctions_per_s: float = Field(0.5, gt=0, description="mean auctions per unit per second")
    market_price_micros: dict[str, int] = Field(
        default_factory=lambda: {
            "google_ads": 1_200_000,
            "meta": 800_000,
            "tiktok": 600_000,
            "linkedin": 3_000_000,
            "amazon": 900_000,
        },
        description="median highest competing CPC bid per platform",
    )
    price_sigma: float = Field(0.6, gt=0, description="log-normal spread of competing bids")
    floor_micros: int = Field(10_000, ge=0, description="reserve price")
    value_sigma: float = Field(0.8, ge=0, description="log-normal spread of conversion values")
    auction: dict[str, Literal["second", "first"]] = Field(
        default_factory=dict,
        description="how each platform clears (absent: second price; first: pays its bid)",
    )


@dataclass(frozen=True, slots=True)
class Units:
    """The static facts of each bidding unit, as parallel arrays."""

    pool: np.ndarray  # int: index of the unit's (campaign, platform) budget pool
    platform: Sequence[str]  # platform name per unit
    utc_offset_h: np.ndarray  # float: the campaign's time zone, for the traffic curve
    true_cvr: np.ndarray  # float: the segment's real conversion rate per click
    true_value_micros: np.ndarray  # float: mean value of a conversion


@dataclass(frozen=True, slots=True)
class Delivery:
    """What each unit got over one interval."""

    auctions: np.ndarray
    clicks: np.ndarray
    spend_micros: np.ndarray
    conversions: np.ndarray
    value_micros: np.ndarray
    # What a bidder seeing every auction in advance could have bought at `reach_bids`,
    # uncapped: the market's limit, by which the simulator tells demand from pacing.
    reachable_micros: np.ndarray


def segment_traits(segment: str, default_value: int) -> tuple[float, float]:
    """A sandbox segment's hidden truth, fixed by its name: conversion rate 2-8 % and a true
    value per conversion 0.7-1.3x the ad group's stated one."""
    rng = np.random.default_rng(int.from_bytes(segment.encode()[:8].ljust(8, b"\0"), "big"))
    return float(rng.uniform(0.02, 0.08)), default_value * float(rng.uniform(0.7, 1.3))


def sandbox_units(engine: BidEngine) -> Units:
    """The engine's bidding units as the sandbox market sees them: each campaign's time zone
    and each segment's hidden conversion rate and value."""
    offsets = [
        (c.starts_at.astimezone(ZoneInfo(c.timezone)).utcoffset() or timedelta(0)).total_seconds()
        / 3600
        for c in engine.campaigns
    ]
    traits = [
        segment_traits(seg, int(v))
        for seg, v in zip(engine.unit_segment, engine.unit_default_value, strict=True)
    ]
    return Units(
        pool=engine.unit_pool,
        platform=engine.unit_platform,
        utc_offset_h=np.array(offsets)[engine.unit_campaign] if offsets else np.zeros(0),
        true_cvr=np.array([t[0] for t in traits]),
        true_value_micros=np.array([t[1] for t in traits]),
    )


class SandboxExchange:
    """Auctions for a fixed set of units; bids are set by the connectors, caps by the loop."""

    def __init__(self, units: Units, config: ExchangeConfig, seed: int = 0) -> None:
        self.units = units
        self.config = config
        self.rng = np.random.default_rng(seed)
        n = len(units.pool)
        self.bids = np.zeros(n, dtype=np.int64)
        self.reach_bids = np.zeros(n, dtype=np.int64)  # the highest bids the goals allow
        unknown = set(units.platform) - set(config.market_price_micros)
        if unknown:
            raise InvalidInput(f"the sandbox has no market for {sorted(unknown)}")
        self._median = np.array([config.market_price_micros[p] for p in units.platform], float)
        self._first_price = np.array(
            [config.auction.get(p, "second") == "first" for p in units.platform], dtype=bool
        )
        pools = int(units.pool.max()) + 1 if n else 0
        self.pool_spent = np.zeros(pools, dtype=np.int64)  # all the run's spend, per pool
        # The last interval's auctions (unit, highest competing bid, cleared at first price):
        # the offline optimum's log.
        self.last_auctions: tuple[np.ndarray, ...] = (np.zeros(0, int), np.zeros(0, int))
        self.last_bound = np.zeros(pools, dtype=bool)
        # Spend per unit and UTC day, for spend reports.
        self.daily: dict[date, Delivery] = {}

    def run(self, start: datetime, seconds: float, pool_caps: np.ndarray) -> Delivery:
        """Clear every auction in [start, start + seconds); no pool spends past its cap."""
        units, rng, n = self.units, self.rng, len(self.units.pool)
        hour = (start.hour + start.minute / 60 + self.units.utc_offset_h) % 24
        rate = self.config.auctions_per_s * _HOURLY_RATE[hour.astype(int)] * seconds
        counts = rng.poisson(rate)
        unit = np.repeat(np.arange(n), counts)
        competing = np.maximum(
            np.floor(self._median[unit] * rng.lognormal(0.0, self.config.price_sigma, unit.size)),
            self.config.floor_micros,
        ).astype(np.int64)
        arrival = rng.random(unit.size)
        bid = self.bids[unit]
        won = (bid > 0) & (bid >= competing)
        paid = np.where(self._first_price[unit], bid, competing)
        # Within each pool, in arrival order, stop once the next click would pass the cap.
        pool = units.pool[unit]
        order = np.lexsort((arrival, pool))
        price = np.where(won, paid, 0)[order]
        spent = np.cumsum(price)
        pool_sorted = pool[order]
        starts = np.searchsorted(pool_sorted, pool_sorted, side="left")
        before = np.concatenate([[0], spent])[starts]
        within = (spent - before) <= pool_caps[pool_sorted]
        kept = np.zeros(unit.size, dtype=bool)
        kept[order] = within & (price > 0)
        conversions = rng.random(unit.size) < units.true_cvr[unit]
        converted = kept & conversions
        values = np.floor(
            units.true_value_micros[unit]
            * rng.lognormal(-(self.config.value_sigma**2) / 2, self.config.value_sigma, unit.size)
        ).astype(np.int64)  # a conversion's value, whole micros
        delivery = Delivery(
            auctions=counts,
            clicks=np.bincount(unit, minlength=n, weights=kept).astype(np.int64),
            spend_micros=sum_micros_by(unit, np.where(kept, paid, 0), n),
            conversions=np.bincount(unit, minlength=n, weights=converted).astype(np.int64),
            value_micros=sum_micros_by(unit, np.where(converted, values, 0), n),
            reachable_micros=sum_micros_by(
                unit, np.where(self.reach_bids[unit] >= competing, competing, 0), n
            ),
        )
        self._record(start.date(), delivery)
        self.pool_spent += sum_micros_by(units.pool, delivery.spend_micros, len(self.pool_spent))
        self.last_auctions = (unit, competing, self._first_price[unit])
        # Pools whose cap stopped a won auction this interval: where the cap, not the bid, paced.
        self.last_bound = np.bincount(pool[won & ~kept], minlength=len(self.pool_spent)) > 0
        return delivery

    def totals(self) -> Delivery:
        """What each unit got over every day run so far."""
        days = [_fields(d) for d in self.daily.values()]
        return Delivery(*(sum(column) for column in zip(*days, strict=True)))

    def _record(self, day: date, delivery: Delivery) -> None:
        seen = self.daily.get(day)
        if seen is None:
            self.daily[day] = delivery
            return
        self.daily[day] = Delivery(
            *(a + b for a, b in zip(_fields(seen), _fields(delivery), strict=True))
        )


class SpendReports:
    """Delivery as the bid loop learns of it: at once (`every_s` 0, the sandbox's own mode), or
    in one report every `every_s` seconds, as a live platform's spend report is polled."""

    def __init__(self, every_s: float, start: datetime) -> None:
        self.every_s, self.last = every_s, start
        self.held: list[np.ndarray] | None = None

    def add(self, delivered: Delivery, now: datetime) -> bool:
        """Hold one interval's delivery; True when a report is due (`take` it)."""
        got = [
            delivered.spend_micros,
            delivered.clicks,
            delivered.conversions,
            delivered.value_micros,
        ]
        held = self.held
        self.held = got if held is None else [a + b for a, b in zip(held, got, strict=True)]
        if (now - self.last).total_seconds() + 1e-9 < self.every_s:
            return False
        self.last = now
        return True

    def take(self) -> list[np.ndarray]:
        """Spend, clicks, conversions and value per unit since the last report."""
        assert self.held is not None
        held, self.held = self.held, None
        return held


def _fields(delivery: Delivery) -> tuple[np.ndarray, ...]:
    return (
        delivery.auctions,
        delivery.clicks,
        delivery.spend_micros,
        delivery.conversions,
        delivery.value_micros,
        delivery.reachable_micros,
    )


class SandboxConnector(PlatformConnector):
    """One platform of the sandbox exchange behind the same interface as the real platforms.

    `outage=True` makes the platform answer like one that is down (the loop's circuit
    breaker must then open and the other platforms go on): `kiki simulate --fail-platform`.
    """

    def __init__(
        self, platform: str, exchange: SandboxExchange, refs: dict[str, int], outage: bool = False
    ) -> None:
        self.platform = platform  # type: ignore[misc]  # per instance: one class, five names
        self.exchange = exchange
        self.refs = refs  # ad_group_ref -> unit index in the exchange
        self.outage = outage

    def _up(self) -> None:
        if self.outage:
            raise Unavailable(f"sandbox {self.platform}: 503 Service Unavailable (outage)")

    async def push_bids(self, changes: Sequence[BidChange]) -> list[ChangeResult]:
        return self._apply(changes, lambda c: c.bid_micros)

    async def push_status(self, changes: Sequence[StatusChange]) -> list[ChangeResult]:
        """A paused ad group bids nothing (it wins no auction); one serving again gets its
        bid back with the loop's next bid push."""
        return self._apply(changes, lambda c: 0 if c.paused else None)

    def _apply(self, changes: Sequence[C], bid: Callable[[C], int | None]) -> list[ChangeResult]:
        """Set each known ad group's bid (None: leave it); unknown ones are refused."""
        self._up()
        results = []
        for change in changes:
            index = self.refs.get(change.ad_group_ref)
            if index is None:
                results.append(ChangeResult(ok=False, ref=change.ad_group_ref, error="no such"))
                continue
            value = bid(change)
            if value is not None:
                self.exchange.bids[index] = value
            results.append(ChangeResult(ok=True, ref=change.ad_group_ref))
        return results

    async def push_budget(self, change: BudgetChange) -> ChangeResult:
        self._up()
        # Budgets in the sandbox are the pool caps the loop passes to each run.
        return ChangeResult(ok=True, ref=change.campaign_ref)

    async def spend_report(self, account_id: str, start: date, end: date) -> list[SpendRow]:
        self._up()
        rows = []
        for day, delivery in sorted(self.exchange.daily.items()):
            if not start <= day <= end:
                continue
            for ref, i in self.refs.items():
                rows.append(
                    SpendRow(
                        ad_group_ref=ref,
                        day=day,
                        impressions=int(delivery.auctions[i]),
                        clicks=int(delivery.clicks[i]),
                        conversions=int(delivery.conversions[i]),
                        spend_micros=int(delivery.spend_micros[i]),
                        conversion_value_micros=int(delivery.value_micros[i]),
                    )
                )
        return rows
