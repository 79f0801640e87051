"""What the five ad-platform connectors share: one HTTP path that maps failures to KIKI errors,
exact JSON, and exact money conversions.

Each connector only says how its platform spells an error (message, throttle and credential
codes); the mapping itself lives here, so all five count failures the same way for the
caller's circuit breaker:

- transport errors, timeouts, HTTP 5xx and errors the platform calls transient -> Unavailable
- HTTP 429 or the platform's own throttle codes -> RateLimited (Retry-After when given)
- rejected credentials -> Unavailable naming the setting to fix: it is a configuration error
  that no retry heals, but the bid loop must stop calling the platform all the same.

Where a platform issues OAuth 2.0 refresh tokens (Google Ads, LinkedIn, Amazon Ads) and the
settings carry one (`oauth`), the access token is renewed (RFC 6749 section 6) shortly before
it expires and once when the platform refuses it, and the call is sent again: a token that
lives an hour must not stop the bids.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from kiki.clock import Clock, WallClock
from kiki.errors import ConfigError, InvalidInput, RateLimited, Unavailable
from kiki.flow.connectors.base import BidChange, ChangeResult, PlatformConnector
from kiki.money import MICROS_PER_UNIT, Money, micros_to_decimal_str, to_decimal

T = TypeVar("T")


class PlatformSettings(BaseModel):
    """Where a platform's API lives and how long to wait for it; each platform adds credentials."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(description="scheme and host of the API, e.g. a local fake in tests")
    timeout_s: float = Field(30.0, gt=0, description="per HTTP call")
    default_retry_after_s: float = Field(
        60.0, gt=0, description="wait reported when the platform throttles without saying how long"
    )

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


