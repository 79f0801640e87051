"""The pieces that keep long-lived actors serving, tested as plain Python (no Ray running):
deadlines, commands that fail alone, supervised background tasks, the guard's refusals, the
bid loop's heartbeat and its decision log when SyncShield does not answer."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.flow import Heartbeat
from actors.guard import GuardShell
from actors.resilience import InternalError, Supervisor, command, within
from kiki.errors import InvalidInput, KikiError, Unavailable
from kiki.flow.leases import LeaseBook, Renewals
from kiki.shield.book import OpResult
from kiki.shield.policy import PLATFORMS


def test_a_call_past_its_deadline_is_unavailable_with_retry_after() -> None:
    async def never() -> None:
        await asyncio.sleep(60)

    with pytest.raises(Unavailable) as caught:
        asyncio.run(within(never(), 0.05, "budget shard 1"))
    assert caught.value.code == "deadline_exceeded"
    assert caught.value.retry_after_s == 1.0
    assert "budget shard 1 did not answer within 0.05 s" in caught.value.message


class Shell:
    def __init__(self) -> None:
        self.served = 0

    @command("test")
    def divide(self, n: int) -> float:
        self.served += 1
        return 1 / n

    @command("test")
    async def refuse(self) -> None:
        raise InvalidInput("bad field x")


def test_a_failing_command_answers_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    shell = Shell()
    with caplog.at_level(logging.ERROR, logger="kiki.actors"), pytest.raises(InternalError):
        shell.divide(0)
    assert "divide" in caplog.text and "(0,)" in caplog.records[0].command_args  # type: ignore[attr-defined]
    assert shell.divide(4) == 0.25 and shell.served == 2  # still serving
    with pytest.raises(InvalidInput, match="bad field x"):  # the caller's error, unchanged
        asyncio.run(shell.refuse())


def test_a_dead_background_task_is_restarted_and_counted() -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError("boom")

    async def main() -> dict[str, int]:
        supervisor = Supervisor("test", max_backoff_s=0.01)
        supervisor.start("flaky", flaky)
        for _ in range(100):
            if not supervisor.running("flaky"):
                break
            await asyncio.sleep(0.01)
        return supervisor.restarts

    assert asyncio.run(main()) == {"flaky": 2}
    assert runs == [0, 1, 2]


def test_a_scheduled_round_that_fails_does_not_end_the_schedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds: list[int] = []

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 2:
            raise RuntimeError("a vendor is down")

    async def main() -> bool:
        supervisor = Supervisor("test")
        supervisor.start_every("schedule", 0.01, work)
        while len(rounds) < 4:
            await asyncio.sleep(0.01)
        running = supervisor.running("schedule")
        await supervisor.stop()
        return running

    assert asyncio.run(main()) and rounds[:4] == [0, 1, 2, 3]
    assert "a scheduled round failed" in caplog.text


platform = st.one_of(st.sampled_from(PLATFORMS), st.text(max_size=8), st.none(), st.integers())
value = st.one_of(st.integers(-5, 10**6), st.booleans(), st.none(), st.text(max_size=3))
pairs = st.lists(st.tuples(platform, value), max_size=4)
junk = st.one_of(pairs, st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=2))


@settings(max_examples=150, deadline=None)
@given(admit=junk, record=junk, platform_name=platform, calls=value, outcomes=junk)
def test_the_guard_answers_any_command_and_a_refused_one_changes_nothing(
    admit: object, record: object, platform_name: object, calls: object, outcomes: object
) -> None:
    shell = GuardShell()
    for call, args in (
        (shell.admit_many, (admit,)),
        (shell.record_many, (record,)),
        (shell.admit_tenant, ("acme", platform_name, calls)),
        (shell.record_tenant, ("acme", platform_name, outcomes)),
        (shell.reset, (platform_name,)),
        (shell.force_open, (platform_name,)),
    ):
        before = shell.status("acme")
        try:
            call(*args)
        except KikiError as exc:
            assert isinstance(exc, InvalidInput), exc  # never an internal error
            after = shell.status("acme")
            assert [s.breaker.state for s in after] == [s.breaker.state for s in before]
            assert [s.tenant_breaker for s in after] == [s.tenant_breaker for s in before]
            # Nothing spent; the buckets only refill with time.
            assert all(a.tokens >= b.tokens for a, b in zip(after, before, strict=True))
    assert shell.admit_many([("meta", 1)])[0].platform == "meta"  # still serving


def beat(**kw: object) -> Heartbeat:
    base = dict(shard=0, ticks=5, autorun=True, ticking=True, up_s=100.0, last_tick_age_s=1.0,
                restarts=0)  # fmt: skip
    return Heartbeat(**{**base, **kw})  # type: ignore[arg-type]


def test_a_shard_that_stopped_ticking_is_unhealthy_after_its_grace() -> None:
    assert beat().problem(2.0, 60) is None
    assert beat(last_tick_age_s=30.0).problem(2.0, 60) == "last tick completed 30 s ago"
    assert beat(ticking=False, last_tick_age_s=None, up_s=5).problem(2.0, 60) is None
    assert "not running" in (beat(ticking=False, up_s=90).problem(2.0, 60) or "")
    assert beat(last_tick_age_s=None, up_s=90).problem(2.0, 60) == "no tick completed in 90 s"
    assert beat(autorun=False, ticking=False).problem(2.0, 60) is None  # a simulation's


def test_an_unanswered_lease_renewal_is_skipped_and_says_so() -> None:
    leases = LeaseBook(np.array([0, 0]), window=10)
    renewals = Renewals(commits=[], reserves=[(0, 100), (1, 100)])
    results = [
        OpResult("error", "c1", message="budget shard 0 did not answer within 10 s",
                 error_code="deadline_exceeded"),
        OpResult("denied", "c1", rule="daily_cap_exhausted"),
    ]  # fmt: skip
    assert leases.settle(renewals, results, tick=1) == {
        0: "lease_skipped:deadline_exceeded",
        1: "denied:daily_cap_exhausted",
    }
