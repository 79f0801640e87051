"""The platform guard actor: one named actor holds every platform's breaker and rate budget.

Callers batch: the bid loop asks `admit_many` once per tick and reports `record_many` once.
"""

from __future__ import annotations

import ray
from ray.util import metrics

from actors.resilience import command
from kiki.clock import WallClock
from kiki.errors import InvalidInput
from kiki.shield.breaker import BreakerConfig, BreakerState
from kiki.shield.guard import Admission, PlatformGuard, PlatformStatus
from kiki.shield.ratelimit import RateLimitConfig

GUARD_NAME = "kiki-platform-guard"
_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class GuardShell:
    def __init__(self, breaker: dict | None = None, rate: dict | None = None) -> None:
        self.guard = PlatformGuard(
            WallClock(),
            BreakerConfig(**breaker) if breaker else None,
            RateLimitConfig(**rate) if rate else None,
        )
        self._state = metrics.Gauge(
            "kiki_breaker_state",
            "breaker state per platform: 0 closed, 1 half-open, 2 open",
            tag_keys=("platform",),
        )
        self._refused = metrics.Counter(
            "kiki_platform_calls_refused",
            "calls refused by breaker or rate limit",
            tag_keys=("platform", "reason"),
        )
        self._publish()

    def _publish(self) -> None:
        for status in self.guard.status():
            self._state.set(_STATE_VALUE[status.breaker.state], tags={"platform": status.platform})

    @command("guard")
    def admit_many(self, requests: list[tuple[str, int]]) -> list[Admission]:
        """Admit each (platform, calls). All are checked before any is admitted, so a
        refused request spends no platform's budget."""
        for platform, calls in _pairs(requests):
            self.guard.check(platform, calls)
        answers = [self.guard.admit(platform, calls) for platform, calls in requests]
        for a in answers:
            if not a.allowed:
                self._refused.inc(1, tags={"platform": a.platform, "reason": a.reason})
        self._publish()
        return answers

    @command("guard")
    def record_many(self, outcomes: list[tuple[str, bool]]) -> dict[str, BreakerState]:
        for platform, success in _pairs(outcomes):
            self.guard.check(platform, success=success)
        states = {platform: self.guard.record(platform, ok) for platform, ok in outcomes}
        self._publish()
        return states

    @command("guard")
    def admit_tenant(self, tenant: str, platform: str, calls: int) -> Admission:
        """A tenant's own call (the API's admit): its breaker and its share of the budget."""
        answer = self.guard.admit_tenant(tenant, platform, calls)
        if not answer.allowed:
            self._refused.inc(1, tags={"platform": platform, "reason": answer.reason})
        return answer

    @command("guard")
    def record_tenant(self, tenant: str, platform: str, outcomes: list[bool]) -> BreakerState:
        """A tenant's reported outcomes: they feed its own breaker, never the shared one."""
        if not isinstance(outcomes, list):
            raise InvalidInput("send a list of outcomes (true for success)")
        for success in outcomes:
            self.guard.check(platform, success=success)
        state = BreakerState.CLOSED
        for success in outcomes:
            state = self.guard.record_tenant(tenant, platform, success)
        return state

    @command("guard")
    def reset(self, platform: str) -> None:
        self.guard.reset(platform)
        self._publish()

    @command("guard")
    def force_open(self, platform: str) -> None:
        self.guard.force_open(platform)
        self._publish()

    @command("guard")
    def status(self, tenant: str | None = None) -> list[PlatformStatus]:
        self._publish()
        return self.guard.status(tenant)


def _pairs(items: object) -> list[tuple]:
    if not isinstance(items, list | tuple) or not all(
        isinstance(item, list | tuple) and len(item) == 2 for item in items
    ):
        raise InvalidInput("send a list of (platform, value) pairs")
    return list(items)  # type: ignore[arg-type]


GuardActor = ray.remote(max_restarts=-1, max_task_retries=-1)(GuardShell)


def platform_guard(namespace: str = "kiki", num_cpus: float = 0.05, **config: dict):
    """The cluster's one guard actor, created on first use."""
    return GuardActor.options(
        name=GUARD_NAME,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=num_cpus,
    ).remote(**config)
