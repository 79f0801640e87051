"""What the five ad-platform connectors share on top of the one HTTP transport (kiki.http):
the platform's settings, exact money conversions, batching helpers, and per-account pushes.

Each connector only says how its platform spells an error (message, throttle and credential
codes); the mapping itself is kiki.http's, so all five count failures the same way for the
caller's circuit breaker. Google Ads, LinkedIn and Amazon Ads issue OAuth 2.0 refresh tokens:
with `oauth` in their settings, kiki.http renews the access token before it expires.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import date, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any, ClassVar, TypeVar

import httpx
from pydantic import Field

from kiki.clock import Clock
from kiki.errors import ConfigError, InvalidInput
from kiki.flow.connectors.base import BidChange, ChangeResult, PlatformConnector, StatusChange
from kiki.http import HttpService, ServiceSettings
from kiki.money import MICROS_PER_UNIT, Money, micros_to_decimal_str, to_decimal

T = TypeVar("T")


class PlatformSettings(ServiceSettings):
    """Where a platform's API lives and how long to wait for it; each platform adds credentials."""

    default_retry_after_s: float = Field(
        60.0, gt=0, description="wait reported when the platform throttles without saying how long"
    )


# --- money ------------------------------------------------------------------------------------


def exact_amount(platform: str, micros: int, currency: str) -> Decimal:
    """Micros as an amount in currency units with the currency's minor-unit digits ("5.00").

    The platforms bill in the currency's minor unit (cents; whole yen), so an amount finer than
    that is refused rather than rounded: the caller decides which way to round a bid.
    """
    minor_per_unit = Money(MICROS_PER_UNIT, currency).minor_units()
    step = MICROS_PER_UNIT // minor_per_unit
    if micros % step:
        raise InvalidInput(
            f"{platform} takes {currency} amounts in steps of {micros_to_decimal_str(step)}; "
            f"{micros_to_decimal_str(micros)} {currency} is finer: round it before pushing"
        )
    return (Decimal(micros) / MICROS_PER_UNIT).quantize(Decimal(step) / MICROS_PER_UNIT)


def report_micros(value: Any) -> int:
    """A reported amount in currency units as micros, half-even to the micro.

    Reports may carry more digits than a micro (LinkedIn's costInLocalCurrency is a long
    fraction); a micro is a ten-thousandth of a cent, so this rounding never shows on a bill.
    """
    amount = to_decimal(value)
    return int((amount * MICROS_PER_UNIT).to_integral_value(rounding=ROUND_HALF_EVEN))


def report_count(value: Any) -> int:
    """A reported count as a whole number, rounded down: attribution models report fractional
    conversions, and SpendRow counts whole ones."""
    return int(to_decimal(value).to_integral_value(rounding=ROUND_FLOOR))


# --- batching helpers -------------------------------------------------------------------------


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items: the most one API call accepts."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_range(start: date, end: date) -> None:
    if end < start:
        raise InvalidInput(f"report range ends ({end}) before it starts ({start})")


def date_windows(start: date, end: date, max_days: int) -> Iterator[tuple[date, date]]:
    """Split an inclusive date range into windows a report endpoint accepts."""
    check_range(start, end)
    while start <= end:
        window_end = min(end, start + timedelta(days=max_days - 1))
        yield start, window_end
        start = window_end + timedelta(days=1)


def require_digits(value: str, what: str) -> str:
    """Ids go into URL paths and queries: only digits are let through."""
    if not value.isdigit():
        raise InvalidInput(f"{what} {value!r} must be the platform's numeric id")
    return value


S = TypeVar("S", bound=PlatformSettings)
C = TypeVar("C", BidChange, StatusChange)


class HttpConnector(HttpService[S], PlatformConnector):
    """Base of the five connectors. Subclasses set `settings_type` and `credential_hint`, and
    override kiki.http's hooks where their platform reports throttles, credential failures
    or outages in the body."""

    settings_type: ClassVar[type[PlatformSettings]]

    def __init__(self, client: httpx.AsyncClient, settings: S, clock: Clock | None = None) -> None:
        if not isinstance(settings, self.settings_type):
            raise ConfigError(
                f"{self.platform} needs {self.settings_type.__name__}, "
                f"got {type(settings).__name__}"
            )
        super().__init__(client, settings, clock)
        self.default_retry_after_s = settings.default_retry_after_s

    def _service(self) -> str:
        return self.platform

    async def _push_by_account(
        self,
        changes: Sequence[C],
        account: Callable[[C], str],
        push: Callable[[Sequence[C]], Awaitable[list[ChangeResult]]],
    ) -> list[ChangeResult]:
        """For APIs that take one account per call: check every bid's amount first (nothing
        is sent when one is inexact), call `push` once per account, answer in the caller's
        order."""
        for change in changes:
            if isinstance(change, BidChange):
                exact_amount(self.platform, change.bid_micros, change.currency)
        groups: dict[str, list[int]] = {}
        for index, change in enumerate(changes):
            groups.setdefault(account(change), []).append(index)
        results: dict[int, ChangeResult] = {}
        for indexes in groups.values():
            answers = await push([changes[i] for i in indexes])
            results.update(zip(indexes, answers, strict=True))
        return [results[i] for i in range(len(changes))]
