"""FAKE of Meta's Graph / Marketing API (not Meta): ad set (bid, status) and campaign updates,
the Graph batch API and ad-set insights, for the connector tests.

Checked as the Graph API does: the `access_token` parameter (code 190 otherwise), the version
in the path (code 2635 for an unserved one), integer minor-unit amounts for `bid_amount` and
`daily_budget` (code 100 otherwise), at most 50 requests a batch, and unknown objects (code 100,
subcode 33). Errors are `{"error": {"message", "type", "code", "fbtrace_id"}}`. Insights page
with `paging.cursors` and an absolute `paging.next` URL.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request, Response

from tests.fakes.ad_platforms import (
    BudgetedDelivery,
    Failure,
    FakeApi,
    reply,
    request_id,
    running_row,
)

FIELDS = {"bid_amount": "ad_sets", "daily_budget": "campaigns", "status": "ad_sets"}
STATUSES = {"ACTIVE", "PAUSED", "ARCHIVED"}
INSIGHT_FIELDS = {"adset_id", "spend", "impressions", "clicks", "actions", "action_values"}


class FakeMeta(FakeApi):
    """FAKE Graph API. Seed `ad_sets` / `campaigns` (id -> amount in minor units) and
    `seed_insight`; read the same dicts back."""

    def __init__(
        self, *, access_token: str = "EAAB-fake", version: str = "v21.0", batch_limit: int = 50
    ) -> None:
        self.access_token = access_token
        self.version = version
        self.batch_limit = batch_limit
        self.ad_sets: dict[str, int] = {}
        self.campaigns: dict[str, int] = {}
        self.insights: list[dict[str, Any]] = []
        self.statuses: dict[str, str] = {}  # ad set id -> ACTIVE / PAUSED, once one was set
        # Meta delivers up to 75 % over a daily budget on a day; `serve` is held to that.
        self.auction = BudgetedDelivery(Fraction(7, 4))
        super().__init__()

    def serve(self, account: str, adset_id: str, campaign_id: str, day: date, want: int) -> int:
        """The auction would spend `want` micros more on this ad set on `day`: Meta delivers
        what its campaign's daily budget allows (up to 1.75x; budgets here are in cents, the
        minor unit of the offset-100 currencies) and reports it in the ad set's insights row
        for the day. Returns the micros delivered."""
        budget = self.campaigns.get(campaign_id)
        micros = None if budget is None else budget * 10_000
        if self.statuses.get(adset_id) == "PAUSED":
            want = 0
        delivered = self.auction.allow(campaign_id, day, micros, want)
        row = running_row(self.insights, account=account, adset_id=adset_id, day=day)
        row["spend"] = str(Decimal(row.get("spend", "0")) + Decimal(delivered) / 1_000_000)
        return delivered

    def seed_insight(self, account: str, adset_id: str, day: date, **fields: Any) -> None:
        """fields as Meta reports them: spend "12.34", impressions "100", actions [...]."""
        self.insights.append({"account": account, "adset_id": adset_id, "day": day, **fields})

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/{version}/")
        async def batch(version: str, request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            denied = self._check(version, form.get("access_token"))
            if denied:
                return denied
            items = json.loads(form.get("batch", "null") or "null")
            if not isinstance(items, list) or not items:
                return _error(400, 100, "(#100) The parameter batch is required")
            if len(items) > self.batch_limit:
                return _error(400, 100, f"(#100) Maximum batch size is {self.batch_limit}")
            answers = [self._batch_item(item) for item in items]
            return reply(200, answers)

        @app.post("/{version}/{object_id}")
        async def update(version: str, object_id: str, request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode()))
            denied = self._check(version, form.pop("access_token", None))
            if denied:
                return denied
            status, body = self._update(object_id, form)
            return reply(status, body)

        @app.get("/{version}/{node}/insights")
        async def insights(version: str, node: str, request: Request) -> Response:
            params = dict(request.query_params)
            denied = self._check(version, params.get("access_token"))
            if denied:
                return denied
            return self._insights(node, params, request)

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":
            usage = {
                "1234": [
                    {
                        "type": "ads_management",
                        "call_count": 100,
                        "total_cputime": 20,
                        "total_time": 30,
                        "estimated_time_to_regain_access": math.ceil(retry_after_s / 60),
                    }
                ]
            }
            return _error(
                400,
                17,
                "(#17) User request limit reached",
                headers={"X-Business-Use-Case-Usage": json.dumps(usage)},
            )
        return _error(500, 2, "An unexpected error has occurred. Please retry.", transient=True)

    def _check(self, version: str, token: str | None) -> Response | None:
        if version != self.version:
            return _error(400, 2635, f"(#2635) You are calling a deprecated version: {version}")
        if token != self.access_token:
            return _error(400, 190, "Invalid OAuth access token - Cannot parse access token")
        return None

    def _update(self, object_id: str, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Set integer amounts on an ad set or campaign; (HTTP status, body)."""
        for name, value in fields.items():
            store = getattr(self, FIELDS[name]) if name in FIELDS else None
            if store is None:
                return 400, _body(100, f"(#100) Param {name} is not valid for this object")
            if object_id not in store:
                return 400, _body(
                    100,
                    f"Unsupported post request. Object with ID '{object_id}' does not exist, "
                    "cannot be loaded due to missing permissions, or does not support this "
                    "operation.",
                    subcode=33,
                )
            if name == "status" and value not in STATUSES:
                return 400, _body(100, f"(#100) Param status must be one of {sorted(STATUSES)}")
            if name != "status" and not value.isdigit():
                return 400, _body(100, f"(#100) Param {name} must be an integer")
        for name, value in fields.items():
            if name == "status":
                self.statuses[object_id] = value
            else:
                getattr(self, FIELDS[name])[object_id] = int(value)
        return 200, {"success": True}

    def _batch_item(self, item: dict[str, Any]) -> dict[str, Any]:
        version, _, object_id = str(item.get("relative_url", "")).partition("/")
        if item.get("method") != "POST" or version != self.version:
            status, body = 400, _body(100, "(#100) Unsupported batch request")
        else:
            status, body = self._update(object_id, dict(parse_qsl(item.get("body", ""))))
        return {"code": status, "body": json.dumps(body)}  # include_headers=false: no headers

    def _insights(self, node: str, params: dict[str, str], request: Request) -> Response:
        fields = set(params.get("fields", "").split(","))
        if params.get("level") != "adset" or params.get("time_increment") != "1":
            return _error(400, 100, "(#100) level must be adset and time_increment 1 here")
        if not node.startswith("act_") or not fields <= INSIGHT_FIELDS:
            return _error(400, 100, "(#100) Unsupported insights request")
        time_range = json.loads(params.get("time_range", "{}"))
        since, until = (
            date.fromisoformat(time_range["since"]),
            date.fromisoformat(time_range["until"]),
        )
        rows = [
            {
                **{k: v for k, v in row.items() if k in fields},
                "date_start": row["day"].isoformat(),
                "date_stop": row["day"].isoformat(),
            }
            for row in self.insights
            if f"act_{row['account']}" == node and since <= row["day"] <= until
        ]
        offset = int(base64.b64decode(params["after"])) if "after" in params else 0
        limit = int(params.get("limit", "25"))
        page = rows[offset : offset + limit]
        body: dict[str, Any] = {"data": page}
        if page:
            after = base64.b64encode(str(offset + len(page)).encode()).decode()
            body["paging"] = {"cursors": {"before": params.get("after", ""), "after": after}}
            if offset + len(page) < len(rows):
                query = urlencode({**params, "after": after})
                body["paging"]["next"] = (
                    f"{request.url.scheme}://{request.url.netloc}{request.url.path}?{query}"
                )
        return reply(200, body)


def _body(code: int, message: str, *, subcode: int | None = None, transient: bool = False) -> dict:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": request_id()[:11],
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    if transient:
        error["is_transient"] = True
    return {"error": error}


def _error(
    status: int,
    code: int,
    message: str,
    *,
    transient: bool = False,
    headers: dict[str, str] | None = None,
) -> Response:
    return reply(status, _body(code, message, transient=transient), headers)
