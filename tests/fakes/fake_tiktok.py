"""FAKE of the TikTok API for Business v1.3 (not TikTok): ad group (bid, status) and campaign
updates and the synchronous integrated report, for the connector tests.

As TikTok does, it answers HTTP 200 with an envelope `{"code", "message", "request_id",
"data"}` whatever happens; it checks the `Access-Token` header (40104 empty, 40105 invalid),
that `bid_price` / `budget` are JSON numbers with at most two decimals (40002 otherwise), that
a bid only goes to an ad group with a custom bid, and pages reports with page/page_size and
`page_info`, refusing more than 30 days when stat_time_day is a dimension.
"""

from __future__ import annotations

import json
import math
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Any

from fastapi import FastAPI, Request, Response

from tests.fakes.ad_platforms import (
    BudgetedDelivery,
    Failure,
    FakeApi,
    decimals,
    is_number,
    parse_json,
    reply,
    request_id,
    running_row,
)

PARAM_ERROR = 40002
OPERATIONS = {"ENABLE", "DISABLE"}  # an ad group's operation_status
METRICS = {"spend", "impressions", "clicks", "conversion"}
# update endpoint -> (store attribute, id field, amount field)
ENTITIES = {
    "adgroup": ("ad_groups", "adgroup_id", "bid_price"),
    "campaign": ("campaigns", "campaign_id", "budget"),
}


