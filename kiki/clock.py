"""Time as a dependency: everything that ticks takes a Clock, so a simulated day runs in seconds."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field

from kiki.errors import InvalidInput


def valid_time_zone(name: object) -> str:
    """An IANA time zone name, or ValueError saying what one looks like."""
    try:
        if not isinstance(name, str) or not name:
            raise TypeError
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, TypeError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone such as 'Europe/Paris'") from None
    return name


TimeZoneName = Annotated[
    str,
    Field(max_length=64, description="IANA time zone, e.g. 'Europe/Paris'"),
    AfterValidator(valid_time_zone),
]


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


class WallClock:
    """Real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """Time that runs `speed` times faster than the wall from `start`, or only when advanced.

    With `speed=0` the clock stands still until `advance()` is called (deterministic tests);
    with `speed=3600` an hour of campaign time passes in a wall-clock second.
    """

    def __init__(self, start: datetime, speed: float = 0.0) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock start must be timezone-aware")
        if speed < 0:
            raise ValueError("VirtualClock speed must be >= 0")
        self._origin = start.astimezone(UTC)
        self._offset = timedelta(0)
        self._speed = speed
        self._wall_origin = time.monotonic()

    def now(self) -> datetime:
        elapsed = (time.monotonic() - self._wall_origin) * self._speed
        return self._origin + self._offset + timedelta(seconds=elapsed)

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._offset += timedelta(seconds=seconds)
        return self.now()

    def advance_to(self, moment: datetime) -> datetime:
        """Move forward to `moment` (a driver's command: an earlier moment leaves the clock
        where it is); a naive or non-datetime moment is refused."""
        if not isinstance(moment, datetime) or moment.utcoffset() is None:
            raise InvalidInput(f"{moment!r} is not a timezone-aware date-time")
        return self.advance(max(0.0, (moment - self.now()).total_seconds()))

    async def sleep(self, seconds: float) -> None:
        if self._speed == 0:
            # A standing clock: sleeping means letting virtual time pass at once.
            self.advance(seconds)
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(max(0.0, seconds) / self._speed)
