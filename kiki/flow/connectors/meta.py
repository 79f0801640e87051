"""Meta Marketing API (Graph API).

Bids: an ad set's `bid_amount` via `POST /vX.Y/{adset_id}`; several at once through the Graph
batch API (`POST /vX.Y/` with `batch=[{method, relative_url, body}]`, at most 50 a call).
Budgets: the campaign's `daily_budget` the same way. Reports: `GET /vX.Y/act_{id}/insights`
at ad-set level, one row a day, following `paging.next` cursors. The access token travels as
the `access_token` parameter, as the Graph API documents.

Money: bids and budgets are integers in the account currency's minor unit times Meta's offset
(100 for most currencies, 1 for those without cents such as JPY). A micro amount finer than
that is rounded DOWN, so a bid or budget sent never exceeds the one decided. Insights report
`spend` as a decimal string in currency units.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlencode

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
    HttpConnector,
    PlatformSettings,
    check_range,
    chunks,
    report_count,
    report_micros,
    require_digits,
)
from kiki.http import Reply, loads
from kiki.money import MICROS_PER_UNIT, normalize_currency, to_decimal

BATCH_LIMIT = 50
Fields = dict[str, int | str]  # an object's fields to set: amounts in minor units, a status
# Currencies whose Meta offset is 1, from Meta's "Currency codes" table; all others are 100.
OFFSET_ONE = frozenset(
    {"CLP", "COP", "CRC", "HUF", "IDR", "ISK", "JPY", "KRW", "PYG", "TWD", "VND"}
)
# Rate limiting: 4 app, 17 user, 32 page, 613 calls per time window (Marketing API docs);
# 80000-80014 are the business-use-case limits (e.g. 80004 ads management).
THROTTLE_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
# 190 invalid or expired access token, 10 and 200-299 missing permissions.
AUTH_CODES = frozenset({10, 190, *range(200, 300)})
TRANSIENT_CODES = frozenset({1, 2})  # "unknown error", "service temporarily unavailable"


class MetaSettings(PlatformSettings):
    """One system-user access token with ads_management (and ads_read for insights)."""

    base_url: str = "https://graph.facebook.com"
    api_version: str = Field("v21.0", pattern=r"^v\d+\.\d+$")
    access_token: SecretStr
    conversion_action_type: str = Field(
        "offsite_conversion.fb_pixel_purchase",
        description="the action_type counted as a conversion in insights",
    )
    page_size: int = Field(500, ge=1, le=5000, description="insights rows per page")


def meta_minor_units(micros: int, currency: str) -> int:
    """Micros to Meta's integer amount, rounded down (never above the amount decided)."""
    offset = 1 if normalize_currency(currency) in OFFSET_ONE else 100
    return micros * offset // MICROS_PER_UNIT


