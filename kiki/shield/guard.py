"""Per-platform guard: a circuit breaker and a token bucket in front of each ad platform.

Pure logic; one `PlatformGuard` lives in one actor so that every bid loop and API replica
sees the same breaker state and shares the same platform rate budget.

The platform-wide breakers hear only what KIKI itself observes: its connectors' outcomes (the
bid loops) and an operator's hand. What a tenant reports over the API cannot be verified, so
it counts toward that tenant's own breaker for the platform and gates only that tenant's
admissions: a thousand fake failures trip the reporter's breaker, nobody else's. A tenant's
admissions also draw on a share of the platform's rate budget (`TENANT_SHARE`), so one
tenant cannot spend the budget every tenant's bid loop needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from kiki.clock import Clock
from kiki.errors import InvalidInput
from kiki.shield.breaker import BreakerConfig, BreakerSnapshot, BreakerState, CircuitBreaker
from kiki.shield.policy import PLATFORMS
from kiki.shield.ratelimit import RateLimitConfig, RateLimiter, TokenBucket

# The part of a platform's rate budget one tenant's own admissions may take (rate and burst).
TENANT_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class Admission:
    platform: str
    allowed: bool
    reason: Literal["ok", "breaker_open", "tenant_breaker_open", "rate_limited"]
    retry_after_s: float
    state: BreakerState


class PlatformStatus(BaseModel):
    platform: str
    breaker: BreakerSnapshot
    rate_per_s: float
    burst: int
    tokens: float
    tenant_breaker: BreakerSnapshot | None = None


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
        self._clock = clock
        self.tenant_breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self.tenant_rates = RateLimiter(
            self.rate.rate_per_s * TENANT_SHARE, max(1, int(self.rate.burst * TENANT_SHARE)), clock
        )

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

    def admit_tenant(self, tenant: str, platform: str, calls: int = 1) -> Admission:
        """May the tenant make `calls` calls of its own to `platform`? Refused while the
        platform's breaker is not closed (half-open probes are the connectors' to make), while
        the tenant's own breaker refuses, or past the tenant's share of the rate budget."""
        self.check(platform, calls)
        shared = self.breakers[platform].snapshot()
        if shared.state is not BreakerState.CLOSED:
            return Admission(platform, False, "breaker_open", shared.retry_after_s, shared.state)
        own = self._tenant_breaker(tenant, platform)
        if not own.try_acquire():
            snap = own.snapshot()
            return Admission(platform, False, "tenant_breaker_open", snap.retry_after_s, snap.state)
        share = min(calls, self.tenant_rates.burst)
        wait = self.tenant_rates.check(f"{tenant}\n{platform}", share)
        if wait == 0:
            wait = self.buckets[platform].try_take(min(calls, self.rate.burst))
        if wait > 0:
            return Admission(platform, False, "rate_limited", wait, shared.state)
        return Admission(platform, True, "ok", 0.0, shared.state)

    def record_tenant(self, tenant: str, platform: str, success: bool) -> BreakerState:
        """A tenant's report of its own call: its own breaker only."""
        self.check(platform, success=success)
        breaker = self._tenant_breaker(tenant, platform)
        breaker.on_success() if success else breaker.on_failure()
        return breaker.state

    def _tenant_breaker(self, tenant: str, platform: str) -> CircuitBreaker:
        if not isinstance(tenant, str) or not tenant:
            raise InvalidInput(f"a tenant is named by a non-empty string, not {tenant!r}")
        key = (tenant, platform)
        if key not in self.tenant_breakers:
            self.tenant_breakers[key] = CircuitBreaker(
                f"{platform}/{tenant}", self.breaker_config, self._clock
            )
        return self.tenant_breakers[key]

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

    def status(self, tenant: str | None = None) -> list[PlatformStatus]:
        """Every platform's shared state; with a tenant, that tenant's own breaker too."""
        return [
            PlatformStatus(
                platform=p,
                breaker=self.breakers[p].snapshot(),
                rate_per_s=self.rate.rate_per_s,
                burst=self.rate.burst,
                tokens=round(self.buckets[p].tokens, 3),
                tenant_breaker=(
                    self._tenant_breaker(tenant, p).snapshot() if tenant is not None else None
                ),
            )
            for p in PLATFORMS
        ]
