"""Per-platform guard: a circuit breaker and a token bucket in front of each ad platform.

Pure logic; one `PlatformGuard` lives in one actor so that every bid loop and API replica
sees the same breaker state and shares the same platform rate budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from kiki.clock import Clock
from kiki.errors import InvalidInput
from kiki.shield.breaker import BreakerConfig, BreakerSnapshot, BreakerState, CircuitBreaker
from kiki.shield.policy import PLATFORMS
from kiki.shield.ratelimit import RateLimitConfig, TokenBucket


@dataclass(frozen=True, slots=True)
class Admission:
    platform: str
    allowed: bool
    reason: Literal["ok", "breaker_open", "rate_limited"]
    retry_after_s: float
    state: BreakerState


class PlatformStatus(BaseModel):
    platform: str
    breaker: BreakerSnapshot
    rate_per_s: float
    burst: int
    tokens: float


class PlatformGuard:
    def __init__(
        self,
        clock: Clock,
        breaker: BreakerConfig | None = None,
        rate: RateLimitConfig | None = None,
    ) -> None:
        self.breaker_config = breaker or BreakerConfig()
        self.rate = rate or RateLimitConfig(rate_per_s=50, burst=100)
        self.breakers = {p: CircuitBreaker(p, self.breaker_config, clock) for p in PLATFORMS}
        self.buckets = {
            p: TokenBucket(self.rate.rate_per_s, self.rate.burst, clock) for p in PLATFORMS
        }

    def check(self, platform: str, calls: int = 1, success: bool = True) -> None:
        """Refuse a request the guard cannot act on (a negative call count would refill a
        rate budget), before anything changes."""
        if not isinstance(platform, str) or platform not in self.breakers:
            raise InvalidInput(f"unknown platform {platform!r}; use one of {list(PLATFORMS)}")
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
            raise InvalidInput(f"calls must be a whole number of at least 1, not {calls!r}")
        if not isinstance(success, bool):
            raise InvalidInput(f"an outcome is true (success) or false, not {success!r}")

    def admit(self, platform: str, calls: int = 1) -> Admission:
        """May `calls` calls go to `platform` now? The breaker is asked first, so a refused
        call never spends rate budget."""
        self.check(platform, calls)
        breaker = self.breakers[platform]
        if not breaker.try_acquire():
            snap = breaker.snapshot()
            return Admission(platform, False, "breaker_open", snap.retry_after_s, snap.state)
        wait = self.buckets[platform].try_take(min(calls, self.rate.burst))
        if wait > 0:
            return Admission(platform, False, "rate_limited", wait, breaker.state)
        return Admission(platform, True, "ok", 0.0, breaker.state)

    def record(self, platform: str, success: bool) -> BreakerState:
        self.check(platform, success=success)
        breaker = self.breakers[platform]
        breaker.on_success() if success else breaker.on_failure()
        return breaker.state

    def reset(self, platform: str) -> None:
        self.check(platform)
        self.breakers[platform].reset()

    def force_open(self, platform: str) -> None:
        self.check(platform)
        self.breakers[platform].force_open()

    def status(self) -> list[PlatformStatus]:
        return [
            PlatformStatus(
                platform=p,
                breaker=self.breakers[p].snapshot(),
                rate_per_s=self.rate.rate_per_s,
                burst=self.rate.burst,
                tokens=round(self.buckets[p].tokens, 3),
            )
            for p in PLATFORMS
        ]