class MetaConnector(HttpConnector[MetaSettings]):
    platform: ClassVar[str] = "meta"
    settings_type = MetaSettings
    credential_hint = "MetaSettings.access_token (it needs the ads_management permission)"

    async def push_bids(self, changes: Sequence[BidChange]) -> list[ChangeResult]:
        updates = [
            (
                require_digits(c.ad_group_ref, "ad set id"),
                {"bid_amount": meta_minor_units(c.bid_micros, c.currency)},
            )
            for c in changes
        ]
        return await self._update_all(updates)

    async def push_status(self, changes: Sequence[StatusChange]) -> list[ChangeResult]:
        return await self._update_all(
            [
                (
                    require_digits(c.ad_group_ref, "ad set id"),
                    {"status": "PAUSED" if c.paused else "ACTIVE"},
                )
                for c in changes
            ]
        )

    async def _update_all(self, updates: Sequence[tuple[str, Fields]]) -> list[ChangeResult]:
        """One call for a single update, Graph batches of BATCH_LIMIT for more."""
        results: list[ChangeResult] = []
        for batch in chunks(updates, BATCH_LIMIT):
            if len(batch) == 1:
                results.append(await self._update(*batch[0]))
            else:
                results.extend(await self._update_batch(batch))
        return results

    async def push_budget(self, change: BudgetChange) -> ChangeResult:
        campaign = require_digits(change.campaign_ref, "campaign id")
        budget = meta_minor_units(change.daily_budget_micros, change.currency)
        return await self._update(campaign, {"daily_budget": budget})

    async def spend_report(self, account_id: str, start: date, end: date) -> list[SpendRow]:
        check_range(start, end)
        account = require_digits(account_id.removeprefix("act_"), "ad account id")
        params = {
            "level": "adset",
            "time_increment": "1",
            "time_range": json.dumps({"since": start.isoformat(), "until": end.isoformat()}),
            "fields": "adset_id,spend,impressions,clicks,actions,action_values",
            "limit": str(self._settings.page_size),
            "access_token": self._token(),
        }
        reply = await self._call(
            "GET", f"{self._version_url()}/act_{account}/insights", params=params
        )
        rows: list[SpendRow] = []
        while True:
            if not reply.ok:
                raise InvalidInput(f"Meta refused the insights query: {self._error_message(reply)}")
            rows.extend(self._spend_row(row) for row in reply.body.get("data", []))
            next_page = reply.body.get("paging", {}).get("next")
            if not next_page:
                return rows
            if not next_page.startswith(self._base + "/"):
                # The cursor URL carries the access token: never send it to another host.
                raise Unavailable(f"Meta paged to an unexpected host: {next_page[:80]}")
            reply = await self._call("GET", next_page)

    def _spend_row(self, row: dict[str, Any]) -> SpendRow:
        wanted = self._settings.conversion_action_type
        return SpendRow(
            ad_group_ref=row["adset_id"],
            day=date.fromisoformat(row["date_start"]),
            impressions=int(row.get("impressions", 0)),
            clicks=int(row.get("clicks", 0)),
            conversions=report_count(_total(row.get("actions", []), wanted)),
            spend_micros=report_micros(row.get("spend", 0)),
            conversion_value_micros=report_micros(_total(row.get("action_values", []), wanted)),
        )

    def _token(self) -> str:
        return self._settings.access_token.get_secret_value()

    def _version_url(self) -> str:
        return f"{self._base}/{self._settings.api_version}"

    async def _update(self, object_id: str, fields: Fields) -> ChangeResult:
        data = {**{k: str(v) for k, v in fields.items()}, "access_token": self._token()}
        reply = await self._call("POST", f"{self._version_url()}/{object_id}", data=data)
        return _result(object_id, reply.status, reply.body, self._error_message(reply))

    async def _update_batch(self, updates: Sequence[tuple[str, Fields]]) -> list[ChangeResult]:
        batch = [
            {
                "method": "POST",
                "relative_url": f"{self._settings.api_version}/{object_id}",
                "body": urlencode(fields),
            }
            for object_id, fields in updates
        ]
        data = {
            "access_token": self._token(),
            "include_headers": "false",
            "batch": json.dumps(batch),
        }
        reply = await self._call("POST", f"{self._version_url()}/", data=data)
        if not reply.ok:
            message = self._error_message(reply)
            return [
                ChangeResult(ok=False, ref=object_id, error=message) for object_id, _ in updates
            ]
        # Each item answers for itself: a throttled or refused item fails alone, while the
        # others in the batch were applied and must be reported so.
        results = []
        for (object_id, _), answer in zip(updates, reply.body, strict=True):
            if answer is None:  # Meta gives up on an item that took too long; it may retry
                results.append(ChangeResult(ok=False, ref=object_id, error="no answer; retry"))
                continue
            body = loads(answer.get("body") or "null")
            error = body.get("error", {}) if isinstance(body, dict) else {}
            results.append(_result(object_id, answer["code"], body, _describe(error)))
        return results

    def _error_message(self, reply: Reply) -> str:
        return _describe(reply.error) if reply.error else super()._error_message(reply)

    def _code(self, reply: Reply) -> int | None:
        code = reply.error.get("code")
        return int(code) if code is not None else None

    def _is_throttled(self, reply: Reply) -> bool:
        return super()._is_throttled(reply) or self._code(reply) in THROTTLE_CODES

    def _is_auth_failure(self, reply: Reply) -> bool:
        return super()._is_auth_failure(reply) or self._code(reply) in AUTH_CODES

    def _is_transient(self, reply: Reply) -> bool:
        return bool(reply.error.get("is_transient")) or self._code(reply) in TRANSIENT_CODES

    def _retry_hint_s(self, reply: Reply) -> float | None:
        """X-Business-Use-Case-Usage: {business_id: [{..., estimated_time_to_regain_access}]},
        the wait in minutes."""
        header = reply.headers.get("X-Business-Use-Case-Usage")
        if not header:
            return None
        minutes = [
            usage.get("estimated_time_to_regain_access", 0)
            for usages in json.loads(header).values()
            for usage in usages
        ]
        return max(minutes, default=0) * 60.0 or None


def _result(object_id: str, status: int, body: Any, message: str) -> ChangeResult:
    if 200 <= status < 300 and isinstance(body, dict) and body.get("success"):
        return ChangeResult(ok=True, ref=object_id)
    return ChangeResult(ok=False, ref=object_id, error=message)


def _total(actions: list[dict[str, Any]], action_type: str) -> Decimal:
    """Sum of one action type's values (decimal strings) in an insights row."""
    return sum(
        (to_decimal(a["value"]) for a in actions if a["action_type"] == action_type), Decimal(0)
    )


def _describe(error: dict[str, Any]) -> str:
    """Meta's error object as one line, with the fbtrace_id its support asks for."""
    message = error.get("message", "unknown error")
    return f"{message} (code {error.get('code')}, fbtrace_id {error.get('fbtrace_id')})"
