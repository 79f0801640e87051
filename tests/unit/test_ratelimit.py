"""Token buckets and the per-key limiter, on a standing virtual clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kiki.clock import VirtualClock
from kiki.shield.ratelimit import RateLimitConfig, RateLimiter, TokenBucket

START = datetime(2026, 1, 1, tzinfo=UTC)
# Tokens a bucket may be off by from float rounding (the module allows 1e-9 per take as debt).
TOLERANCE = 1e-6


def bucket(rate_per_s: float = 2.0, burst: int = 5) -> tuple[TokenBucket, VirtualClock]:
    clock = VirtualClock(START)
    return TokenBucket(rate_per_s, burst, clock), clock


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rate, burst, message",
    [
        (0, 5, "rate_per_s must be a finite number > 0, got 0"),
        (-1.5, 5, "rate_per_s must be a finite number > 0, got -1.5"),
        (float("inf"), 5, "rate_per_s must be a finite number > 0, got inf"),
        (float("nan"), 5, "rate_per_s must be a finite number > 0, got nan"),
        (1, 0, "burst must be >= 1, got 0"),
    ],
)
def test_bucket_and_limiter_refuse_bad_settings(rate: float, burst: int, message: str) -> None:
    clock = VirtualClock(START)
    with pytest.raises(ValueError, match=message):
        TokenBucket(rate, burst, clock)
    with pytest.raises(ValueError, match=message):
        RateLimiter(rate, burst, clock)


@pytest.mark.parametrize("n", [0, -1, 6])
def test_a_take_must_be_between_one_and_the_burst(n: int) -> None:
    limited, clock = bucket(burst=5)
    limiter = RateLimiter(2.0, 5, clock)
    expected = rf"n must be between 1 and burst \(5\), got {n}"
    with pytest.raises(ValueError, match=expected):
        limited.try_take(n)
    with pytest.raises(ValueError, match=expected):
        limiter.check("key", n)
    assert limited.tokens == 5
    assert len(limiter) == 0


def test_limiter_refuses_a_max_keys_below_one() -> None:
    with pytest.raises(ValueError, match="max_keys must be >= 1, got 0"):
        RateLimiter(1, 1, VirtualClock(START), max_keys=0)


def test_config_model_validates() -> None:
    assert RateLimitConfig(rate_per_s="2.5", burst=10) == RateLimitConfig(rate_per_s=2.5, burst=10)
    for bad in (
        {"rate_per_s": 0, "burst": 1},
        {"rate_per_s": float("inf"), "burst": 1},
        {"rate_per_s": 1, "burst": 0},
        {"rate_per_s": 1},
        {"rate_per_s": 1, "burst": 1, "brust": 2},
    ):
        with pytest.raises(ValidationError):
            RateLimitConfig(**bad)


# -- token bucket --------------------------------------------------------------------------


def test_a_bucket_starts_full_allows_the_burst_then_says_how_long_to_wait() -> None:
    limited, _ = bucket(rate_per_s=2.0, burst=5)
    assert limited.tokens == 5
    assert [limited.try_take() for _ in range(5)] == [0.0] * 5
    assert limited.try_take() == 0.5  # one token at 2 per second
    assert limited.try_take(3) == 1.5
    assert limited.tokens == 0


def test_a_refused_take_takes_nothing() -> None:
    limited, clock = bucket(rate_per_s=2.0, burst=5)
    assert limited.try_take(3) == 0.0
    assert limited.try_take(3) == 0.5  # two left, one missing
    assert limited.tokens == 2
    clock.advance(0.5)
    assert limited.try_take(3) == 0.0
    assert limited.tokens == 0


def test_refill_follows_virtual_time() -> None:
    limited, clock = bucket(rate_per_s=4.0, burst=8)
    assert limited.try_take(8) == 0.0
    clock.advance(0.25)
    assert limited.tokens == pytest.approx(1.0)
    clock.advance(0.125)
    assert limited.tokens == pytest.approx(1.5)
    assert limited.try_take(2) == pytest.approx(0.125)
    assert limited.try_take(1) == 0.0
    assert limited.tokens == pytest.approx(0.5)


def test_waiting_one_microsecond_less_than_advised_is_still_too_early() -> None:
    limited, clock = bucket(rate_per_s=2.0, burst=1)
    limited.try_take()
    assert limited.try_take() == 0.5
    clock.advance(0.499999)
    assert limited.try_take() == pytest.approx(0.000001)
    clock.advance(0.000001)
    assert limited.try_take() == 0.0


def test_the_advised_wait_is_rounded_up_to_the_clock_resolution() -> None:
    limited, clock = bucket(rate_per_s=3.0, burst=1)
    limited.try_take()
    wait = limited.try_take()
    assert wait == 0.333334  # 1/3 s rounded up: the clock ticks in microseconds
    clock.advance(wait)
    assert limited.try_take() == 0.0


def test_float_rounding_never_makes_the_advised_wait_too_short() -> None:
    # 0.01 + 0.15 + 38.4 * 0.1 comes to 3.9999999999999996 in floats, not 4.
    limited, clock = bucket(rate_per_s=0.1, burst=4)
    limited.try_take(2)
    clock.advance(0.1)
    limited.try_take(2)
    clock.advance(1.5)
    wait = limited.try_take(4)
    assert wait == pytest.approx(38.4)
    clock.advance(wait)
    assert limited.try_take(4) == 0.0


def test_a_very_fast_bucket_never_advises_a_zero_wait_when_refusing() -> None:
    limited, _ = bucket(rate_per_s=1e9, burst=1)
    assert limited.try_take() == 0.0
    assert limited.try_take() == 0.000001


def test_tokens_never_exceed_the_burst() -> None:
    limited, clock = bucket(rate_per_s=100.0, burst=3)
    limited.try_take()
    clock.advance(3600)
    assert limited.tokens == 3
    assert [limited.try_take() for _ in range(4)] == [0.0, 0.0, 0.0, 0.01]


class SteppingClock:
    """A wall clock that NTP may step backwards."""

    def __init__(self) -> None:
        self.at = START

    def now(self) -> datetime:
        return self.at

    async def sleep(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def test_a_clock_stepping_back_grants_no_tokens_twice() -> None:
    clock = SteppingClock()
    clock.at = START + timedelta(seconds=10)
    limited = TokenBucket(2.0, 2, clock)
    assert limited.try_take(2) == 0.0
    clock.at = START
    assert limited.try_take() == 0.5
    clock.at = START + timedelta(seconds=10)  # back where the bucket emptied: nothing refilled
    assert limited.tokens == 0
    clock.at = START + timedelta(seconds=10.5)
    assert limited.try_take() == 0.0


def test_threads_sharing_a_bucket_take_exactly_the_burst() -> None:
    limited, _ = bucket(rate_per_s=1.0, burst=1000)
    allowed: list[int] = []

    def hammer() -> None:
        allowed.append(sum(limited.try_take() == 0.0 for _ in range(500)))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 1000


# -- bucket properties ---------------------------------------------------------------------

rates = st.sampled_from([0.1, 0.5, 1.0, 3.0, 7.0, 10.0, 333.3, 1000.0, 1e6])
advances = st.one_of(
    st.just(0.0), st.just("advised"), st.floats(0, 3, allow_nan=False, allow_infinity=False)
)


@given(
    rate=rates,
    burst=st.integers(1, 20),
    ops=st.lists(st.tuples(advances, st.integers(1, 20)), max_size=60),
)
def test_takes_in_any_interval_never_exceed_burst_plus_rate_times_its_length(
    rate: float, burst: int, ops: list[tuple[float | str, int]]
) -> None:
    limited, clock = bucket(rate, burst)
    advised = 0.0
    taken: list[tuple[float, int]] = []  # (seconds since START, tokens)
    for advance, n in ops:
        clock.advance(advised if advance == "advised" else float(advance))
        n = min(n, burst)
        wait = limited.try_take(n)
        if wait == 0.0:
            taken.append(((clock.now() - START).total_seconds(), n))
        else:
            assert wait > 0
            advised = wait
        assert -TOLERANCE <= limited.tokens <= burst
    for i, (start, _) in enumerate(taken):
        for end, _ in taken[i:]:
            in_interval = sum(n for t, n in taken if start <= t <= end)
            assert in_interval <= burst + rate * (end - start) + TOLERANCE


@given(
    rate=rates,
    burst=st.integers(1, 20),
    first=st.integers(1, 20),
    elapsed=st.floats(0, 2, allow_nan=False),
    n=st.integers(1, 20),
)
def test_waiting_the_advised_time_is_always_enough(
    rate: float, burst: int, first: int, elapsed: float, n: int
) -> None:
    limited, clock = bucket(rate, burst)
    limited.try_take(min(first, burst))
    clock.advance(elapsed)
    wait = limited.try_take(min(n, burst))
    if wait > 0:
        clock.advance(wait)
        assert limited.try_take(min(n, burst)) == 0.0


# -- limiter -------------------------------------------------------------------------------


def test_each_key_has_its_own_bucket() -> None:
    limiter = RateLimiter(1.0, 2, VirtualClock(START))
    assert [limiter.check("key_a") for _ in range(3)] == [0.0, 0.0, 1.0]
    assert limiter.check("key_b", 2) == 0.0
    assert limiter.check("key_b") == 1.0
    assert len(limiter) == 2


def test_limiter_refills_over_time() -> None:
    clock = VirtualClock(START)
    limiter = RateLimiter(10.0, 5, clock)
    assert limiter.check("google_ads", 5) == 0.0
    assert limiter.check("google_ads", 2) == pytest.approx(0.2)
    clock.advance(0.2)
    assert limiter.check("google_ads", 2) == 0.0


def test_above_max_keys_only_full_buckets_are_evicted_oldest_first() -> None:
    clock = VirtualClock(START)
    limiter = RateLimiter(1.0, 2, clock, max_keys=2)
    for key in ("a", "b", "c"):
        limiter.check(key)
    assert len(limiter) == 3  # none is full again yet: evicting one would forget its calls
    clock.advance(0.5)
    assert limiter.check("a") == 0.0  # a: 1.5 - 1 tokens, now the most recently used
    clock.advance(0.5)  # b and c are full again, a is not
    limiter.check("d")
    assert len(limiter) == 2  # b and c went: the oldest two, both full
    assert limiter.check("a") == 0.0
    assert limiter.check("a") == 1.0  # a kept its state
    clock.advance(10)
    limiter.check("e")
    assert len(limiter) == 2


def test_an_evicted_key_comes_back_as_a_fresh_full_bucket() -> None:
    clock = VirtualClock(START)
    limiter = RateLimiter(1.0, 3, clock, max_keys=1)
    assert limiter.check("a", 3) == 0.0
    clock.advance(3)
    assert limiter.check("b") == 0.0
    assert len(limiter) == 1
    assert [limiter.check("a") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


@given(
    max_keys=st.integers(1, 3),
    burst=st.integers(1, 4),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e"]),
            st.integers(1, 4),
            st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5, 10.0]),
        ),
        max_size=60,
    ),
)
def test_eviction_never_changes_an_answer(
    max_keys: int, burst: int, ops: list[tuple[str, int, float]]
) -> None:
    clock = VirtualClock(START)
    small = RateLimiter(2.0, burst, clock, max_keys=max_keys)
    unbounded = RateLimiter(2.0, burst, clock, max_keys=10**9)
    for key, n, advance in ops:
        clock.advance(advance)
        assert small.check(key, min(n, burst)) == unbounded.check(key, min(n, burst))
