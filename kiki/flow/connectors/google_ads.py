"""Google Ads API over REST (the JSON mapping of its gRPC services).

Bids: `POST /vN/customers/{cid}/adGroups:mutate`, one update operation per ad group with
`cpcBidMicros` and `updateMask: cpc_bid_micros`, `partialFailure: true` so one bad ad group
does not sink the rest. Budgets: the campaign's `campaign_budget` resource is looked up with
GAQL, then `campaignBudgets:mutate` sets `amountMicros` (a budget may be shared by several
campaigns: Google applies it to all of them). Reports: `googleAds:searchStream` with a GAQL
query over `ad_group` segmented by date.

Money: Google speaks micros already; int64 fields travel as JSON strings (proto3 JSON), and an
amount must be a multiple of the currency's billable unit (one cent for USD), so a finer amount
is refused here rather than rejected there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, ClassVar

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
    C,
    HttpConnector,
    PlatformSettings,
    check_range,
    exact_amount,
    report_count,
    report_micros,
    require_digits,
)
from kiki.http import OAuthRefresh, Reply, dumps


class GoogleAdsOAuth(OAuthRefresh):
    """Google's token endpoint."""

    token_url: str = "https://oauth2.googleapis.com/token"


class GoogleAdsSettings(PlatformSettings):
    """Credentials of one Google Ads API client; with `oauth` the access token is renewed."""

    base_url: str = "https://googleads.googleapis.com"
    api_version: str = Field("v20", pattern=r"^v\d+$", description="a version Google still serves")
    developer_token: SecretStr
    access_token: SecretStr
    oauth: GoogleAdsOAuth | None = Field(None, description="renews access_token when set")
    login_customer_id: str | None = Field(None, pattern=r"^\d+$", description="the manager account")


