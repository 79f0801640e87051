"""FAKE of LinkedIn's versioned Marketing API (not LinkedIn): campaign partial updates and
adAnalytics, for the connector tests.

Checked as LinkedIn does: `Authorization: Bearer` (401 INVALID_ACCESS_TOKEN), a
`LinkedIn-Version` header that is served (426 NONEXISTENT_VERSION otherwise), Rest.li protocol
2.0.0, `X-RestLi-Method: PARTIAL_UPDATE` on a POST to an entity, a `{"patch": {"$set": ...}}`
body whose money is `{"amount": "<decimal string>", "currencyCode": <the account's>}`, and, in
adAnalytics, the Rest.li query syntax with percent-encoded URNs inside `List(...)`. Errors are
`{"status", "code", "message"}`; a successful update is 204 with no body.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request, Response

from tests.fakes.ad_platforms import (
    BudgetedDelivery,
    Failure,
    FakeApi,
    bearer,
    decimals,
    parse_json,
    reply,
    running_row,
)

MONEY_FIELDS = {"unitCost", "dailyBudget"}
STATUSES = {"ACTIVE", "PAUSED", "ARCHIVED", "DRAFT"}
DATE_RANGE = re.compile(
    r"\(start:\(year:(\d+),month:(\d+),day:(\d+)\),end:\(year:(\d+),month:(\d+),day:(\d+)\)\)"
)
ACCOUNTS = re.compile(
    r"List\((urn%3Ali%3AsponsoredAccount%3A\d+(?:,urn%3Ali%3AsponsoredAccount%3A\d+)*)\)"
)


class FakeLinkedIn(FakeApi):
    """FAKE LinkedIn Marketing API. Seed with `seed_campaign` and `seed_analytics`; read
    `campaigns[(account, campaign)]` ({"currency", "unitCost", "dailyBudget"})."""

    def __init__(self, *, access_token: str = "li-fake", version: str = "202505") -> None:
        self.access_token = access_token
        self.version = version
        self.campaigns: dict[tuple[str, str], dict[str, Any]] = {}
        self.analytics: list[dict[str, Any]] = []
        # LinkedIn delivers up to 50 % over a campaign's daily budget on a day; `serve` is
        # held to that.
        self.auction = BudgetedDelivery(Fraction(3, 2))
        super().__init__()

    def seed_campaign(self, account: str, campaign: str, currency: str = "USD") -> None:
        self.campaigns[(account, campaign)] = {
            "currency": currency,
            "unitCost": None,
            "dailyBudget": None,
            "status": "ACTIVE",
        }

    def serve(self, account: str, campaign: str, day: date, want: int) -> int:
        """The auction would spend `want` micros more on this campaign on `day`: LinkedIn
        delivers what its daily budget allows (none set: all) and reports it in the
        campaign's analytics row for the day. Returns the micros delivered."""
        budget = self.campaigns[(account, campaign)]["dailyBudget"]
        micros = None if budget is None else int(budget * 1_000_000)
        if self.campaigns[(account, campaign)]["status"] != "ACTIVE":
            want = 0
        delivered = self.auction.allow(campaign, day, micros, want)
        row = running_row(self.analytics, account=account, campaign=campaign, day=day)
        spent = Decimal(row.get("costInLocalCurrency", "0")) + Decimal(delivered) / 1_000_000
        row["costInLocalCurrency"] = str(spent)
        return delivered

    def seed_analytics(self, account: str, campaign: str, day: date, **metrics: Any) -> None:
        """metrics as LinkedIn reports them: costInLocalCurrency "12.3456", impressions 100."""
        self.analytics.append({"account": account, "campaign": campaign, "day": day, **metrics})

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/rest/adAccounts/{account}/adCampaigns/{campaign}")
        async def update(account: str, campaign: str, request: Request) -> Response:
            denied = self._check_headers(request)
            if denied:
                return denied
            if request.headers.get("x-restli-method") != "PARTIAL_UPDATE":
                return _error(400, "ILLEGAL_ARGUMENT", "POST to an entity needs PARTIAL_UPDATE")
            stored = self.campaigns.get((account, campaign))
            if stored is None:
                return _error(404, "NOT_FOUND", f"Campaign {campaign} not found")
            body = parse_json(await request.body())
            changes = ((body or {}).get("patch") or {}).get("$set")
            if (
                not isinstance(changes, dict)
                or not changes
                or set(changes) - MONEY_FIELDS - {"status"}
            ):
                return _error(400, "ILLEGAL_ARGUMENT", "Invalid patch")
            for field, value in changes.items():
                if field == "status":
                    problem = None if value in STATUSES else f"/status must be one of {STATUSES}"
                else:
                    problem = _money_problem(field, value, stored["currency"])
                if problem:
                    return _error(400, "FIELD_VALUE_INVALID", problem)
            for field, value in changes.items():
                stored[field] = value if field == "status" else Decimal(value["amount"])
            return Response(status_code=204)

        @app.get("/rest/adAnalytics")
        async def analytics(request: Request) -> Response:
            denied = self._check_headers(request)
            return denied or self._analytics(request.url.query)

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":  # LinkedIn sends no Retry-After
            return _error(429, "TOO_MANY_REQUESTS", "Resource level throttle limit reached.")
        return _error(503, "SERVICE_UNAVAILABLE", "Service is temporarily unavailable.")

    def _check_headers(self, request: Request) -> Response | None:
        if bearer(request) != self.access_token:
            return _error(401, "INVALID_ACCESS_TOKEN", "Invalid access token", service_code=65600)
        version = request.headers.get("linkedin-version")
        if version is None:
            return _error(400, "VERSION_MISSING", "A version must be present in the request")
        if version != self.version:
            return _error(426, "NONEXISTENT_VERSION", f"Requested version {version} is not active")
        if request.headers.get("x-restli-protocol-version") != "2.0.0":
            return _error(400, "ILLEGAL_ARGUMENT", "Rest.li protocol 2.0.0 is required")
        return None

    def _analytics(self, raw_query: str) -> Response:
        params = dict(part.split("=", 1) for part in raw_query.split("&") if "=" in part)
        dates = DATE_RANGE.fullmatch(params.get("dateRange", ""))
        accounts = ACCOUNTS.fullmatch(params.get("accounts", ""))
        expected = {"q": "analytics", "pivot": "CAMPAIGN", "timeGranularity": "DAILY"}
        if any(params.get(k) != v for k, v in expected.items()) or not dates or not accounts:
            return _error(400, "ILLEGAL_ARGUMENT", f"Invalid query parameters: {raw_query}")
        numbers = [int(n) for n in dates.groups()]
        start, end = date(*numbers[:3]), date(*numbers[3:])
        wanted = {unquote(urn).rsplit(":", 1)[-1] for urn in accounts.group(1).split(",")}
        fields = params.get("fields", "").split(",")
        elements = [
            {
                **{k: v for k, v in row.items() if k in fields},
                "pivotValues": [f"urn:li:sponsoredCampaign:{row['campaign']}"],
                "dateRange": {"start": _restli(row["day"]), "end": _restli(row["day"])},
            }
            for row in self.analytics
            if row["account"] in wanted and start <= row["day"] <= end
        ]
        return reply(200, {"elements": elements, "paging": {"start": 0, "count": 10, "links": []}})


def _money_problem(field: str, money: Any, currency: str) -> str | None:
    if not isinstance(money, dict) or not isinstance(money.get("amount"), str):
        return f"/{field}/amount must be a string"
    if money.get("currencyCode") != currency:
        return f"/{field}/currencyCode must be the account currency {currency}"
    try:
        amount = Decimal(money["amount"])
    except InvalidOperation:
        return f"/{field}/amount is not a number"
    if amount < 0 or decimals(amount) > 2:
        return f"/{field}/amount must be positive with at most 2 decimals"
    return None


def _restli(day: date) -> dict[str, int]:
    return {"year": day.year, "month": day.month, "day": day.day}


def _error(status: int, code: str, message: str, *, service_code: int | None = None) -> Response:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if service_code is not None:
        body["serviceErrorCode"] = service_code
    return reply(status, body)
