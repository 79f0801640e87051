"""Token buckets timed by a `Clock`: a steady rate with bursts, answering with retry-after.

Callers get the seconds to wait rather than a bare refusal, so an HTTP layer can send
`Retry-After` and a bid loop can sleep exactly that long on its (possibly virtual) clock.
Thread-safe, because Serve runs sync handlers in a thread pool.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from kiki.clock import Clock

# Float rounding can leave a bucket a hair short after exactly the wait it advised; a take that
# short by less than this is allowed and the shortfall carried as debt, so it never accumulates.
_EPSILON_TOKENS = 1e-9


class RateLimitConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_s: float = Field(gt=0, allow_inf_nan=False, description="Tokens added per second.")
    burst: int = Field(ge=1, description="Bucket capacity: the most calls allowed at once.")


def _validate(rate_per_s: float, burst: int) -> None:
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s!r}")
    if burst < 1:
        raise ValueError(f"burst must be >= 1, got {burst!r}")


def _validate_n(n: int, burst: int) -> None:
    if not 1 <= n <= burst:
        raise ValueError(f"n must be between 1 and burst ({burst}), got {n!r}")


def _ceil_to_microsecond(seconds: float) -> float:
    """Clocks tick in microseconds: rounding down could advise a wait that is still too short."""
    return math.ceil(seconds * 1_000_000) / 1_000_000


class TokenBucket:
    """Starts full with `burst` tokens and refills continuously at `rate_per_s`, up to `burst`."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        _validate(rate_per_s, burst)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated_at = clock.now()

    @property
    def tokens(self) -> float:
        """Tokens available now, at most `burst` (a hair below 0 after a float-rounded take)."""
        with self._lock:
            return self._refilled(self._clock.now())

    def try_take(self, n: int = 1) -> float:
        """Take `n` tokens and return 0.0, or take none and return the seconds until `n` are
        available: nothing is taken partially, so retrying after that wait succeeds unless
        another caller took tokens meanwhile."""
        _validate_n(n, self.burst)
        with self._lock:
            now = self._clock.now()
            self._tokens = self._refilled(now)
            self._updated_at = max(self._updated_at, now)
            missing = n - self._tokens
            if missing <= _EPSILON_TOKENS:
                self._tokens -= n
                return 0.0
            return _ceil_to_microsecond(missing / self.rate_per_s)

    def _refilled(self, now: datetime) -> float:
        # A clock that steps back (wall time) refills nothing rather than granting tokens twice.
        elapsed = max(0.0, (now - self._updated_at).total_seconds())
        return min(float(self.burst), self._tokens + elapsed * self.rate_per_s)


class RateLimiter:
    """One token bucket per key (API key, platform), created on first use.

    Beyond `max_keys` buckets, the least recently used ones are dropped once they are full
    again: a full bucket behaves exactly like a fresh one, so eviction never changes an answer.
    """

    def __init__(
        self, rate_per_s: float, burst: int, clock: Clock, max_keys: int = 100_000
    ) -> None:
        _validate(rate_per_s, burst)
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        """Keys tracked now, for a metrics gauge."""
        return len(self._buckets)

    def check(self, key: str, n: int = 1) -> float:
        """0.0 when `key` may make `n` calls now (they are counted), else retry-after seconds."""
        _validate_n(n, self.burst)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate_per_s, self.burst, self._clock)
            else:
                self._buckets.move_to_end(key)
            wait = bucket.try_take(n)
            self._evict_full()
            return wait

    def _evict_full(self) -> None:
        # Oldest first, stopping at the first bucket still refilling: amortised O(1) per check,
        # and that bucket is full within burst / rate seconds anyway.
        while len(self._buckets) > self.max_keys:
            key, oldest = next(iter(self._buckets.items()))
            if oldest.tokens < self.burst:
                return
            del self._buckets[key]
