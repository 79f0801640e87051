"""One interface for every messaging channel.

A channel takes a rendered message and delivers it, returning the provider's id for it.
Failures of the provider itself (unreachable, 5xx, throttled) raise `Unavailable` or
`RateLimited`, so the message is logged `failed` and a retry with the same idempotency key
tries again; a message the provider refuses on its merits (a bad number, an unregistered
device) raises `Rejected` with the provider's reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from kiki.errors import KikiError

Channel = Literal["email", "sms", "push", "in_app"]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "push", "in_app")


class Rejected(KikiError):
    """The provider refused this message on its merits; retrying will not help."""

    code = "rejected"


class Outgoing(BaseModel):
    """A rendered message for one customer on one channel."""

    model_config = ConfigDict(frozen=True)

    message_id: int  # the delivery log's row
    tenant_id: str
    customer_id: str
    to: str  # email address, E.164 number, device token, or the customer id (in-app)
    subject: str  # email subject; push and in-app title
    body: str


class MessageChannel(ABC):
    channel: ClassVar[Channel]

    @abstractmethod
    async def send(self, message: Outgoing) -> str:
        """Deliver the message; returns the provider's id for it."""
