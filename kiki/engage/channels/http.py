"""What the HTTP providers (Twilio SMS, FCM push, the CRMs) share on top of the one HTTP
transport (kiki.http, which maps outages, throttles and refused credentials the same way for
every service): any other 4xx is `Rejected` with the provider's own message."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import Field

from kiki.engage.channels.base import MessageChannel, Rejected
from kiki.http import HttpService, Reply, ServiceSettings


class ProviderSettings(ServiceSettings):
    timeout_s: float = Field(15.0, gt=0, description="per HTTP call")


S = TypeVar("S", bound=ProviderSettings)


class HttpProvider(HttpService[S]):
    """Base of the HTTP providers: kiki.http's call, and a refusal of anything else as
    `Rejected` with the provider's own words."""

    provider: ClassVar[str]
    refused: ClassVar[str] = "the message"  # what a 4xx refused, for the Rejected error

    def _service(self) -> str:
        return self.provider

    @property
    def settings(self) -> S:
        return self._settings

    def error_message(self, reply: Reply) -> str:
        """The provider's own words for a failure."""
        return reply.text[:300] or f"HTTP {reply.status}"

    def _error_message(self, reply: Reply) -> str:
        return self.error_message(reply)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Reply:  # type: ignore[override]
        """kiki.http's call on the provider's `path`; a refusal of anything else (4xx) is
        `Rejected`."""
        reply = await super()._call(method, self._base + path, **kwargs)
        if not reply.ok:
            raise Rejected(f"{self.provider} refused {self.refused}: {self.error_message(reply)}")
        return reply


class HttpChannel(HttpProvider[S], MessageChannel):
    """Base of the HTTP messaging channels."""
