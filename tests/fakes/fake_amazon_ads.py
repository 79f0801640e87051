"""FAKE of the Amazon Ads API (not Amazon): Sponsored Products v3 ad group (bid, state) and
campaign updates and the v3 asynchronous reporting API, with a fake S3 download, for the
connector tests.

Checked as Amazon does: `Authorization: Bearer`, `Amazon-Advertising-API-ClientId` and a known
profile in `Amazon-Advertising-API-Scope` (401 UNAUTHORIZED), the versioned media types in
Content-Type and Accept (415 / 406), JSON numbers for `defaultBid` and `budget` (400
INVALID_ARGUMENT for the whole request), and per-item answers in a 207 multi-status body. A
report is PENDING for `polls_until_ready` status checks, then COMPLETED with a presigned URL on
another host (`download_base`: S3's, or the fake's own where S3 is out of reach); that download
refuses an Authorization header, as S3 does.
"""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Any

from fastapi import FastAPI, Request, Response

from tests.fakes.ad_platforms import (
    BudgetedDelivery,
    Failure,
    FakeApi,
    bearer,
    decimals,
    is_number,
    parse_json,
    reply,
    running_row,
)

MEDIA = {
    "adGroups": "application/vnd.spAdGroup.v3+json",
    "campaigns": "application/vnd.spCampaign.v3+json",
    "reports": "application/vnd.createasyncreportrequest.v3+json",
}
S3 = "https://offline-report-storage-us-east-1-prod.s3.amazonaws.com"
COLUMNS = {
    "adGroupId",
    "campaignId",
    "date",
    "impressions",
    "clicks",
    "cost",
    "purchases7d",
    "sales7d",
}
MIN_BID = Decimal("0.02")
STATES = {"ENABLED", "PAUSED", "ARCHIVED"}