class OAuthRefresh(BaseModel):
    """A refresh token and the OAuth client it was issued to. Platforms set `token_url`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    refresh_token: SecretStr
    refresh_before_s: float = Field(
        120.0, ge=0, description="renew this long before the token's stated expiry"
    )

    @field_validator("token_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("token_url must start with http:// or https://")
        return value


# --- JSON that never passes money through a float -------------------------------------------


def dumps(payload: Any) -> bytes:
    """JSON with every Decimal written as a plain number, digit for digit; floats are refused."""
    return _encode(payload).encode()


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        raise TypeError(f"float {value!r} must not reach a platform: use Decimal")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value)


def loads(content: bytes | str) -> Any:
    """Parse JSON with fractional numbers as Decimal, so a reported 12.34 stays 12.34."""
    return json.loads(content, parse_float=Decimal)


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


# --- HTTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, its body parsed as exact JSON when it is JSON."""

    status: int
    body: Any
    content: bytes
    headers: httpx.Headers
    request_token: str = ""  # the access token the request carried, if any

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> dict[str, Any]:
        """The `error` object most of these APIs wrap failures in (empty when absent)."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return error if isinstance(error, dict) else {}


S = TypeVar("S", bound=PlatformSettings)


class HttpConnector(PlatformConnector, Generic[S]):
    """Base of the five connectors: the injected client, settings and one `_call`.

    Subclasses set `settings_type` and `credential_hint`, and override the hooks below where
    their platform reports throttles, credential failures or outages in the body.
    """

    settings_type: ClassVar[type[PlatformSettings]]
    credential_hint: ClassVar[str]  # which settings to fix when the platform refuses them

    def __init__(self, client: httpx.AsyncClient, settings: S, clock: Clock | None = None) -> None:
        if not isinstance(settings, self.settings_type):
            raise ConfigError(
                f"{self.platform} needs {self.settings_type.__name__}, "
                f"got {type(settings).__name__}"
            )
        self._client = client
        self._base = settings.base_url
        self._settings: S = settings
        self._clock: Clock = clock or WallClock()
        token = getattr(settings, "access_token", None)
        self._access_token = token.get_secret_value() if isinstance(token, SecretStr) else ""
        self._oauth: OAuthRefresh | None = getattr(settings, "oauth", None)
        self._refresh_token = self._oauth.refresh_token.get_secret_value() if self._oauth else ""
        self._expires_at: datetime | None = None  # unknown until a refresh says
        self._refreshing = asyncio.Lock()

    def _bearer(self) -> str:
        return f"Bearer {self._access_token}"

    async def _push_by_account(
        self,
        changes: Sequence[BidChange],
        account: Callable[[BidChange], str],
        push: Callable[[Sequence[BidChange]], Awaitable[list[ChangeResult]]],
    ) -> list[ChangeResult]:
        """For APIs that take one account per call: check every amount first (nothing is sent
        when one is inexact), call `push` once per account, answer in the caller's order."""
        for change in changes:
            exact_amount(self.platform, change.bid_micros, change.currency)
        groups: dict[str, list[int]] = {}
        for index, change in enumerate(changes):
            groups.setdefault(account(change), []).append(index)
        results: dict[int, ChangeResult] = {}
        for indexes in groups.values():
            answers = await push([changes[i] for i in indexes])
            results.update(zip(indexes, answers, strict=True))
        return [results[i] for i in range(len(changes))]

    async def _call(self, method: str, url: str, **kwargs: Any) -> Reply:
        """Send one request; raise for platform failures, return everything else (4xx too).
        A request with an `Authorization` header goes with a fresh token, and once more after
        a refresh when the platform refused the token."""
        authorized = "Authorization" in kwargs.get("headers", {})
        if authorized and self._oauth and self._expiring():
            await self._refresh(self._access_token)
        reply = await self._send(method, url, authorized, **kwargs)
        if authorized and self._oauth and reply.status == 401:
            await self._refresh(reply.request_token)
            reply = await self._send(method, url, authorized, **kwargs)
        self._raise_for_platform(reply)
        return reply

    async def _send(self, method: str, url: str, authorized: bool, **kwargs: Any) -> Reply:
        token = self._access_token
        if authorized:
            kwargs["headers"] = {**kwargs["headers"], "Authorization": f"Bearer {token}"}
        try:
            response = await self._client.request(
                method, url, timeout=self._settings.timeout_s, **kwargs
            )
        except httpx.TimeoutException as exc:
            raise Unavailable(
                f"{self.platform} did not answer {method} {httpx.URL(url).path} "
                f"within {self._settings.timeout_s:g} s"
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(f"{self.platform} could not be reached: {exc!r}") from exc
        try:
            body = loads(response.content) if response.content else None
        except ValueError:
            body = None  # an HTML error page from a proxy; the status still says enough
        return Reply(response.status_code, body, response.content, response.headers, token)

    def _expiring(self) -> bool:
        assert self._oauth is not None
        return self._expires_at is not None and self._clock.now() >= self._expires_at - timedelta(
            seconds=self._oauth.refresh_before_s
        )

    async def _refresh(self, stale: str) -> None:
        """Trade the refresh token for a new access token, once for all the calls that saw
        `stale` (concurrent calls wait for the first one's refresh)."""
        assert self._oauth is not None
        async with self._refreshing:
            if self._access_token != stale:
                return
            try:
                response = await self._client.post(
                    self._oauth.token_url,
                    data={
                        "grant_type": "refresh_token",
                        "refresh_token": self._refresh_token,
                        "client_id": self._oauth.client_id,
                        "client_secret": self._oauth.client_secret.get_secret_value(),
                    },
                    timeout=self._settings.timeout_s,
                )
            except httpx.HTTPError as exc:
                message = f"{self.platform}'s OAuth server could not be reached: {exc!r}"
                raise Unavailable(message) from exc
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                body = {}  # an HTML error page or other non-object: the status says enough
            token = body.get("access_token")
            if response.status_code != 200 or not isinstance(token, str) or not token:
                reason = body.get("error_description") or body.get("error")
                raise Unavailable(
                    f"{self.platform} refused to refresh the access token "
                    f"(HTTP {response.status_code}: {reason or response.text[:200]}); "
                    "authorize the app again and set oauth.refresh_token"
                )
            self._access_token = token
            # Some servers rotate the refresh token (LinkedIn may); keep the newest one.
            self._refresh_token = body.get("refresh_token") or self._refresh_token
            expires_in = body.get("expires_in")
            self._expires_at = (
                self._clock.now() + timedelta(seconds=float(expires_in))
                if isinstance(expires_in, int | float)
                else None
            )

    def _raise_for_platform(self, reply: Reply) -> None:
        if self._is_throttled(reply):
            raise RateLimited(
                f"{self.platform} throttled the call: {self._error_message(reply)}",
                retry_after_s=self._retry_after(reply),
            )
        if self._is_auth_failure(reply):
            raise Unavailable(
                f"{self.platform} refused the configured access ({self._error_message(reply)}); "
                f"fix {self.credential_hint}"
            )
        if reply.status >= 500 or self._is_transient(reply):
            raise Unavailable(
                f"{self.platform} failed (HTTP {reply.status}): {self._error_message(reply)}"
            )

    # Hooks: how this platform says what went wrong.

    def _error_message(self, reply: Reply) -> str:
        return str(reply.error.get("message") or reply.text[:300] or f"HTTP {reply.status}")

    def _is_throttled(self, reply: Reply) -> bool:
        return reply.status == 429

    def _is_auth_failure(self, reply: Reply) -> bool:
        return reply.status in (401, 403)

    def _is_transient(self, reply: Reply) -> bool:
        return False

    def _retry_hint_s(self, reply: Reply) -> float | None:
        """A wait the platform states in its own words (body or header), if any."""
        return None

    def _retry_after(self, reply: Reply) -> float:
        hint = self._retry_hint_s(reply)
        if hint is not None:
            return hint
        header = reply.headers.get("Retry-After", "").strip()
        if header.isdigit():
            return float(header)
        if header:
            try:
                when = parsedate_to_datetime(header)
            except (TypeError, ValueError):
                return self._settings.default_retry_after_s
            return max(0.0, (when - self._clock.now()).total_seconds())
        return self._settings.default_retry_after_s
