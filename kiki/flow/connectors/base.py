"""One interface for every ad platform the bid loop talks to.

Amounts are integer micros of the campaign's currency; each connector converts them to its
platform's unit exactly (Decimal), never through a float. Failures of the platform itself
(network errors, timeouts, 5xx, throttling) raise `kiki.errors.Unavailable` /
`kiki.errors.RateLimited` so the caller's circuit breaker counts them; a change the platform
rejected on its merits (one bad item in a batch) comes back as a result with `ok=False`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import date
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

PLATFORMS = ("google_ads", "meta", "tiktok", "linkedin", "amazon")


class BidChange(BaseModel):
    """Set the bid of one ad group (ad set on Meta, campaign on LinkedIn) on one platform."""

    model_config = ConfigDict(frozen=True)

    account_id: str  # the advertiser account: customer id, ad account, advertiser, profile
    campaign_ref: str  # the platform's campaign id
    ad_group_ref: str  # the platform's ad group id
    bid_micros: int = Field(ge=0)
    currency: str


class BudgetChange(BaseModel):
    """Set the daily budget of one campaign on one platform."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    campaign_ref: str
    daily_budget_micros: int = Field(ge=0)
    currency: str


class StatusChange(BaseModel):
    """Pause one ad group (ad set on Meta, campaign on LinkedIn) on one platform, or let it
    serve again: how KIKI stops delivery that no daily budget of its own bounds
    (actors.flow.pushes.CapPusher)."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    campaign_ref: str
    ad_group_ref: str
    paused: bool


class ChangeResult(BaseModel):
    """What the platform said about one change."""

    ok: bool
    ref: str  # the ad group or campaign the change was for
    error: str | None = None  # the platform's own message when ok is False


class SpendRow(BaseModel):
    """One ad group's delivery on one day, as the platform reports it."""

    ad_group_ref: str
    day: date
    impressions: int = Field(ge=0)
    clicks: int = Field(ge=0)
    conversions: int = Field(ge=0)
    spend_micros: int = Field(ge=0)
    conversion_value_micros: int = Field(0, ge=0)


class PlatformConnector(ABC):
    """A client for one ad platform's real API."""

    platform: ClassVar[str]

    @abstractmethod
    async def push_bids(self, changes: Sequence[BidChange]) -> list[ChangeResult]:
        """Apply bid changes (batched where the API allows); one result per change, in order."""

    @abstractmethod
    async def push_budget(self, change: BudgetChange) -> ChangeResult:
        """Set a campaign's daily budget."""

    @abstractmethod
    async def push_status(self, changes: Sequence[StatusChange]) -> list[ChangeResult]:
        """Pause ad groups or let them serve again; one result per change, in order."""

    @abstractmethod
    async def spend_report(self, account_id: str, start: date, end: date) -> list[SpendRow]:
        """Delivery per ad group and day, start and end inclusive."""
