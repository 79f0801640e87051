"""The one HTTP transport every outbound connector uses: ad platforms (kiki.flow.connectors),
messaging channels (kiki.engage.channels) and CRMs (kiki.engage.crm).

One place maps a service's failures to KIKI errors, so every caller's breaker, retry and log
sees them the same way:

- transport errors, timeouts, HTTP 5xx and errors the service calls transient -> Unavailable
- HTTP 429 or the service's own throttle codes -> RateLimited (its Retry-After when given)
- rejected credentials -> Unavailable naming the settings to fix: a configuration error no
  retry heals, but callers must stop calling all the same.

Bodies are exact JSON (fractions as Decimal; a float never goes out). Where the settings carry
a token grant (`oauth`: an OAuth 2.0 refresh token, RFC 6749 section 6, or a service account's
signed JWT, RFC 7523), the access token is obtained before the first call, renewed shortly
before it expires and once when the service refuses it, and the call is sent again. One renewal
serves every concurrent call that held the old token.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

import httpx
from google.auth import crypt, jwt
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from kiki.clock import Clock, WallClock
from kiki.errors import RateLimited, Unavailable


def _http_url(value: str, what: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{what} must start with http:// or https://")
    return value


class ServiceSettings(BaseModel):
    """Where a service's API lives and how long to wait for it; each service adds its
    credentials."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(description="scheme and host of the API, e.g. a local fake in tests")
    timeout_s: float = Field(30.0, gt=0, description="per HTTP call")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _http_url(value, "base_url").rstrip("/")


class TokenGrant(BaseModel):
    """How a service's access tokens are obtained: a form POSTed to `token_url`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_url: str
    refresh_before_s: float = Field(
        120.0, ge=0, description="renew this long before the token's stated expiry"
    )

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str) -> str:
        return _http_url(value, "token_url")

    def first_refresh_token(self) -> str:
        """The refresh token to start from ("" for grants without one)."""
        return ""

    def form(self, now: datetime, refresh_token: str) -> dict[str, str]:
        """The token request's form body; `refresh_token` is the newest one the server gave."""
        raise NotImplementedError


class OAuthRefresh(TokenGrant):
    """A refresh token and the OAuth client it was issued to. Services set `token_url`."""

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    refresh_token: SecretStr

    def first_refresh_token(self) -> str:
        return self.refresh_token.get_secret_value()

    def form(self, now: datetime, refresh_token: str) -> dict[str, str]:
        return {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.client_id,
            "client_secret": self.client_secret.get_secret_value(),
        }


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class ServiceAccountGrant(TokenGrant):
    """A Google service account: each token is bought with a JWT the account's key signs
    (RS256), as google-auth's own service-account credentials do, sent through this
    transport so failures map like every other call's."""

    client_email: str = Field(min_length=3)
    private_key: SecretStr = Field(description="PEM, from the key file's private_key")
    private_key_id: str | None = None
    scope: str = Field(min_length=1)
    lifetime_s: int = Field(3600, gt=0, le=3600, description="Google allows at most an hour")

    @classmethod
    def from_key_file(cls, info: dict[str, Any], scope: str) -> ServiceAccountGrant:
        """From the JSON key file Google issues (type service_account)."""
        if info.get("type") != "service_account":
            raise ValueError("not a service account key file (its type must be service_account)")
        return cls(
            token_url=info.get("token_uri") or "https://oauth2.googleapis.com/token",
            client_email=info.get("client_email", ""),
            private_key=SecretStr(info.get("private_key", "")),
            private_key_id=info.get("private_key_id"),
            scope=scope,
        )

    def form(self, now: datetime, refresh_token: str) -> dict[str, str]:
        signer = crypt.RSASigner.from_string(
            self.private_key.get_secret_value(), self.private_key_id
        )
        issued = int(now.timestamp())
        claims = {
            "iss": self.client_email,
            "scope": self.scope,
            "aud": self.token_url,
            "iat": issued,
            "exp": issued + self.lifetime_s,
        }
        return {"grant_type": JWT_BEARER, "assertion": jwt.encode(signer, claims).decode()}


# --- JSON that never passes money through a float -------------------------------------------


def dumps(payload: Any) -> bytes:
    """JSON with every Decimal written as a plain number, digit for digit; floats are refused."""
    return _encode(payload).encode()


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        raise TypeError(f"float {value!r} must not reach a service: use Decimal")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value)