class GoogleAdsConnector(HttpConnector[GoogleAdsSettings]):
    platform: ClassVar[str] = "google_ads"
    settings_type = GoogleAdsSettings
    credential_hint = "GoogleAdsSettings.access_token, developer_token or login_customer_id"

    async def push_bids(self, changes: Sequence[BidChange]) -> list[ChangeResult]:
        async def push(customer: Sequence[BidChange]) -> list[ChangeResult]:
            return await self._mutate_ad_groups(customer, lambda c: (
                "cpc_bid_micros", {"cpcBidMicros": str(c.bid_micros)}))  # fmt: skip

        return await self._push_by_account(changes, lambda c: _customer(c.account_id), push)

    async def push_status(self, changes: Sequence[StatusChange]) -> list[ChangeResult]:
        async def push(customer: Sequence[StatusChange]) -> list[ChangeResult]:
            return await self._mutate_ad_groups(customer, lambda c: (
                "status", {"status": "PAUSED" if c.paused else "ENABLED"}))  # fmt: skip

        return await self._push_by_account(changes, lambda c: _customer(c.account_id), push)

    async def _mutate_ad_groups(
        self, changes: Sequence[C], update: Callable[[C], tuple[str, dict[str, str]]]
    ) -> list[ChangeResult]:
        """One mutate call for the ad groups of one customer: `update` gives each one's mask
        and fields (int64 as JSON strings, the mask in snake_case, as Google wants)."""
        customer = _customer(changes[0].account_id)
        operations = []
        for c in changes:
            mask, fields = update(c)
            name = f"customers/{customer}/adGroups/{require_digits(c.ad_group_ref, 'ad group id')}"
            operations.append({"update": {"resourceName": name, **fields}, "updateMask": mask})
        errors = await self._mutate(customer, "adGroups", operations)
        return [
            ChangeResult(ok=error is None, ref=change.ad_group_ref, error=error)
            for change, error in zip(changes, errors, strict=True)
        ]

    async def push_budget(self, change: BudgetChange) -> ChangeResult:
        exact_amount(self.platform, change.daily_budget_micros, change.currency)
        customer = _customer(change.account_id)
        campaign = require_digits(change.campaign_ref, "campaign id")
        query = f"SELECT campaign.campaign_budget FROM campaign WHERE campaign.id = {campaign}"
        rows = await self._search(customer, query)
        budget = rows[0].get("campaign", {}).get("campaignBudget") if rows else None
        if not budget:
            return ChangeResult(
                ok=False, ref=campaign, error=f"campaign {campaign} of {customer} has no budget"
            )
        update = _update(budget, "amount_micros", amountMicros=change.daily_budget_micros)
        [error] = await self._mutate(customer, "campaignBudgets", [update])
        return ChangeResult(ok=error is None, ref=campaign, error=error)

    async def spend_report(self, account_id: str, start: date, end: date) -> list[SpendRow]:
        check_range(start, end)
        rows = await self._search(
            _customer(account_id),
            "SELECT ad_group.id, segments.date, metrics.impressions, metrics.clicks, "
            "metrics.conversions, metrics.conversions_value, metrics.cost_micros "
            f"FROM ad_group WHERE segments.date BETWEEN '{start}' AND '{end}'",
        )
        spend: list[SpendRow] = []
        for row in rows:
            # proto3 JSON leaves out fields at their default: a missing metric is a zero.
            metrics = row.get("metrics", {})
            spend.append(
                SpendRow(
                    ad_group_ref=str(row["adGroup"]["id"]),
                    day=date.fromisoformat(row["segments"]["date"]),
                    impressions=int(metrics.get("impressions", 0)),
                    clicks=int(metrics.get("clicks", 0)),
                    conversions=report_count(metrics.get("conversions", 0)),
                    spend_micros=int(metrics.get("costMicros", 0)),
                    conversion_value_micros=report_micros(metrics.get("conversionsValue", 0)),
                )
            )
        return spend

    def _url(self, customer: str, method: str) -> str:
        return f"{self._base}/{self._settings.api_version}/customers/{customer}/{method}"

    def _headers(self) -> dict[str, str]:
        headers = {
            "Authorization": self._bearer(),
            "developer-token": self._settings.developer_token.get_secret_value(),
            "Content-Type": "application/json",
        }
        if self._settings.login_customer_id:
            headers["login-customer-id"] = self._settings.login_customer_id
        return headers

    async def _mutate(
        self, customer: str, service: str, operations: list[dict[str, Any]]
    ) -> list[str | None]:
        """One error message (or None) per operation, in order."""
        payload = {"operations": operations, "partialFailure": True}
        reply = await self._call(
            "POST",
            self._url(customer, f"{service}:mutate"),
            headers=self._headers(),
            content=dumps(payload),
        )
        if not reply.ok:  # the whole request was refused, e.g. an unknown customer
            return [self._error_message(reply)] * len(operations)
        errors: list[str | None] = [None] * len(operations)
        for detail in (reply.body.get("partialFailureError") or {}).get("details", []):
            for failure in detail.get("errors", []):
                index = _operation_index(failure)
                if index is not None:
                    errors[index] = _describe(failure)
        # A failed operation's result is empty; never report it as applied.
        for index, result in enumerate(reply.body.get("results", [])):
            if errors[index] is None and not result.get("resourceName"):
                errors[index] = "Google Ads returned no result for this operation"
        return errors

    async def _search(self, customer: str, query: str) -> list[dict[str, Any]]:
        """All rows of a searchStream: a JSON array of batches, each with its `results`."""
        reply = await self._call(
            "POST",
            self._url(customer, "googleAds:searchStream"),
            headers=self._headers(),
            content=dumps({"query": query}),
        )
        if not reply.ok:
            raise InvalidInput(f"Google Ads refused the query: {self._error_message(reply)}")
        return [row for batch in reply.body for row in batch.get("results", [])]

    def _failures(self, reply: Reply) -> list[dict[str, Any]]:
        """The GoogleAdsFailure errors of a failed call."""
        details = reply.error.get("details", [])
        return [failure for detail in details for failure in detail.get("errors", [])]

    def _error_message(self, reply: Reply) -> str:
        failures = self._failures(reply)
        if failures:
            return "; ".join(_describe(failure) for failure in failures)
        return super()._error_message(reply)

    def _retry_hint_s(self, reply: Reply) -> float | None:
        for failure in self._failures(reply):
            delay = failure.get("details", {}).get("quotaErrorDetails", {}).get("retryDelay")
            if delay:  # a protobuf Duration in JSON: "30s"
                return float(delay.removesuffix("s"))
        return None


def _customer(account_id: str) -> str:
    """Customer ids are shown as 123-456-7890 and sent as 1234567890."""
    return require_digits(account_id.replace("-", ""), "Google Ads customer id")


def _update(resource_name: str, mask: str, **micros: int) -> dict[str, Any]:
    """An update operation setting one money field; int64 travels as a JSON string, and the
    mask names the field in snake_case as Google wants."""
    fields = {name: str(value) for name, value in micros.items()}
    return {"update": {"resourceName": resource_name, **fields}, "updateMask": mask}


def _operation_index(failure: dict[str, Any]) -> int | None:
    for element in failure.get("location", {}).get("fieldPathElements", []):
        if element.get("fieldName") == "operations":
            return int(element.get("index", 0))
    return None


def _describe(failure: dict[str, Any]) -> str:
    """ "biddingError.BID_TOO_MANY_FRACTIONAL_DIGITS: <message>"."""
    codes = ",".join(f"{kind}.{value}" for kind, value in failure.get("errorCode", {}).items())
    message = failure.get("message", "")
    return f"{codes}: {message}" if codes else message
