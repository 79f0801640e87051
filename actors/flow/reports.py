"""What a bid-loop shard reports: each tick, its campaigns so far, and its liveness."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from ray.util import metrics

from actors.telemetry import counter


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


class TickMetrics:
    """A shard's tick duration, decisions and slow ticks, through Ray's metrics agent."""

    def __init__(self, shard: int) -> None:
        tags = {"shard": str(shard)}
        self.tick_ms = metrics.Histogram(
            "kiki_flow_tick_ms",
            "bid-loop tick duration (ms)",
            boundaries=[10, 50, 100, 250, 500, 1000, 2000, 5000],
            tag_keys=("shard",),
        )
        # At 0 from the start, so a shard without campaigns shows 0 decisions and 0 slow
        # ticks rather than nothing.
        self.decisions = counter("kiki_flow_decisions", "bid decisions made", ("shard",), [tags])
        self.slow = counter("kiki_flow_slow_ticks", "ticks longer than tick_s", ("shard",), [tags])
        # Wall-clock time of the last completed tick (or of the start): a loop that stops
        # ticking leaves it behind, which is what the stall alert measures.
        self.last_tick = metrics.Gauge(
            "kiki_flow_last_tick_seconds",
            "Unix time of the shard's last completed tick (its start before the first)",
            tag_keys=("shard",),
        )
        for metric in (self.tick_ms, self.decisions, self.slow, self.last_tick):
            metric.set_default_tags(tags)
        self._last_tick_at: float | None = None

    def alive(self) -> None:
        """The wall-clock loop completed a tick (or started)."""
        self._last_tick_at = time.time()
        self.last_tick.set(self._last_tick_at)

    async def keep_exported(self) -> None:
        """Set the last tick's time again. Ray's metrics agent drops a gauge that was not set
        within two export intervals (20 s by default), and a stalled loop sets none: without
        this the stall alert's series would vanish just when it matters (seen in CI)."""
        if self._last_tick_at is not None:
            self.last_tick.set(self._last_tick_at)

    def record(self, ms: float, decisions: int, tick_s: float) -> bool:
        """Record one tick; True when it overran its interval."""
        self.tick_ms.observe(ms)
        if decisions:
            self.decisions.inc(decisions)
        slow = ms > tick_s * 1000
        if slow:
            self.slow.inc()
        return slow
