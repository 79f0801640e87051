"""Amazon Ads API: Sponsored Products v3 and the v3 reporting API.

Every call names the advertiser by its profile id (`Amazon-Advertising-API-Scope`; the
`account_id` of a change) next to the Login with Amazon client id and bearer token, so changes
are sent one profile at a time. Bids: `PUT /sp/adGroups` with `{"adGroups": [{"adGroupId",
"defaultBid"}]}` in the versioned media type `application/vnd.spAdGroup.v3+json`; the answer
(207) lists `success` and `error` items by their index in the request. Budgets:
`PUT /sp/campaigns` with `budget: {budget, budgetType: DAILY}`. Reports are asynchronous:
`POST /reporting/reports` (spCampaigns grouped by adGroup, daily, GZIP_JSON, at most 31 days),
poll `GET /reporting/reports/{id}` until COMPLETED, then download the gzip JSON at `url`, a
presigned S3 address that must be fetched without Amazon's auth headers.

Money: `defaultBid` and `budget` are JSON numbers in the marketplace currency (written from
Decimal, digit for digit); the report's `cost` and `sales7d` are numbers in currency units.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, ClassVar

from pydantic import Field, SecretStr

from kiki.errors import InvalidInput, Unavailable
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
    chunks,
    date_windows,
    exact_amount,
    report_count,
    report_micros,
    require_digits,
)
from kiki.http import OAuthRefresh, Reply, dumps, loads

AD_GROUP_TYPE = "application/vnd.spAdGroup.v3+json"
CAMPAIGN_TYPE = "application/vnd.spCampaign.v3+json"
REPORT_TYPE = "application/vnd.createasyncreportrequest.v3+json"
# Entities per Sponsored Products v3 update call (Amazon's documented maximum is assumed 1000).
UPDATE_LIMIT = 1000
REPORT_MAX_DAYS = 31
GZIP_MAGIC = b"\x1f\x8b"
REPORT_COLUMNS = ["adGroupId", "date", "impressions", "clicks", "cost", "purchases7d", "sales7d"]
# A report asked for again while the first is pending is answered 425 with its id.
_DUPLICATE = re.compile(r"duplicate of\s*:\s*(\S+)")


class AmazonAdsOAuth(OAuthRefresh):
    """Login with Amazon (North America)'s token endpoint."""

    token_url: str = "https://api.amazon.com/auth/o2/token"


class AmazonAdsSettings(PlatformSettings):
    """A Login with Amazon client id and access token, and how patiently to wait for reports."""

    base_url: str = "https://advertising-api.amazon.com"
    client_id: str
    access_token: SecretStr
    oauth: AmazonAdsOAuth | None = Field(None, description="renews access_token when set")
    report_poll_interval_s: float = Field(30.0, ge=0)
    report_max_polls: int = Field(120, ge=1)


