"""TikTok API for Business (Marketing API) v1.3.

Bids: `POST /open_api/v1.3/adgroup/update/` with `advertiser_id`, `adgroup_id` and
`bid_price`, one call per ad group (v1.3 has batch endpoints for budgets and statuses, not for
bids); the ad group must already use a custom bid (`bid_type: BID_TYPE_CUSTOM`), which is left
as it is. Budgets: `POST /open_api/v1.3/campaign/update/` with `budget`. Pausing an ad group:
`POST /open_api/v1.3/adgroup/status/update/` with `adgroup_ids` and `operation_status`
DISABLE (ENABLE to serve again). Reports:
`GET /open_api/v1.3/report/integrated/get/` (BASIC report, AUCTION_ADGROUP level, dimensions
adgroup_id and stat_time_day), paged with page/page_size, at most 30 days a request when
stat_time_day is a dimension.

Every answer is HTTP 200 with an envelope `{"code", "message", "request_id", "data"}`:
code 0 is success, 40100 is the rate limit, 401xx token problems, 5xxxx TikTok's own failures;
any other code is a rejection of that one change.

Money: `bid_price` and `budget` are JSON numbers in currency units (written from Decimal, digit
for digit); report metrics are decimal strings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
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
    HttpConnector,
    PlatformSettings,
    date_windows,
    exact_amount,
    report_count,
    report_micros,
    require_digits,
)
from kiki.http import Reply, dumps

API = "/open_api/v1.3"
RATE_LIMITED = 40100
AUTH_CODES = frozenset({40101, 40102, 40104, 40105})  # bad app, expired, empty, invalid token
REPORT_MAX_DAYS = 30


class TikTokSettings(PlatformSettings):
    """A long-lived advertiser access token from the TikTok for Business OAuth flow."""

    base_url: str = "https://business-api.tiktok.com"
    access_token: SecretStr
    page_size: int = Field(1000, ge=1, le=1000, description="report rows per page")


class TikTokConnector(HttpConnector[TikTokSettings]):
    platform: ClassVar[str] = "tiktok"
    settings_type = TikTokSettings
    credential_hint = "TikTokSettings.access_token"

    async def push_bids(self, changes: Sequence[BidChange]) -> list[ChangeResult]:
        bodies = [
            {
                "advertiser_id": require_digits(c.account_id, "advertiser id"),
                "adgroup_id": require_digits(c.ad_group_ref, "ad group id"),
                "bid_price": exact_amount(self.platform, c.bid_micros, c.currency),
            }
            for c in changes
        ]
        return [await self._update("adgroup", body, body["adgroup_id"]) for body in bodies]

    async def push_budget(self, change: BudgetChange) -> ChangeResult:
        body = {
            "advertiser_id": require_digits(change.account_id, "advertiser id"),
            "campaign_id": require_digits(change.campaign_ref, "campaign id"),
            "budget": exact_amount(self.platform, change.daily_budget_micros, change.currency),
        }
        return await self._update("campaign", body, change.campaign_ref)

    async def push_status(self, changes: Sequence[StatusChange]) -> list[ChangeResult]:
        """`adgroup/status/update/`: DISABLE pauses an ad group, ENABLE lets it serve."""
        bodies = [
            {
                "advertiser_id": require_digits(c.account_id, "advertiser id"),
                "adgroup_ids": [require_digits(c.ad_group_ref, "ad group id")],
                "operation_status": "DISABLE" if c.paused else "ENABLE",
            }
            for c in changes
        ]
        return [
            await self._update("adgroup/status", body, c.ad_group_ref)
            for body, c in zip(bodies, changes, strict=True)
        ]

    async def spend_report(self, account_id: str, start: date, end: date) -> list[SpendRow]:
        advertiser = require_digits(account_id, "advertiser id")
        rows: list[SpendRow] = []
        for since, until in date_windows(start, end, REPORT_MAX_DAYS):
            page, pages = 1, 1
            while page <= pages:
                data = await self._report_page(advertiser, since, until, page)
                rows.extend(_spend_row(item) for item in data.get("list", []))
                pages = data.get("page_info", {}).get("total_page", 1)
                page += 1
        return rows

    async def _report_page(self, advertiser: str, since: date, until: date, page: int) -> Any:
        params = {
            "advertiser_id": advertiser,
            "report_type": "BASIC",
            "data_level": "AUCTION_ADGROUP",
            "dimensions": json.dumps(["adgroup_id", "stat_time_day"]),
            "metrics": json.dumps(["spend", "impressions", "clicks", "conversion"]),
            "start_date": since.isoformat(),
            "end_date": until.isoformat(),
            "page": str(page),
            "page_size": str(self._settings.page_size),
        }
        reply = await self._call(
            "GET", f"{self._base}{API}/report/integrated/get/", params=params, headers=self._auth()
        )
        if reply.status != 200 or reply.body.get("code") != 0:
            raise InvalidInput(f"TikTok refused the report: {self._error_message(reply)}")
        return reply.body["data"]

    def _auth(self) -> dict[str, str]:
        return {"Access-Token": self._settings.access_token.get_secret_value()}

    async def _update(self, entity: str, body: dict[str, Any], ref: str) -> ChangeResult:
        reply = await self._call(
            "POST",
            f"{self._base}{API}/{entity}/update/",
            headers={**self._auth(), "Content-Type": "application/json"},
            content=dumps(body),
        )
        if reply.status == 200 and reply.body.get("code") == 0:
            return ChangeResult(ok=True, ref=ref)
        return ChangeResult(ok=False, ref=ref, error=self._error_message(reply))

    def _code(self, reply: Reply) -> int | None:
        return reply.body.get("code") if isinstance(reply.body, dict) else None

    def _error_message(self, reply: Reply) -> str:
        if self._code(reply) is None:
            return super()._error_message(reply)
        body = reply.body
        return f"{body.get('message')} (code {body['code']}, request_id {body.get('request_id')})"

    def _is_throttled(self, reply: Reply) -> bool:
        return super()._is_throttled(reply) or self._code(reply) == RATE_LIMITED

    def _is_auth_failure(self, reply: Reply) -> bool:
        return super()._is_auth_failure(reply) or self._code(reply) in AUTH_CODES

    def _is_transient(self, reply: Reply) -> bool:
        return (self._code(reply) or 0) >= 50000


def _spend_row(item: dict[str, Any]) -> SpendRow:
    dimensions, metrics = item["dimensions"], item["metrics"]
    # TikTok's value metrics depend on the optimisation event; only counts are asked for here.
    return SpendRow(
        ad_group_ref=str(dimensions["adgroup_id"]),
        day=datetime.strptime(dimensions["stat_time_day"], "%Y-%m-%d %H:%M:%S").date(),
        impressions=int(metrics.get("impressions", 0)),
        clicks=int(metrics.get("clicks", 0)),
        conversions=report_count(metrics.get("conversion", 0)),
        spend_micros=report_micros(metrics.get("spend", 0)),
    )
