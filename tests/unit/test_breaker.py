"""The circuit breaker against resilience4j's COUNT_BASED rules, on a standing virtual clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kiki.clock import VirtualClock
from kiki.shield.breaker import (
    TRANSITION_HISTORY,
    BreakerConfig,
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    Transition,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def make(**config: Any) -> tuple[CircuitBreaker, VirtualClock]:
    clock = VirtualClock(START)
    return CircuitBreaker("google_ads", BreakerConfig(**config), clock), clock


def record(breaker: CircuitBreaker, outcomes: str) -> None:
    """Report outcomes written as a string: F = failure, S = success."""
    for outcome in outcomes:
        if outcome == "F":
            breaker.on_failure()
        else:
            breaker.on_success()


def trip(breaker: CircuitBreaker) -> None:
    record(breaker, "F" * breaker.config.sliding_window_size)
    assert breaker.state is OPEN


# -- configuration -------------------------------------------------------------------------


def test_config_defaults_are_resilience4j_like() -> None:
    config = BreakerConfig()
    assert config.failure_rate_threshold == 50
    assert config.sliding_window_size == 20
    assert config.minimum_number_of_calls == 10
    assert config.wait_duration_in_open_state_s == 30
    assert config.permitted_number_of_calls_in_half_open_state == 3


@pytest.mark.parametrize(
    "field, value",
    [
        ("failure_rate_threshold", 0),
        ("failure_rate_threshold", -1),
        ("failure_rate_threshold", 100.1),
        ("sliding_window_size", 0),
        ("minimum_number_of_calls", 0),
        ("wait_duration_in_open_state_s", 0),
        ("wait_duration_in_open_state_s", -5),
        ("wait_duration_in_open_state_s", float("inf")),
        ("permitted_number_of_calls_in_half_open_state", 0),
    ],
)
def test_config_rejects_out_of_range_values(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        BreakerConfig(**{field: value})


def test_config_accepts_the_bounds_and_refuses_unknown_fields() -> None:
    BreakerConfig(failure_rate_threshold=100, sliding_window_size=1, minimum_number_of_calls=1)
    with pytest.raises(ValidationError):
        BreakerConfig(failure_rate_treshold=50)


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        BreakerConfig().sliding_window_size = 5


# -- CLOSED --------------------------------------------------------------------------------


def test_a_new_breaker_is_closed_and_admits_calls() -> None:
    breaker, _ = make()
    assert breaker.state is CLOSED
    assert all(breaker.try_acquire() for _ in range(100))
    assert breaker.transitions == []


def test_closed_stays_closed_below_the_minimum_calls_even_at_100_percent_failures() -> None:
    breaker, _ = make(sliding_window_size=20, minimum_number_of_calls=10)
    record(breaker, "F" * 9)
    assert breaker.state is CLOSED
    snap = breaker.snapshot()
    assert (snap.failure_rate, snap.buffered_calls, snap.failed_calls) == (None, 9, 9)
    breaker.on_failure()
    assert breaker.state is OPEN


def test_opens_exactly_at_the_threshold() -> None:
    breaker, _ = make(failure_rate_threshold=50, sliding_window_size=10, minimum_number_of_calls=10)
    record(breaker, "SSSSS" + "FFFF")
    assert breaker.state is CLOSED  # nine calls: below the minimum
    breaker.on_failure()  # 5 of 10 = 50 % >= 50 %
    assert breaker.state is OPEN
    assert not breaker.try_acquire()


def test_just_below_the_threshold_stays_closed() -> None:
    breaker, _ = make(failure_rate_threshold=50, sliding_window_size=10, minimum_number_of_calls=10)
    record(breaker, "SSSSSS" + "FFFF")  # 40 %
    assert breaker.state is CLOSED
    assert breaker.snapshot().failure_rate == 40.0


def test_rate_is_computed_without_float_error() -> None:
    # 1 of 3 is 100 / 3 exactly as floats compute it; 1 / 3 * 100 would fall a hair short.
    breaker, _ = make(
        failure_rate_threshold=100 / 3, sliding_window_size=3, minimum_number_of_calls=3
    )
    record(breaker, "SSF")
    assert breaker.state is OPEN


def test_the_minimum_is_capped_at_the_window_size() -> None:
    breaker, _ = make(sliding_window_size=5, minimum_number_of_calls=30)
    record(breaker, "FFFF")
    assert breaker.state is CLOSED
    breaker.on_failure()
    assert breaker.state is OPEN


def test_the_window_slides_so_old_failures_age_out() -> None:
    breaker, _ = make(failure_rate_threshold=75, sliding_window_size=4, minimum_number_of_calls=4)
    record(breaker, "FFSS")  # 50 %
    record(breaker, "SS")  # window SSSS: both failures slid out
    snap = breaker.snapshot()
    assert (snap.buffered_calls, snap.failed_calls, snap.failure_rate) == (4, 0, 0.0)
    record(breaker, "FF")  # SSFF: 50 % although 4 of 8 calls ever failed
    assert breaker.state is CLOSED
    breaker.on_failure()  # SFFF: 75 %
    assert breaker.state is OPEN


def test_opening_clears_the_window() -> None:
    breaker, _ = make(sliding_window_size=10, minimum_number_of_calls=10)
    trip(breaker)
    snap = breaker.snapshot()
    assert (snap.buffered_calls, snap.failed_calls, snap.failure_rate) == (0, 0, None)


# -- OPEN ----------------------------------------------------------------------------------


def test_open_rejects_until_the_wait_has_elapsed_then_admits_a_probe() -> None:
    breaker, clock = make(wait_duration_in_open_state_s=30)
    trip(breaker)
    clock.advance(29.999999)
    assert not breaker.try_acquire()
    assert breaker.state is OPEN
    clock.advance(0.000001)
    assert breaker.try_acquire()
    assert breaker.state is HALF_OPEN


def test_reading_the_state_after_the_wait_moves_open_to_half_open() -> None:
    breaker, clock = make(wait_duration_in_open_state_s=10)
    trip(breaker)
    clock.advance(10)
    assert breaker.state is HALF_OPEN
    assert [t.to_state for t in breaker.transitions] == [OPEN, HALF_OPEN]
    assert breaker.transitions[-1].at == START + timedelta(seconds=10)


def test_outcomes_reported_while_open_are_ignored() -> None:
    breaker, clock = make(permitted_number_of_calls_in_half_open_state=2)
    trip(breaker)
    record(breaker, "SSSSSFFFFF" * 10)  # stragglers admitted before the breaker tripped
    assert breaker.state is OPEN
    snap = breaker.snapshot()
    assert (snap.buffered_calls, snap.failed_calls) == (0, 0)
    clock.advance(30)
    assert breaker.state is HALF_OPEN
    assert breaker.snapshot().buffered_calls == 0  # the probes start from nothing


# -- HALF_OPEN -----------------------------------------------------------------------------


def half_open(**config: Any) -> tuple[CircuitBreaker, VirtualClock]:
    breaker, clock = make(**config)
    trip(breaker)
    clock.advance(breaker.config.wait_duration_in_open_state_s)
    assert breaker.state is HALF_OPEN
    return breaker, clock


def test_half_open_admits_only_the_permitted_probes() -> None:
    breaker, clock = half_open(permitted_number_of_calls_in_half_open_state=3)
    assert [breaker.try_acquire() for _ in range(5)] == [True, True, True, False, False]
    record(breaker, "SS")  # two probes back, one still in flight: no decision, no new permits
    assert breaker.state is HALF_OPEN
    assert not breaker.try_acquire()
    clock.advance(3600)  # time alone does not free permits
    assert not breaker.try_acquire()


def test_half_open_closes_on_good_probes() -> None:
    breaker, _ = half_open(failure_rate_threshold=50)
    assert all(breaker.try_acquire() for _ in range(3))
    record(breaker, "SF")
    assert breaker.state is HALF_OPEN
    breaker.on_success()  # 1 of 3 failed: 33 % < 50 %
    assert breaker.state is CLOSED
    snap = breaker.snapshot()
    assert (snap.buffered_calls, snap.failed_calls, snap.opened_at) == (0, 0, None)
    assert all(breaker.try_acquire() for _ in range(10))


def test_half_open_reopens_on_bad_probes_with_a_new_open_timestamp() -> None:
    breaker, clock = half_open(failure_rate_threshold=50, wait_duration_in_open_state_s=30)
    assert all(breaker.try_acquire() for _ in range(3))
    clock.advance(5)
    record(breaker, "FSF")  # 67 %
    assert breaker.state is OPEN
    snap = breaker.snapshot()
    assert snap.opened_at == START + timedelta(seconds=35)
    assert snap.retry_after_s == 30
    assert not breaker.try_acquire()
    clock.advance(30)
    assert breaker.try_acquire()  # and a fresh round of probes
    assert breaker.state is HALF_OPEN


def test_half_open_reopens_exactly_at_the_threshold() -> None:
    breaker, _ = half_open(
        failure_rate_threshold=50, permitted_number_of_calls_in_half_open_state=2
    )
    record(breaker, "SF")
    assert breaker.state is OPEN


def test_half_open_decides_on_its_own_probes_even_with_a_smaller_window() -> None:
    breaker, _ = half_open(
        sliding_window_size=2,
        minimum_number_of_calls=2,
        permitted_number_of_calls_in_half_open_state=5,
    )
    record(breaker, "FFSS")
    assert breaker.state is HALF_OPEN
    breaker.on_success()  # 2 of 5 = 40 %: every probe counted, none slid out
    assert breaker.state is CLOSED


def test_a_closed_breaker_after_recovery_needs_the_minimum_calls_again() -> None:
    breaker, _ = half_open(sliding_window_size=10, minimum_number_of_calls=10)
    record(breaker, "SSS")
    assert breaker.state is CLOSED
    record(breaker, "F" * 9)
    assert breaker.state is CLOSED
    breaker.on_failure()
    assert breaker.state is OPEN


# -- reset, force_open ---------------------------------------------------------------------


def test_reset_closes_from_open_and_clears_the_window() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(1)
    breaker.reset()
    assert breaker.state is CLOSED
    assert breaker.try_acquire()
    snap = breaker.snapshot()
    assert (snap.buffered_calls, snap.opened_at, snap.retry_after_s) == (0, None, 0)
    assert breaker.transitions[-1] == Transition(START + timedelta(seconds=1), OPEN, CLOSED)


def test_reset_from_half_open_cancels_the_probes() -> None:
    breaker, _ = half_open()
    assert breaker.try_acquire()
    breaker.reset()
    assert breaker.state is CLOSED
    assert breaker.transitions[-1].from_state is HALF_OPEN


def test_reset_when_closed_clears_the_window_without_a_transition() -> None:
    breaker, _ = make(sliding_window_size=10, minimum_number_of_calls=10)
    record(breaker, "F" * 9)
    breaker.reset()
    assert breaker.snapshot().buffered_calls == 0
    assert breaker.transitions == []
    breaker.on_failure()  # the nine earlier failures no longer count
    assert breaker.state is CLOSED


def test_force_open_rejects_calls_for_the_wait() -> None:
    breaker, clock = make(wait_duration_in_open_state_s=30)
    record(breaker, "SSS")
    breaker.force_open()
    assert breaker.state is OPEN
    assert not breaker.try_acquire()
    assert breaker.snapshot().opened_at == START
    clock.advance(30)
    assert breaker.try_acquire()
    assert breaker.state is HALF_OPEN


def test_force_open_while_open_restarts_the_wait() -> None:
    breaker, clock = make(wait_duration_in_open_state_s=30)
    breaker.force_open()
    clock.advance(20)
    breaker.force_open()
    assert breaker.snapshot().retry_after_s == 30
    clock.advance(20)
    assert not breaker.try_acquire()
    assert [(t.from_state, t.to_state) for t in breaker.transitions] == [(CLOSED, OPEN)]


def test_force_open_from_half_open() -> None:
    breaker, _ = half_open()
    breaker.force_open()
    assert breaker.state is OPEN
    assert not breaker.try_acquire()


# -- snapshot and transitions --------------------------------------------------------------


def test_snapshot_in_every_state() -> None:
    breaker, clock = make(
        failure_rate_threshold=50,
        sliding_window_size=4,
        minimum_number_of_calls=4,
        wait_duration_in_open_state_s=30,
        permitted_number_of_calls_in_half_open_state=2,
    )
    record(breaker, "SFS")
    assert breaker.snapshot() == BreakerSnapshot(
        name="google_ads",
        state=CLOSED,
        failure_rate=None,
        buffered_calls=3,
        failed_calls=1,
        opened_at=None,
        retry_after_s=0,
    )
    breaker.on_success()
    assert breaker.snapshot().failure_rate == 25.0

    clock.advance(60)
    breaker.on_failure()  # FSSF: 50 %
    clock.advance(12.5)
    snap = breaker.snapshot()
    assert snap.state is OPEN
    assert snap.opened_at == START + timedelta(seconds=60)
    assert snap.retry_after_s == pytest.approx(17.5)
    assert (snap.failure_rate, snap.buffered_calls, snap.failed_calls) == (None, 0, 0)

    clock.advance(17.5)
    breaker.on_failure()  # after the wait an outcome counts as a probe's, state read or not
    snap = breaker.snapshot()
    assert snap.state is HALF_OPEN
    assert (snap.buffered_calls, snap.failed_calls, snap.failure_rate) == (1, 1, None)
    assert snap.opened_at == START + timedelta(seconds=60)
    assert snap.retry_after_s == 0


def test_snapshot_serialises_for_a_health_page() -> None:
    breaker, _ = make()
    trip(breaker)
    body = breaker.snapshot().model_dump(mode="json")
    assert body["state"] == "OPEN"
    assert body["opened_at"] == "2026-01-01T00:00:00Z"
    assert body["retry_after_s"] == 30


def test_transitions_record_every_change_in_order() -> None:
    breaker, clock = make(permitted_number_of_calls_in_half_open_state=1)
    trip(breaker)
    clock.advance(30)
    assert breaker.try_acquire()
    breaker.on_failure()
    clock.advance(30)
    assert breaker.try_acquire()
    breaker.on_success()
    assert breaker.transitions == [
        Transition(START, CLOSED, OPEN),
        Transition(START + timedelta(seconds=30), OPEN, HALF_OPEN),
        Transition(START + timedelta(seconds=30), HALF_OPEN, OPEN),
        Transition(START + timedelta(seconds=60), OPEN, HALF_OPEN),
        Transition(START + timedelta(seconds=60), HALF_OPEN, CLOSED),
    ]
    at, from_state, to_state = breaker.transitions[0]  # plain (at, from, to) tuples
    assert (at, from_state, to_state) == (START, CLOSED, OPEN)


def test_transitions_keep_only_the_latest() -> None:
    breaker, clock = make()
    for _ in range(TRANSITION_HISTORY):
        breaker.force_open()
        clock.advance(1)
        breaker.reset()
    transitions = breaker.transitions
    assert len(transitions) == TRANSITION_HISTORY == 100
    assert transitions[0].at == START + timedelta(seconds=TRANSITION_HISTORY // 2)
    assert transitions[-1] == Transition(
        START + timedelta(seconds=TRANSITION_HISTORY), OPEN, CLOSED
    )


# -- properties ----------------------------------------------------------------------------


def opens_by_the_book(outcomes: list[bool], config: BreakerConfig) -> bool:
    """resilience4j's rule written directly over the outcome history (True = failed)."""
    window = outcomes[-config.sliding_window_size :]
    minimum = min(config.minimum_number_of_calls, config.sliding_window_size)
    return len(window) >= minimum and sum(window) * 100 / len(window) >= (
        config.failure_rate_threshold
    )