class FakeTikTok(FakeApi):
    """FAKE TikTok Marketing API. Seed with `seed_ad_group`, `seed_campaign`, `seed_delivery`;
    read `ad_groups[id]["bid_price"]` and `campaigns[id]["budget"]` (Decimal)."""

    def __init__(self, *, access_token: str = "tt-fake", max_report_days: int = 30) -> None:
        self.access_token = access_token
        self.max_report_days = max_report_days
        self.ad_groups: dict[str, dict[str, Any]] = {}
        self.campaigns: dict[str, dict[str, Any]] = {}
        self.delivery: list[dict[str, Any]] = []
        # TikTok's help pages: spend does not exceed a daily budget; `serve` is held to it.
        self.auction = BudgetedDelivery(Fraction(1))
        super().__init__()

    def seed_ad_group(
        self, advertiser: str, ad_group_id: str, bid_price: str, bid_type: str = "BID_TYPE_CUSTOM"
    ) -> None:
        self.ad_groups[ad_group_id] = {
            "advertiser_id": advertiser,
            "bid_price": Decimal(bid_price),
            "bid_type": bid_type,
        }

    def seed_campaign(self, advertiser: str, campaign_id: str, budget: str) -> None:
        self.campaigns[campaign_id] = {"advertiser_id": advertiser, "budget": Decimal(budget)}

    def serve(
        self, advertiser: str, adgroup_id: str, campaign_id: str, day: date, want: int
    ) -> int:
        """The auction would spend `want` micros more on this ad group on `day`: TikTok
        delivers what its campaign's budget allows (budgets in currency units) and reports it
        as the ad group's running total for the day. Returns the micros delivered."""
        budget = self.campaigns.get(campaign_id, {}).get("budget")
        micros = None if budget is None else int(budget * 1_000_000)
        if self.ad_groups[adgroup_id].get("status") == "DISABLE":
            want = 0
        delivered = self.auction.allow(campaign_id, day, micros, want)
        row = running_row(self.delivery, advertiser=advertiser, adgroup_id=adgroup_id, day=day)
        row["spend"] = str(Decimal(row.get("spend", "0")) + Decimal(delivered) / 1_000_000)
        return delivered

    def seed_delivery(self, advertiser: str, ad_group_id: str, day: date, **metrics: str) -> None:
        """metrics as TikTok reports them, decimal strings: spend="12.34", impressions="100"."""
        self.delivery.append(
            {"advertiser": advertiser, "adgroup_id": ad_group_id, "day": day, **metrics}
        )

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/open_api/v1.3/{entity}/update/")
        async def update(entity: str, request: Request) -> Response:
            if request.headers.get("access-token") != self.access_token:
                return self._unauthenticated(request)
            body = parse_json(await request.body())
            if entity in ENTITIES and isinstance(body, dict):
                return self._update(entity, body)
            return _envelope(PARAM_ERROR, "Invalid request body.")

        @app.post("/open_api/v1.3/adgroup/status/update/")
        async def status(request: Request) -> Response:
            if request.headers.get("access-token") != self.access_token:
                return self._unauthenticated(request)
            body = parse_json(await request.body())
            if not isinstance(body, dict) or body.get("operation_status") not in OPERATIONS:
                return _envelope(PARAM_ERROR, "operation_status: must be ENABLE or DISABLE.")
            ids = body.get("adgroup_ids")
            if not isinstance(ids, list) or not ids:
                return _envelope(PARAM_ERROR, "adgroup_ids: Missing data for required field.")
            for ad_group_id in ids:
                record = self.ad_groups.get(str(ad_group_id))
                if record is None or record["advertiser_id"] != body.get("advertiser_id"):
                    return _envelope(PARAM_ERROR, f"adgroup_id {ad_group_id} does not exist.")
            for ad_group_id in ids:
                self.ad_groups[str(ad_group_id)]["status"] = body["operation_status"]
            return _envelope(0, "OK", {"adgroup_ids": ids})

        @app.get("/open_api/v1.3/report/integrated/get/")
        async def report(request: Request) -> Response:
            if request.headers.get("access-token") != self.access_token:
                return self._unauthenticated(request)
            return self._report(dict(request.query_params))

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":  # TikTok names no wait
            return _envelope(40100, "Too many requests. Please retry in some time.")
        return _envelope(50000, "System error, please try again later.")

    def _unauthenticated(self, request: Request) -> Response:
        if not request.headers.get("access-token"):
            return _envelope(40104, "Access token is empty.")
        return _envelope(40105, "Access token is incorrect or has been revoked.")

    def _update(self, entity: str, body: dict[str, Any]) -> Response:
        store, id_field, amount_field = ENTITIES[entity]
        record = getattr(self, store).get(str(body.get(id_field)))
        if record is None or record["advertiser_id"] != body.get("advertiser_id"):
            return _envelope(PARAM_ERROR, f"{id_field} {body.get(id_field)} does not exist.")
        problem = _amount_problem(amount_field, body.get(amount_field))
        if problem:
            return _envelope(PARAM_ERROR, problem)
        if record.get("bid_type", "BID_TYPE_CUSTOM") != "BID_TYPE_CUSTOM":
            return _envelope(PARAM_ERROR, "bid_price is only valid with bid_type BID_TYPE_CUSTOM.")
        record[amount_field] = Decimal(body[amount_field])
        return _envelope(0, "OK", {id_field: body[id_field]})

    def _report(self, params: dict[str, str]) -> Response:
        try:
            dimensions = json.loads(params["dimensions"])
            metrics = json.loads(params["metrics"])
            start = date.fromisoformat(params["start_date"])
            end = date.fromisoformat(params["end_date"])
            page, page_size = int(params.get("page", "1")), int(params.get("page_size", "10"))
        except (KeyError, ValueError) as exc:
            return _envelope(PARAM_ERROR, f"Invalid parameter: {exc}")
        if (params.get("report_type"), params.get("data_level")) != ("BASIC", "AUCTION_ADGROUP"):
            return _envelope(PARAM_ERROR, "Only BASIC reports at AUCTION_ADGROUP level here.")
        if set(dimensions) != {"adgroup_id", "stat_time_day"} or not set(metrics) <= METRICS:
            return _envelope(PARAM_ERROR, "Unsupported dimensions or metrics.")
        if (end - start).days + 1 > self.max_report_days or not 1 <= page_size <= 1000:
            return _envelope(PARAM_ERROR, "The time span cannot exceed 30 days by day.")
        rows = [
            {
                "dimensions": {
                    "adgroup_id": row["adgroup_id"],
                    "stat_time_day": f"{row['day'].isoformat()} 00:00:00",
                },
                "metrics": {name: row.get(name, "0") for name in metrics},
            }
            for row in self.delivery
            if row["advertiser"] == params.get("advertiser_id") and start <= row["day"] <= end
        ]
        page_info = {
            "page": page,
            "page_size": page_size,
            "total_number": len(rows),
            "total_page": max(1, math.ceil(len(rows) / page_size)),
        }
        window = rows[(page - 1) * page_size : page * page_size]
        return _envelope(0, "OK", {"list": window, "page_info": page_info})


def _amount_problem(name: str, value: Any) -> str | None:
    if not is_number(value):
        return f"{name}: Not a valid number."
    if value < 0 or decimals(value) > 2:
        return f"{name}: must be a positive number with at most 2 decimal places."
    return None


def _envelope(code: int, message: str, data: dict[str, Any] | None = None) -> Response:
    return reply(
        200, {"code": code, "message": message, "request_id": request_id(), "data": data or {}}
    )
