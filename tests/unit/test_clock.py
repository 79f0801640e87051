import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from kiki.clock import VirtualClock, WallClock

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_standing_virtual_clock_moves_only_when_advanced() -> None:
    clock = VirtualClock(START)
    assert clock.now() == START
    clock.advance(3600)
    assert clock.now() == START + timedelta(hours=1)
    asyncio.run(clock.sleep(30))
    assert clock.now() == START + timedelta(hours=1, seconds=30)
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_fast_virtual_clock_runs_faster_than_the_wall() -> None:
    clock = VirtualClock(START, speed=3600)
    asyncio.run(clock.sleep(360))  # six virtual minutes: 0.1 s of wall time
    assert clock.now() - START >= timedelta(minutes=6)


def test_clocks_are_timezone_aware() -> None:
    assert WallClock().now().tzinfo is not None
    with pytest.raises(ValueError):
        VirtualClock(datetime(2026, 1, 1))
