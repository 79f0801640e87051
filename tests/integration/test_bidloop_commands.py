"""A bid-loop shard answers every command, whatever its arguments, and keeps ticking
(issue 16). A real shard on a virtual clock (as `kiki simulate` runs it), over the real
budget actors and ledger."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import ray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.flow import BidLoopClient, BidLoopConfig
from actors.resilience import InternalError
from kiki.clock import VirtualClock
from kiki.errors import KikiError
from tests.integration.conftest import RunningPlatform, run

START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
moments = st.one_of(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),  # naive
    st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
    ),
    st.none(),
    st.integers(),
    st.text(max_size=10),
)
commands = st.one_of(
    st.tuples(st.just("tick"), moments),
    st.tuples(st.just("reload"), st.none()),
    st.tuples(st.just("stats"), st.none()),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("heartbeat"), st.none()),
)


@pytest.fixture(scope="module")
def shard(platform: RunningPlatform) -> Iterator[ray.actor.ActorHandle]:
    config = BidLoopConfig(
        namespace=f"bidloop-commands-{uuid.uuid4().hex[:8]}",
        detached=False,
        tick_s=2,
        autorun=False,
        tenant_id=str(uuid.uuid4()),
        value_app=None,
        budget_shards=platform.settings.budget_shards,
    )
    loops = BidLoopClient(platform.database_url, config, shards=1, clock=VirtualClock(START))
    run(loops.ready())
    yield loops.actors[0]
    run(loops.stop())
    loops.kill()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(command=commands)
def test_any_command_is_answered_and_the_shard_keeps_ticking(
    shard: ray.actor.ActorHandle, command: tuple[str, object]
) -> None:
    name, argument = command
    call = getattr(shard, name)
    try:
        ray.get(call.remote() if argument is None else call.remote(argument), timeout=30)
    except KikiError as exc:
        assert not isinstance(exc, InternalError), exc  # the caller's error, named as such
    ticks = ray.get(shard.stats.remote(), timeout=30).ticks
    later = datetime(2027, 2, 1, tzinfo=UTC) + timedelta(seconds=2 * ticks)
    report = ray.get(shard.tick.remote(later), timeout=30)
    assert report.tick_id == ticks + 1
