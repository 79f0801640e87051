"""What a campaign's budget allows: its caps and its policy (whether, when, where and how
high it may bid), and the rule a denial names. Validated on construction, so a command that
would set a bad cap or policy is refused before any ledger event exists."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from kiki.clock import valid_time_zone
from kiki.errors import InvalidInput
from kiki.money import MAX_MICROS

PLATFORMS: tuple[str, ...] = ("google_ads", "meta", "tiktok", "linkedin", "amazon")


class Rule(StrEnum):
    """Why a reservation or check was denied; each denial names exactly one rule."""

    NOT_ACTIVE = "campaign_not_active"
    BEFORE_START = "before_schedule_start"
    AFTER_END = "after_schedule_end"
    PLATFORM_NOT_ALLOWED = "platform_not_allowed"
    BID_BELOW_MIN = "bid_below_min"
    BID_ABOVE_MAX = "bid_above_max"
    OVER_DELIVERY_BLOCK = "over_delivery_block"
    TOTAL_CAP = "total_cap_exhausted"
    DAILY_CAP = "daily_cap_exhausted"
    PLATFORM_CAP = "platform_cap_exhausted"
    INSUFFICIENT = "insufficient_budget"


def check_time_zone(name: object) -> str:
    try:
        return valid_time_zone(name)
    except ValueError as exc:
        raise InvalidInput(f"time zone: {exc}") from None


def _check_micros(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an amount in whole micros, not {value!r}")
    if not 0 <= value <= MAX_MICROS:
        raise InvalidInput(f"{name} must be between 0 and {MAX_MICROS} micros")


@dataclass(frozen=True, slots=True)
class Denial:
    rule: Rule
    message: str


@dataclass(frozen=True, slots=True)
class Caps:
    total_micros: int
    daily_micros: int | None = None
    platform_micros: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.platform_micros, dict):
            raise InvalidInput("platform caps must map platform names to amounts")
        _check_micros("total budget", self.total_micros)
        if self.daily_micros is not None:
            _check_micros("daily budget", self.daily_micros)
        for platform, cap in self.platform_micros.items():
            _check_micros(f"{platform} budget", cap)
        unknown = set(self.platform_micros) - set(PLATFORMS)
        if unknown:
            raise InvalidInput(f"unknown platform(s) {sorted(unknown)}; use {list(PLATFORMS)}")

    def to_data(self) -> dict[str, Any]:
        return {
            "total": self.total_micros,
            "daily": self.daily_micros,
            "platforms": dict(self.platform_micros),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Caps:
        return cls(data["total"], data.get("daily"), dict(data.get("platforms") or {}))


@dataclass(frozen=True, slots=True)
class Policy:
    """The compliance side of a campaign: whether, when, where and how high it may bid."""

    status: str = "active"
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    timezone: str = "UTC"
    allowed_platforms: tuple[str, ...] = PLATFORMS
    bid_min_micros: int | None = None
    bid_max_micros: int | None = None

    def __post_init__(self) -> None:
        if self.status not in ("active", "paused", "stopped"):
            raise InvalidInput(f"status {self.status!r} must be active, paused or stopped")
        check_time_zone(self.timezone)
        for moment in (self.starts_at, self.ends_at):
            if moment is not None and not isinstance(moment, datetime):
                raise InvalidInput("schedule times must be ISO 8601 date-times")
            if moment is not None and moment.utcoffset() is None:
                raise InvalidInput("schedule times must carry a UTC offset")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise InvalidInput("schedule end must be after its start")
        if not isinstance(self.allowed_platforms, tuple) or not all(
            isinstance(p, str) for p in self.allowed_platforms
        ):
            raise InvalidInput(f"allowed platforms must be a list of {list(PLATFORMS)}")
        unknown = set(self.allowed_platforms) - set(PLATFORMS)
        if unknown:
            raise InvalidInput(f"unknown platform(s) {sorted(unknown)}; use {list(PLATFORMS)}")
        lo, hi = self.bid_min_micros, self.bid_max_micros
        for name, bid in (("bid_min", lo), ("bid_max", hi)):
            if bid is not None:
                _check_micros(name, bid)
        if lo is not None and hi is not None and lo > hi:
            raise InvalidInput("bid_min must not exceed bid_max")

    def to_data(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "starts_at": self.starts_at.isoformat() if self.starts_at else None,
            "ends_at": self.ends_at.isoformat() if self.ends_at else None,
            "timezone": self.timezone,
            "allowed_platforms": list(self.allowed_platforms),
            "bid_min": self.bid_min_micros,
            "bid_max": self.bid_max_micros,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Policy:
        def moment(value: str | None) -> datetime | None:
            if value is None:
                return None
            try:
                return datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise InvalidInput(f"{value!r} is not an ISO 8601 date-time") from None

        return cls(
            status=data["status"],
            starts_at=moment(data.get("starts_at")),
            ends_at=moment(data.get("ends_at")),
            timezone=data.get("timezone", "UTC"),
            allowed_platforms=tuple(data.get("allowed_platforms") or PLATFORMS),
            bid_min_micros=data.get("bid_min"),
            bid_max_micros=data.get("bid_max"),
        )
