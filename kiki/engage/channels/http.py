"""What the HTTP providers (Twilio SMS, FCM push, the CRMs) share: one call that maps a
provider's failures to KIKI errors the same way for all.

- transport errors, timeouts, HTTP 5xx -> Unavailable (the log says `failed`; retry later)
- HTTP 429 -> RateLimited, with the provider's Retry-After
- HTTP 401/403 -> Unavailable naming the settings to fix (no retry heals it, but it is ours)
- any other 4xx -> Rejected with the provider's own message
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kiki.engage.channels.base import MessageChannel, Rejected
from kiki.errors import RateLimited, Unavailable
from kiki.flow.connectors.http import Reply, loads


class ProviderSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    timeout_s: float = Field(15.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


S = TypeVar("S", bound=ProviderSettings)


class HttpProvider(Generic[S]):
    """Base of the HTTP providers: the injected client, the provider's settings, one `_call`."""

    provider: ClassVar[str]
    credential_hint: ClassVar[str]
    refused: ClassVar[str] = "the message"  # what a 4xx refused, for the Rejected error

    def __init__(self, client: httpx.AsyncClient, settings: S) -> None:
        self._client = client
        self.settings = settings
        self._base = settings.base_url
        self._timeout = settings.timeout_s

    def error_message(self, reply: Reply) -> str:
        """The provider's own words for a failure."""
        return reply.text[:300] or f"HTTP {reply.status}"

    async def _call(self, method: str, path: str, **kwargs: Any) -> Reply:
        try:
            response = await self._client.request(
                method, self._base + path, timeout=self._timeout, **kwargs
            )
        except httpx.TimeoutException:
            raise Unavailable(
                f"{self.provider} did not answer within {self._timeout:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise Unavailable(f"{self.provider} could not be reached: {exc!r}") from None
        try:
            body = loads(response.content) if response.content else None
        except ValueError:
            body = None
        reply = Reply(response.status_code, body, response.content, response.headers)
        if reply.ok:
            return reply
        message = self.error_message(reply)
        if reply.status == 429:
            retry = reply.headers.get("Retry-After", "")
            raise RateLimited(
                f"{self.provider} throttled the message: {message}",
                retry_after_s=float(retry) if retry.isdigit() else 60.0,
            )
        if reply.status in (401, 403):
            raise Unavailable(
                f"{self.provider} refused the configured credentials ({message}); "
                f"fix {self.credential_hint}"
            )
        if reply.status >= 500:
            raise Unavailable(f"{self.provider} failed (HTTP {reply.status}): {message}")
        raise Rejected(f"{self.provider} refused {self.refused}: {message}")


class HttpChannel(HttpProvider[S], MessageChannel):
    """Base of the HTTP messaging channels."""
