"""LinkedIn Marketing API, versioned REST (Rest.li protocol 2.0).

LinkedIn has no ad groups: the bid lives on the campaign, so a BidChange's `ad_group_ref` is
the campaign id. Bids and budgets are partial updates of the campaign:
`POST /rest/adAccounts/{account}/adCampaigns/{id}` with `X-RestLi-Method: PARTIAL_UPDATE` and
`{"patch": {"$set": {"unitCost" | "dailyBudget": {"amount": "5.00", "currencyCode": "USD"}}}}`;
success is 204. Reports: `GET /rest/adAnalytics?q=analytics` pivoted by CAMPAIGN, daily, over
the whole account (`accounts=List(urn...)`: the interface names the account, not the
campaigns); adAnalytics returns every row in one answer, without paging.

Every call carries `LinkedIn-Version: YYYYMM` and `X-Restli-Protocol-Version: 2.0.0`.

Money: amounts are decimal strings in the account currency, which must match the currency
given; costInLocalCurrency comes back as a decimal string, often with many digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import Field, SecretStr

from kiki.errors import InvalidInput
from kiki.flow.connectors.base import (
    BidChange,
    BudgetChange,
    ChangeResult,
    SpendRow,
    StatusChange,
)
from kiki.flow.connectors.http import (
    HttpConnector,
    PlatformSettings,
    check_range,
    exact_amount,
    report_count,
    report_micros,
    require_digits,
)
from kiki.http import OAuthRefresh, Reply, dumps
from kiki.money import normalize_currency

CAMPAIGN_URN = "urn:li:sponsoredCampaign:"
ANALYTICS_FIELDS = (
    "pivotValues,dateRange,impressions,clicks,costInLocalCurrency,"
    "externalWebsiteConversions,conversionValueInLocalCurrency"
)


class LinkedInOAuth(OAuthRefresh):
    """LinkedIn's token endpoint."""

    token_url: str = "https://www.linkedin.com/oauth/v2/accessToken"


class LinkedInSettings(PlatformSettings):
    """A member access token with the rw_ads scope, and the API version to ask for."""

    base_url: str = "https://api.linkedin.com"
    api_version: str = Field("202505", pattern=r"^\d{6}$", description="an active YYYYMM version")
    access_token: SecretStr
    oauth: LinkedInOAuth | None = Field(None, description="renews access_token when set")


class LinkedInConnector(HttpConnector[LinkedInSettings]):
    platform: ClassVar[str] = "linkedin"
    settings_type = LinkedInSettings
    credential_hint = "LinkedInSettings.access_token (scope rw_ads) or api_version"

    async def push_bids(self, changes: Sequence[BidChange]) -> list[ChangeResult]:
        patches = [
            (c.account_id, c.ad_group_ref, "unitCost", self._money(c.bid_micros, c.currency))
            for c in changes
        ]
        return [await self._patch_campaign(*patch) for patch in patches]

    async def push_budget(self, change: BudgetChange) -> ChangeResult:
        budget = self._money(change.daily_budget_micros, change.currency)
        return await self._patch_campaign(
            change.account_id, change.campaign_ref, "dailyBudget", budget
        )

    async def push_status(self, changes: Sequence[StatusChange]) -> list[ChangeResult]:
        """A LinkedIn campaign (KIKI's ad group) PAUSED, or ACTIVE again."""
        return [
            await self._patch_campaign(
                c.account_id, c.ad_group_ref, "status", "PAUSED" if c.paused else "ACTIVE"
            )
            for c in changes
        ]

    async def spend_report(self, account_id: str, start: date, end: date) -> list[SpendRow]:
        check_range(start, end)
        account = quote(f"urn:li:sponsoredAccount:{_digits(account_id)}", safe="")
        # Rest.li 2.0 query syntax: parentheses, commas and colons stay literal, while the URNs
        # inside List(...) are percent-encoded; a form encoder would mangle both.
        query = (
            "q=analytics&pivot=CAMPAIGN&timeGranularity=DAILY"
            f"&dateRange=(start:{_restli_date(start)},end:{_restli_date(end)})"
            f"&accounts=List({account})&fields={ANALYTICS_FIELDS}"
        )
        reply = await self._call(
            "GET", f"{self._base}/rest/adAnalytics?{query}", headers=self._headers()
        )
        if not reply.ok:
            raise InvalidInput(
                f"LinkedIn refused the analytics query: {self._error_message(reply)}"
            )
        return [_spend_row(element) for element in reply.body.get("elements", [])]

    def _money(self, micros: int, currency: str) -> dict[str, str]:
        amount = exact_amount(self.platform, micros, currency)
        return {"amount": format(amount, "f"), "currencyCode": normalize_currency(currency)}

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": self._bearer(),
            "LinkedIn-Version": self._settings.api_version,
            "X-Restli-Protocol-Version": "2.0.0",
        }

    async def _patch_campaign(
        self, account_id: str, campaign_id: str, field: str, value: dict[str, str] | str
    ) -> ChangeResult:
        url = (
            f"{self._base}/rest/adAccounts/{_digits(account_id)}/adCampaigns/{_digits(campaign_id)}"
        )
        reply = await self._call(
            "POST",
            url,
            headers={
                **self._headers(),
                "X-RestLi-Method": "PARTIAL_UPDATE",
                "Content-Type": "application/json",
            },
            content=dumps({"patch": {"$set": {field: value}}}),
        )
        if reply.ok:
            return ChangeResult(ok=True, ref=campaign_id)
        return ChangeResult(ok=False, ref=campaign_id, error=self._error_message(reply))

    def _error_message(self, reply: Reply) -> str:
        """LinkedIn errors: {"status", "code", "serviceErrorCode", "message"}."""
        if isinstance(reply.body, dict) and "message" in reply.body:
            code = reply.body.get("code") or reply.body.get("serviceErrorCode")
            return f"{reply.body['message']} ({code})" if code else str(reply.body["message"])
        return super()._error_message(reply)

    def _is_auth_failure(self, reply: Reply) -> bool:
        # 426: the LinkedIn-Version asked for is no longer (or not yet) served.
        return super()._is_auth_failure(reply) or reply.status == 426


def _digits(value: str) -> str:
    """Accept a bare id or its URN (urn:li:sponsoredAccount:123)."""
    return require_digits(value.rsplit(":", 1)[-1], "LinkedIn id")


def _restli_date(day: date) -> str:
    return f"(year:{day.year},month:{day.month},day:{day.day})"


def _spend_row(element: dict[str, Any]) -> SpendRow:
    start = element["dateRange"]["start"]
    return SpendRow(
        ad_group_ref=element["pivotValues"][0].removeprefix(CAMPAIGN_URN),
        day=date(start["year"], start["month"], start["day"]),
        impressions=int(element.get("impressions", 0)),
        clicks=int(element.get("clicks", 0)),
        conversions=report_count(element.get("externalWebsiteConversions", 0)),
        spend_micros=report_micros(element.get("costInLocalCurrency", 0)),
        conversion_value_micros=report_micros(element.get("conversionValueInLocalCurrency", 0)),
    )
