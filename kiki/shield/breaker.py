"""Circuit breaker with resilience4j's COUNT_BASED semantics, timed by a `Clock`.

A pure state machine: it never raises and never calls anything. Callers ask `try_acquire()`
before a call, report `on_success()` or `on_failure()` after it, and decide what a refusal
means (skip, fall back, or raise their own error). Thread-safe, because Serve runs sync
handlers in a thread pool and one breaker may guard a whole replica.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from kiki.clock import Clock

TRANSITION_HISTORY = 100


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class BreakerConfig(BaseModel):
    """Same names and defaults meaning as resilience4j's CircuitBreakerConfig (COUNT_BASED)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_rate_threshold: float = Field(
        default=50, gt=0, le=100, description="Percent of failed calls that opens the breaker."
    )
    sliding_window_size: int = Field(
        default=20, ge=1, description="How many of the latest calls the failure rate covers."
    )
    minimum_number_of_calls: int = Field(
        default=10,
        ge=1,
        description=(
            "Calls needed in the window before the rate is evaluated; capped at "
            "sliding_window_size, as resilience4j does, since a larger one is never reached."
        ),
    )
    wait_duration_in_open_state_s: float = Field(
        default=30, gt=0, allow_inf_nan=False, description="Seconds OPEN before HALF_OPEN."
    )
    permitted_number_of_calls_in_half_open_state: int = Field(
        default=3, ge=1, description="Probe calls admitted in HALF_OPEN before deciding."
    )


class BreakerSnapshot(BaseModel):
    """What a breaker looks like now, for health pages and metrics."""

    model_config = ConfigDict(frozen=True)

    name: str
    state: BreakerState
    failure_rate: float | None = Field(
        description="Percent over the buffered calls; None while below the minimum number."
    )
    buffered_calls: int
    failed_calls: int
    opened_at: datetime | None = Field(
        description="When the breaker last opened; None once it has closed again."
    )
    retry_after_s: float = Field(description="Seconds until HALF_OPEN when OPEN, else 0.")


class Transition(NamedTuple):
    at: datetime
    from_state: BreakerState
    to_state: BreakerState


class _CountWindow:
    """Outcomes of the latest `size` calls, with the failure count kept up to date in O(1)."""

    def __init__(self, size: int) -> None:
        self._failed_flags: deque[bool] = deque(maxlen=size)
        self.failed = 0

    @property
    def calls(self) -> int:
        return len(self._failed_flags)

    def record(self, failed: bool) -> None:
        if len(self._failed_flags) == self._failed_flags.maxlen:
            self.failed -= self._failed_flags[0]  # the oldest outcome is about to slide out
        self._failed_flags.append(failed)
        self.failed += failed

    def failure_rate(self, minimum_calls: int) -> float | None:
        if self.calls < minimum_calls:
            return None
        # failed * 100 first: exact integers, so e.g. 3 of 10 is exactly 30.0, not 30.000…04.
        return self.failed * 100 / self.calls


class CircuitBreaker:
    """CLOSED → OPEN when the failure rate over the window reaches the threshold; OPEN → HALF_OPEN
    after the wait; HALF_OPEN → CLOSED or back to OPEN on the rate over the probe calls."""

    def __init__(self, name: str, config: BreakerConfig, clock: Clock) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._wait = timedelta(seconds=config.wait_duration_in_open_state_s)
        self._minimum_calls = min(config.minimum_number_of_calls, config.sliding_window_size)
        self._state = BreakerState.CLOSED
        self._window = _CountWindow(config.sliding_window_size)
        self._opened_at: datetime | None = None
        self._probes_admitted = 0
        self._transitions: deque[Transition] = deque(maxlen=TRANSITION_HISTORY)

    @property
    def state(self) -> BreakerState:
        """The state now: reading it after the open wait has elapsed moves OPEN to HALF_OPEN."""
        with self._lock:
            return self._current_state(self._clock.now())

    @property
    def transitions(self) -> list[Transition]:
        """The latest state changes, oldest first (at most TRANSITION_HISTORY)."""
        with self._lock:
            return list(self._transitions)

    def try_acquire(self) -> bool:
        """Whether a call may go ahead now; in HALF_OPEN each True admits one probe call."""
        with self._lock:
            state = self._current_state(self._clock.now())
            if state is BreakerState.CLOSED:
                return True
            if (
                state is BreakerState.HALF_OPEN
                and self._probes_admitted < self.config.permitted_number_of_calls_in_half_open_state
            ):
                self._probes_admitted += 1
                return True
            return False

    def on_success(self) -> None:
        self._record(failed=False)

    def on_failure(self) -> None:
        self._record(failed=True)

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            now = self._clock.now()
            state = self._current_state(now)
            retry_after_s = 0.0
            if state is BreakerState.OPEN:
                retry_after_s = (self._half_open_at() - now).total_seconds()
            return BreakerSnapshot(
                name=self.name,
                state=state,
                failure_rate=self._window.failure_rate(self._evaluation_minimum()),
                buffered_calls=self._window.calls,
                failed_calls=self._window.failed,
                opened_at=self._opened_at,
                retry_after_s=retry_after_s,
            )

    def reset(self) -> None:
        """Back to CLOSED with an empty window, whatever the state."""
        with self._lock:
            self._enter(BreakerState.CLOSED, self._clock.now())

    def force_open(self) -> None:
        """Trip the breaker now (an operator's or a caller's decision); the usual wait follows,
        restarted if it was already OPEN."""
        with self._lock:
            self._enter(BreakerState.OPEN, self._clock.now())

    def _record(self, failed: bool) -> None:
        with self._lock:
            now = self._clock.now()
            # Outcomes arriving while OPEN come from calls admitted before the breaker tripped:
            # they say nothing about the recovery the next HALF_OPEN probes will test. The state
            # is the one time gives, so whether anyone read `state` changes nothing.
            if self._current_state(now) is BreakerState.OPEN:
                return
            self._window.record(failed)
            rate = self._window.failure_rate(self._evaluation_minimum())
            if rate is None:
                return
            if rate >= self.config.failure_rate_threshold:
                self._enter(BreakerState.OPEN, now)
            elif self._state is BreakerState.HALF_OPEN:
                self._enter(BreakerState.CLOSED, now)

    def _evaluation_minimum(self) -> int:
        if self._state is BreakerState.HALF_OPEN:
            return self.config.permitted_number_of_calls_in_half_open_state
        return self._minimum_calls

    def _half_open_at(self) -> datetime:
        assert self._opened_at is not None, "an OPEN breaker always has an opening time"
        return self._opened_at + self._wait

    def _current_state(self, now: datetime) -> BreakerState:
        if self._state is BreakerState.OPEN and now >= self._half_open_at():
            self._enter(BreakerState.HALF_OPEN, now)
        return self._state

    def _enter(self, state: BreakerState, now: datetime) -> None:
        """Every entry into a state starts its bookkeeping afresh, as resilience4j does."""
        if state is BreakerState.OPEN:
            self._opened_at = now
        elif state is BreakerState.CLOSED:
            self._opened_at = None
        window_size = (
            self.config.permitted_number_of_calls_in_half_open_state
            if state is BreakerState.HALF_OPEN
            else self.config.sliding_window_size
        )
        self._window = _CountWindow(window_size)
        self._probes_admitted = 0
        if state is not self._state:
            self._transitions.append(Transition(now, self._state, state))
        self._state = state