def loads(content: bytes | str) -> Any:
    """Parse JSON with fractional numbers as Decimal, so a reported 12.34 stays 12.34."""
    return json.loads(content, parse_float=Decimal)


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
        """The `error` object most APIs wrap failures in (empty when absent)."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return error if isinstance(error, dict) else {}


S = TypeVar("S", bound=ServiceSettings)


class HttpService(Generic[S]):
    """A client of one service: the injected httpx client, its settings and one `_call`.

    Subclasses name the service (`_service`) and the settings to fix when it refuses the
    credentials (`credential_hint`), and override the hooks below where the service reports
    throttles, credential failures or outages in its own way.
    """

    credential_hint: str = "its credentials"
    # What to do when the token server refuses the grant.
    grant_hint: str = "authorize the app again and set oauth.refresh_token"
    # The wait reported when the service throttles without saying how long.
    default_retry_after_s: float = 60.0

    def __init__(self, client: httpx.AsyncClient, settings: S, clock: Clock | None = None) -> None:
        self._client = client
        self._settings: S = settings
        self._base = settings.base_url
        self._clock: Clock = clock or WallClock()
        token = getattr(settings, "access_token", None)
        self._access_token = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._access_token = self._access_token or ""
        self._oauth: TokenGrant | None = getattr(settings, "oauth", None)
        self._refresh_token = self._oauth.first_refresh_token() if self._oauth else ""
        self._expires_at: datetime | None = None  # unknown until a refresh says
        self._refreshing = asyncio.Lock()

    def _service(self) -> str:
        """The service's name in messages."""
        raise NotImplementedError

    async def _call(self, method: str, url: str, **kwargs: Any) -> Reply:
        """Send one request; raise for service failures, return everything else (4xx too).
        With OAuth configured, a request with an `Authorization` header goes with a fresh
        token, and once more after a refresh when the service refused the token."""
        authorized = self._oauth is not None and "Authorization" in kwargs.get("headers", {})
        if authorized and (not self._access_token or self._expiring()):
            await self._refresh(self._access_token)
        reply = await self._send(method, url, authorized, **kwargs)
        if authorized and reply.status == 401:
            await self._refresh(reply.request_token)
            reply = await self._send(method, url, authorized, **kwargs)
        self._raise_for_service(reply)
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
                f"{self._service()} did not answer {method} {httpx.URL(url).path} "
                f"within {self._settings.timeout_s:g} s"
            ) from exc
        except httpx.TransportError as exc:
            raise Unavailable(f"{self._service()} could not be reached: {exc!r}") from exc
        try:
            body = loads(response.content) if response.content else None
        except ValueError:
            body = None  # an HTML error page from a proxy; the status still says enough
        return Reply(response.status_code, body, response.content, response.headers, token)

    def _bearer(self) -> str:
        """The Authorization header's value; with a grant, `_call` puts the current token in."""
        return f"Bearer {self._access_token}"

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
            body, response = await self._token_request()
            token = body.get("access_token")
            if response.status_code != 200 or not isinstance(token, str) or not token:
                reason = body.get("error_description") or body.get("error")
                raise Unavailable(
                    f"{self._service()} refused to refresh the access token "
                    f"(HTTP {response.status_code}: {reason or response.text[:200]}); "
                    f"{self.grant_hint}"
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

    async def _token_request(self) -> tuple[dict[str, Any], httpx.Response]:
        assert self._oauth is not None
        try:
            response = await self._client.post(
                self._oauth.token_url,
                data=self._oauth.form(self._clock.now(), self._refresh_token),
                timeout=self._settings.timeout_s,
            )
        except httpx.HTTPError as exc:
            message = f"{self._service()}'s OAuth server could not be reached: {exc!r}"
            raise Unavailable(message) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        # An HTML error page or other non-object: the status says enough.
        return (body if isinstance(body, dict) else {}), response

    def _raise_for_service(self, reply: Reply) -> None:
        if self._is_throttled(reply):
            raise RateLimited(
                f"{self._service()} throttled the call: {self._error_message(reply)}",
                retry_after_s=self._retry_after(reply),
            )
        if self._is_auth_failure(reply):
            raise Unavailable(
                f"{self._service()} refused the configured credentials "
                f"({self._error_message(reply)}); fix {self.credential_hint}"
            )
        if reply.status >= 500 or self._is_transient(reply):
            raise Unavailable(
                f"{self._service()} failed (HTTP {reply.status}): {self._error_message(reply)}"
            )

    # Hooks: how this service says what went wrong.

    def _error_message(self, reply: Reply) -> str:
        return str(reply.error.get("message") or reply.text[:300] or f"HTTP {reply.status}")

    def _is_throttled(self, reply: Reply) -> bool:
        return reply.status == 429

    def _is_auth_failure(self, reply: Reply) -> bool:
        return reply.status in (401, 403)

    def _is_transient(self, reply: Reply) -> bool:
        return False

    def _retry_hint_s(self, reply: Reply) -> float | None:
        """A wait the service states in its own words (body or header), if any."""
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
                return self.default_retry_after_s
            return max(0.0, (when - self._clock.now()).total_seconds())
        return self.default_retry_after_s