class FakeAmazonAds(FakeApi):
    """FAKE Amazon Ads API. Seed `ad_groups` / `campaigns` ((profile, id) -> Decimal amount) and
    `seed_delivery`; `reports` holds every report requested."""

    def __init__(
        self,
        *,
        client_id: str = "amzn1.application-oa2-client.fake",
        access_token: str = "Atza|fake",
        profiles: tuple[str, ...] = ("3456789012",),
        polls_until_ready: int = 1,
        download_base: str = S3,
    ) -> None:
        self.client_id = client_id
        self.access_token = access_token
        self.profiles = profiles
        self.polls_until_ready = polls_until_ready
        self.download_base = download_base  # this fake's own URL where S3 is out of reach
        self.ad_groups: dict[tuple[str, str], Decimal] = {}
        self.campaigns: dict[tuple[str, str], Decimal] = {}
        self.delivery: list[dict[str, Any]] = []
        self.reports: dict[str, dict[str, Any]] = {}
        self.states: dict[tuple[str, str], str] = {}  # (profile, ad group) -> ENABLED / PAUSED
        # A third-party figure (Amazon's pages average a daily budget over the month):
        # up to 25 % over a daily budget on a day; `serve` is held to that.
        self.auction = BudgetedDelivery(Fraction(5, 4))
        super().__init__()

    def serve(self, profile: str, ad_group_id: int, campaign_id: str, day: date, want: int) -> int:
        """The auction would spend `want` micros more on this ad group on `day`: Amazon
        delivers what its campaign's daily budget allows and reports it in the ad group's
        row for the day. Returns the micros delivered."""
        budget = self.campaigns.get((profile, campaign_id))
        micros = None if budget is None else int(budget * 1_000_000)
        if self.states.get((profile, str(ad_group_id))) == "PAUSED":
            want = 0
        delivered = self.auction.allow(campaign_id, day, micros, want)
        row = running_row(self.delivery, profile=profile, adGroupId=ad_group_id, date=day)
        row["cost"] = row.get("cost", Decimal(0)) + Decimal(delivered) / 1_000_000
        return delivered

    def seed_delivery(self, profile: str, ad_group_id: int, day: date, **columns: Any) -> None:
        """columns as the report carries them: impressions 100, cost 1.23, sales7d 45.6."""
        self.delivery.append({"profile": profile, "adGroupId": ad_group_id, "date": day, **columns})

    def add_routes(self, app: FastAPI) -> None:
        @app.put("/sp/{entity}")
        async def update(entity: str, request: Request) -> Response:
            denied = self._check(request, entity)
            if denied:
                return denied
            profile = request.headers["amazon-advertising-api-scope"]
            items = (parse_json(await request.body()) or {}).get(entity)
            if not isinstance(items, list) or not 1 <= len(items) <= 1000:
                return _error(400, "INVALID_ARGUMENT", f"{entity} must hold 1 to 1000 items")
            amounts = [_amount(entity, item) for item in items]
            if any(
                a is None and not _state_only(entity, i)
                for a, i in zip(amounts, items, strict=True)
            ):
                return _error(400, "INVALID_ARGUMENT", "amounts must be JSON numbers")
            success, errors = [], []
            for index, (item, amount) in enumerate(zip(items, amounts, strict=True)):
                key = (profile, str(item.get("adGroupId") or item.get("campaignId")))
                problem = self._problem(entity, key, item, amount)
                if problem:
                    errors.append({"index": index, "errors": [problem]})
                elif amount is None:  # a state change
                    self.states[key] = item["state"]
                    success.append({"index": index, _id_field(entity): key[1]})
                else:
                    getattr(self, "ad_groups" if entity == "adGroups" else "campaigns")[key] = (
                        amount
                    )
                    success.append({"index": index, _id_field(entity): key[1]})
            return reply(207, {entity: {"success": success, "error": errors}})

        @app.post("/reporting/reports")
        async def create_report(request: Request) -> Response:
            denied = self._check(request, "reports")
            return denied or self._create_report(
                request.headers["amazon-advertising-api-scope"], await request.body()
            )

        @app.get("/reporting/reports/{report_id}")
        async def report_status(report_id: str, request: Request) -> Response:
            denied = self._check(request, "reports", content_type=False)
            report = self.reports.get(report_id)
            if denied or report is None:
                return denied or _error(404, "NOT_FOUND", f"Report {report_id} not found")
            report["polls"] += 1
            ready = report["polls"] > self.polls_until_ready
            status = {
                "reportId": report_id,
                "status": "COMPLETED" if ready else "PENDING",
                "url": f"{self.download_base}/reports/{report_id}.json.gz?X-Amz-Signature=fake"
                if ready
                else None,
            }
            return reply(200, status)

        @app.get("/reports/{name}")
        async def download(name: str, request: Request) -> Response:
            if "authorization" in request.headers:  # S3: the URL is the credential
                return Response(
                    "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism "
                    "allowed</Message></Error>",
                    status_code=400,
                    media_type="application/xml",
                )
            report = self.reports[name.removesuffix(".json.gz")]
            rows = self._report_rows(report)
            return Response(
                gzip.compress(json.dumps(rows).encode()), media_type="application/octet-stream"
            )

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":
            return reply(
                429,
                {"code": "429", "details": "Too Many Requests"},
                {"Retry-After": str(retry_after_s)},
            )
        return reply(503, {"code": "SERVER_IS_BUSY", "details": "Service unavailable"})

    def _check(self, request: Request, kind: str, *, content_type: bool = True) -> Response | None:
        if bearer(request) != self.access_token or (
            request.headers.get("amazon-advertising-api-clientid") != self.client_id
        ):
            return _error(401, "UNAUTHORIZED", "Not authorized to access this advertiser", v2=True)
        if request.headers.get("amazon-advertising-api-scope") not in self.profiles:
            return _error(401, "UNAUTHORIZED", "Not authorized to access scope", v2=True)
        if content_type and request.headers.get("content-type") != MEDIA[kind]:
            return _error(415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type must be {MEDIA[kind]}")
        if kind != "reports" and request.headers.get("accept") != MEDIA[kind]:
            return _error(406, "NOT_ACCEPTABLE", f"Accept must be {MEDIA[kind]}")
        return None

    def _problem(
        self, entity: str, key: tuple[str, str], item: dict[str, Any], amount: Decimal | None
    ) -> dict[str, Any] | None:
        """An SP v3 mutation error for one item, if Amazon would refuse it."""
        store = self.ad_groups if entity == "adGroups" else self.campaigns
        if key not in store:
            return _item_error("entityNotFoundError", "ENTITY_NOT_FOUND", f"{key[1]} not found")
        if amount is None:
            if item["state"] not in STATES:
                return _item_error("malformedValueError", "INVALID_STATE", f"state in {STATES}")
            return None
        if decimals(amount) > 2:
            return _item_error("malformedValueError", "TOO_MANY_DECIMALS", "at most 2 decimals")
        if entity == "adGroups" and amount < MIN_BID:
            return _item_error("rangeError", "TOO_LOW", f"defaultBid must be at least {MIN_BID}")
        if entity == "campaigns" and item["budget"].get("budgetType") != "DAILY":
            return _item_error("malformedValueError", "INVALID_BUDGET_TYPE", "budgetType DAILY")
        return None

    def _create_report(self, profile: str, raw: bytes) -> Response:
        body = parse_json(raw) or {}
        config = body.get("configuration") or {}
        try:
            start, end = date.fromisoformat(body["startDate"]), date.fromisoformat(body["endDate"])
        except (KeyError, TypeError, ValueError):
            return _error(400, "INVALID_ARGUMENT", "startDate and endDate are required")
        wanted = {
            "adProduct": "SPONSORED_PRODUCTS",
            "reportTypeId": "spCampaigns",
            "timeUnit": "DAILY",
            "format": "GZIP_JSON",
        }
        if any(config.get(k) != v for k, v in wanted.items()) or config.get("groupBy") != [
            "adGroup"
        ]:
            return _error(400, "INVALID_ARGUMENT", "unsupported report configuration")
        if not set(config.get("columns", [])) <= COLUMNS or (end - start).days + 1 > 31:
            return _error(400, "INVALID_ARGUMENT", "invalid columns or a range over 31 days")
        for report_id, report in self.reports.items():
            if report["request"] == (profile, body) and report["polls"] <= self.polls_until_ready:
                return reply(
                    425, {"code": "425", "detail": f"The Request is a duplicate of : {report_id}"}
                )
        report_id = str(uuid.uuid4())
        self.reports[report_id] = {"request": (profile, body), "polls": 0}
        return reply(200, {"reportId": report_id, "status": "PENDING", **body})

    def _report_rows(self, report: dict[str, Any]) -> list[dict[str, Any]]:
        profile, body = report["request"]
        columns = body["configuration"]["columns"]
        start, end = date.fromisoformat(body["startDate"]), date.fromisoformat(body["endDate"])
        return [
            {
                column: row["date"].isoformat()
                if column == "date"
                else _json_number(row.get(column, 0))
                for column in columns
            }
            for row in self.delivery
            if row["profile"] == profile and start <= row["date"] <= end
        ]


def _id_field(entity: str) -> str:
    return "adGroupId" if entity == "adGroups" else "campaignId"


def _amount(entity: str, item: Any) -> Decimal | None:
    """The item's money as sent, or None when it is not a JSON number."""
    if not isinstance(item, dict):
        return None
    value = (
        item.get("defaultBid") if entity == "adGroups" else (item.get("budget") or {}).get("budget")
    )
    return Decimal(value) if is_number(value) else None


def _state_only(entity: str, item: Any) -> bool:
    """An ad group update that sets only its `state` (ENABLED, PAUSED)."""
    return entity == "adGroups" and isinstance(item, dict) and set(item) == {"adGroupId", "state"}


def _json_number(value: Any) -> Any:
    """Report numbers are doubles on the wire."""
    return float(value) if isinstance(value, Decimal) else value


def _item_error(kind: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "errorType": kind.removesuffix("Error"),
        "errorValue": {kind: {"reason": reason, "message": message}},
    }


def _error(status: int, code: str, message: str, *, v2: bool = False) -> Response:
    """v3 errors carry `message`; the older auth layer answers `details`."""
    return reply(status, {"code": code, "details" if v2 else "message": message})