class AmazonAdsConnector(HttpConnector[AmazonAdsSettings]):
    platform: ClassVar[str] = "amazon"
    settings_type = AmazonAdsSettings
    credential_hint = "AmazonAdsSettings.client_id or access_token, or the profile id (account_id)"

    async def push_bids(self, changes: Sequence[BidChange]) -> list[ChangeResult]:
        async def push(profile: Sequence[BidChange]) -> list[ChangeResult]:
            return await self._put_ad_groups(profile, lambda c: {
                "defaultBid": exact_amount(self.platform, c.bid_micros, c.currency)})  # fmt: skip

        return await self._push_by_account(changes, lambda c: c.account_id, push)

    async def push_status(self, changes: Sequence[StatusChange]) -> list[ChangeResult]:
        """SP ad groups' `state`: PAUSED, or ENABLED again."""

        async def push(profile: Sequence[StatusChange]) -> list[ChangeResult]:
            return await self._put_ad_groups(profile, lambda c: {
                "state": "PAUSED" if c.paused else "ENABLED"})  # fmt: skip

        return await self._push_by_account(changes, lambda c: c.account_id, push)

    async def _put_ad_groups(
        self, changes: Sequence[C], fields: Callable[[C], dict[str, Any]]
    ) -> list[ChangeResult]:
        """Update the ad groups of one profile, UPDATE_LIMIT a call."""
        results: list[ChangeResult] = []
        for batch in chunks(changes, UPDATE_LIMIT):
            items = [
                {"adGroupId": require_digits(c.ad_group_ref, "ad group id"), **fields(c)}
                for c in batch
            ]
            refs = [c.ad_group_ref for c in batch]
            results += await self._put(batch[0].account_id, "adGroups", AD_GROUP_TYPE, items, refs)
        return results

    async def push_budget(self, change: BudgetChange) -> ChangeResult:
        budget = exact_amount(self.platform, change.daily_budget_micros, change.currency)
        item = {
            "campaignId": require_digits(change.campaign_ref, "campaign id"),
            "budget": {"budget": budget, "budgetType": "DAILY"},
        }
        [result] = await self._put(
            change.account_id, "campaigns", CAMPAIGN_TYPE, [item], [change.campaign_ref]
        )
        return result

    async def spend_report(self, account_id: str, start: date, end: date) -> list[SpendRow]:
        rows: list[SpendRow] = []
        for since, until in date_windows(start, end, REPORT_MAX_DAYS):
            report_id = await self._request_report(account_id, since, until)
            url = await self._wait_for_report(account_id, report_id)
            rows.extend(_spend_row(row) for row in await self._download(url))
        return rows

    def _headers(self, profile_id: str, media_type: str) -> dict[str, str]:
        return {
            "Authorization": self._bearer(),
            "Amazon-Advertising-API-ClientId": self._settings.client_id,
            "Amazon-Advertising-API-Scope": require_digits(profile_id, "profile id"),
            "Content-Type": media_type,
            "Accept": media_type,
        }

    async def _put(
        self,
        profile_id: str,
        entity: str,
        media_type: str,
        items: list[dict[str, Any]],
        refs: list[str],
    ) -> list[ChangeResult]:
        """One multi-status update; one result per item, in order."""
        reply = await self._call(
            "PUT",
            f"{self._base}/sp/{entity}",
            headers=self._headers(profile_id, media_type),
            content=dumps({entity: items}),
        )
        if not reply.ok:
            return [
                ChangeResult(ok=False, ref=ref, error=self._error_message(reply)) for ref in refs
            ]
        answer = reply.body.get(entity, {})
        errors = {
            item["index"]: _describe(item.get("errors", [])) for item in answer.get("error", [])
        }
        applied = {item["index"] for item in answer.get("success", [])}
        return [
            ChangeResult(ok=True, ref=ref)
            if index in applied
            else ChangeResult(ok=False, ref=ref, error=errors.get(index, "no answer for this item"))
            for index, ref in enumerate(refs)
        ]

    async def _request_report(self, profile_id: str, since: date, until: date) -> str:
        body = {
            "name": f"kiki spend {since} {until}",
            "startDate": since.isoformat(),
            "endDate": until.isoformat(),
            "configuration": {
                "adProduct": "SPONSORED_PRODUCTS",
                "reportTypeId": "spCampaigns",
                "groupBy": ["adGroup"],
                "columns": REPORT_COLUMNS,
                "timeUnit": "DAILY",
                "format": "GZIP_JSON",
            },
        }
        reply = await self._call(
            "POST",
            f"{self._base}/reporting/reports",
            headers=self._headers(profile_id, REPORT_TYPE),
            content=dumps(body),
        )
        if reply.ok:
            return str(reply.body["reportId"])
        duplicate = _DUPLICATE.search(str(reply.body.get("detail", ""))) if reply.body else None
        if reply.status == 425 and duplicate:
            return duplicate.group(1)
        raise InvalidInput(f"Amazon Ads refused the report request: {self._error_message(reply)}")

    async def _wait_for_report(self, profile_id: str, report_id: str) -> str:
        """Poll until the report is ready; its download URL."""
        for _ in range(self._settings.report_max_polls):
            reply = await self._call(
                "GET",
                f"{self._base}/reporting/reports/{report_id}",
                headers=self._headers(profile_id, REPORT_TYPE),
            )
            if not reply.ok:
                raise InvalidInput(f"Amazon Ads report {report_id}: {self._error_message(reply)}")
            status = reply.body.get("status")
            if status == "COMPLETED":
                return str(reply.body["url"])
            if status == "FAILED":
                raise Unavailable(
                    f"Amazon Ads report {report_id} failed: {reply.body.get('failureReason')}"
                )
            await self._clock.sleep(self._settings.report_poll_interval_s)
        raise Unavailable(
            f"Amazon Ads report {report_id} not ready after {self._settings.report_max_polls} polls"
        )

    async def _download(self, url: str) -> list[dict[str, Any]]:
        reply = await self._call("GET", url)  # presigned: no auth headers, S3 refuses a second
        if not reply.ok:
            raise Unavailable(f"Amazon Ads report download failed (HTTP {reply.status})")
        content = reply.content
        if content.startswith(GZIP_MAGIC):  # unless a proxy already undid the compression
            content = gzip.decompress(content)
        return loads(content)

    def _error_message(self, reply: Reply) -> str:
        """Amazon errors: {"code", "details"} (v2 style) or {"code", "message"} (v3)."""
        if isinstance(reply.body, dict) and "code" in reply.body:
            detail = reply.body.get("message") or reply.body.get("details") or ""
            return f"{reply.body['code']}: {detail}"
        return super()._error_message(reply)


def _describe(errors: list[dict[str, Any]]) -> str:
    """SP v3 item errors: [{"errorType", "errorValue": {"<kind>Error": {"reason", "message"}}}]."""
    messages = []
    for error in errors:
        for detail in error.get("errorValue", {}).values():
            messages.append(
                f"{detail.get('reason', error.get('errorType'))}: {detail.get('message')}"
            )
    return "; ".join(messages) or "rejected"


def _spend_row(row: dict[str, Any]) -> SpendRow:
    return SpendRow(
        ad_group_ref=str(row["adGroupId"]),
        day=date.fromisoformat(row["date"]),
        impressions=int(row.get("impressions") or 0),
        clicks=int(row.get("clicks") or 0),
        conversions=report_count(row.get("purchases7d") or 0),
        spend_micros=report_micros(row.get("cost") or 0),
        conversion_value_micros=report_micros(row.get("sales7d") or 0),
    )