@given(
    outcomes=st.lists(st.booleans(), max_size=80),
    threshold=st.sampled_from([1, 10, 25, 33.3, 50, 66.7, 75, 99.9, 100]),
    window=st.integers(1, 12),
    minimum=st.integers(1, 15),
)
def test_closed_opens_exactly_when_the_window_first_reaches_the_threshold(
    outcomes: list[bool], threshold: float, window: int, minimum: int
) -> None:
    config = BreakerConfig(
        failure_rate_threshold=threshold,
        sliding_window_size=window,
        minimum_number_of_calls=minimum,
    )
    breaker = CircuitBreaker("p", config, VirtualClock(START))
    for i, failed in enumerate(outcomes, start=1):
        assert breaker.try_acquire()
        record(breaker, "F" if failed else "S")
        expected = OPEN if opens_by_the_book(outcomes[:i], config) else CLOSED
        assert breaker.state is expected
        if expected is OPEN:
            return
        snap = breaker.snapshot()
        assert snap.buffered_calls == min(i, window)
        assert snap.failed_calls == sum(outcomes[:i][-window:])


@given(
    permitted=st.integers(1, 8),
    threshold=st.sampled_from([1, 25, 50, 75, 100]),
    probes=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_half_open_decides_once_on_exactly_the_permitted_probes(
    permitted: int, threshold: float, probes: list[bool]
) -> None:
    breaker, _ = half_open(
        failure_rate_threshold=threshold, permitted_number_of_calls_in_half_open_state=permitted
    )
    admitted = sum(breaker.try_acquire() for _ in range(permitted + 3))
    assert admitted == permitted
    for failed in probes[: permitted - 1]:
        record(breaker, "F" if failed else "S")
        assert breaker.state is HALF_OPEN
    record(breaker, "F" if probes[permitted - 1] else "S")
    rate = sum(probes[:permitted]) * 100 / permitted
    assert breaker.state is (OPEN if rate >= threshold else CLOSED)
