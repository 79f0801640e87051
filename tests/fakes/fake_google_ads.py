"""FAKE of the Google Ads API REST interface (not Google): ad group (bid, status) and campaign
budget mutates and googleAds:searchStream, for the connector tests.

Checked as Google does: `Authorization: Bearer` and `developer-token` headers, the API version
in the path, int64 money fields as JSON strings or integers (a fraction is an "Invalid value"
for the whole request), an `updateMask` on every update, amounts in multiples of the billable
unit, and `partialFailure` semantics: per-operation errors in `partialFailureError` with the
operation's index, empty results for the failed ones. searchStream answers a JSON array of
batches and understands the two GAQL queries the connector sends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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
    parse_json,
    reply,
    request_id,
    running_row,
)

# service -> (JSON field, update mask, error code when the amount is not a billable multiple)
SERVICES = {
    "adGroups": (
        "cpcBidMicros",
        "cpc_bid_micros",
        {"biddingError": "BID_TOO_MANY_FRACTIONAL_DIGITS"},
    ),
    "campaignBudgets": (
        "amountMicros",
        "amount_micros",
        {"campaignBudgetError": "NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT"},
    ),
}
BUDGET_QUERY = re.compile(
    r"SELECT campaign\.campaign_budget FROM campaign WHERE campaign\.id = (\d+)"
)
REPORT_QUERY = re.compile(
    r"SELECT (?P<fields>[\w., ]+) FROM ad_group "
    r"WHERE segments\.date BETWEEN '(?P<start>[\d-]{10})' AND '(?P<end>[\d-]{10})'"
)
REPORT_FIELDS = {
    "ad_group.id",
    "segments.date",
    "metrics.impressions",
    "metrics.clicks",
    "metrics.conversions",
    "metrics.conversions_value",
    "metrics.cost_micros",
}


class FakeGoogleAds(FakeApi):
    """FAKE Google Ads API. Seed with `seed_ad_group`, `seed_campaign`, `seed_delivery`; read
    `ad_groups` (resource name -> cpc_bid_micros) and `budgets` (-> amount_micros)."""

    def __init__(
        self,
        *,
        developer_token: str = "dev-token-fake",
        access_token: str = "ya29.fake",
        version: str = "v20",
        billable_unit_micros: int = 10_000,
        stream_batch_size: int = 2,
    ) -> None:
        self.developer_token = developer_token
        self.access_token = access_token
        self.version = version
        self.billable_unit_micros = billable_unit_micros
        self.stream_batch_size = stream_batch_size
        self.ad_groups: dict[str, int] = {}
        self.ad_group_status: dict[str, str] = {}  # resource name -> ENABLED / PAUSED
        self.budgets: dict[str, int] = {}
        self.campaign_budgets: dict[tuple[str, str], str] = {}
        self.delivery: list[dict[str, Any]] = []
        # Google: up to 2x the average daily budget on a day (Charges and your average daily
        # budget); delivery through `serve` is held to that.
        self.auction = BudgetedDelivery(Fraction(2))
        self.ad_group_campaign: dict[tuple[str, str], str] = {}
        super().__init__()

    def seed_ad_group(
        self, customer: str, ad_group_id: str, cpc_bid_micros: int, campaign_id: str | None = None
    ) -> str:
        name = f"customers/{customer}/adGroups/{ad_group_id}"
        self.ad_groups[name] = cpc_bid_micros
        if campaign_id is not None:
            self.ad_group_campaign[(customer, ad_group_id)] = campaign_id
        return name

    def serve(
        self, customer: str, ad_group_id: str, day: date, want_micros: int, clicks: int = 0
    ) -> int:
        """The auction would spend `want_micros` more on this ad group on `day`: Google
        delivers what its campaign's budget allows on the day (up to 2x the budget) and
        reports it as the ad group's running total. Returns the micros delivered."""
        campaign = self.ad_group_campaign[(customer, ad_group_id)]
        name = self.campaign_budgets.get((customer, campaign))
        budget = self.budgets.get(name) if name else None
        paused = self.ad_group_status.get(f"customers/{customer}/adGroups/{ad_group_id}")
        if paused == "PAUSED":
            want_micros = 0
        delivered = self.auction.allow(campaign, day, budget, want_micros)
        row = running_row(self.delivery, customer=customer, ad_group=ad_group_id, day=day)
        row["cost_micros"] = row.get("cost_micros", 0) + delivered
        row["clicks"] = row.get("clicks", 0) + (clicks if delivered else 0)
        return delivered

    def seed_campaign(self, customer: str, campaign_id: str, budget_id: str, micros: int) -> str:
        name = f"customers/{customer}/campaignBudgets/{budget_id}"
        self.budgets[name] = micros
        self.campaign_budgets[(customer, campaign_id)] = name
        return name

    def seed_delivery(
        self, customer: str, ad_group_id: str, day: date, **metrics: int | Decimal
    ) -> None:
        """metrics: impressions, clicks, cost_micros, conversions, conversions_value."""
        self.delivery.append({"customer": customer, "ad_group": ad_group_id, "day": day, **metrics})

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/{version}/customers/{customer}/{method}")
        async def call(version: str, customer: str, method: str, request: Request) -> Response:
            if version != self.version:
                return self._error(404, "NOT_FOUND", [], f"API version {version} is not served.")
            denied = self._authenticate(request)
            if denied:
                return denied
            body = parse_json(await request.body())
            if not isinstance(body, dict):
                return self._error(400, "INVALID_ARGUMENT", [], "Invalid JSON payload received.")
            service, _, verb = method.partition(":")
            if verb == "mutate" and service in SERVICES:
                return self._mutate(customer, service, body)
            if method == "googleAds:searchStream":
                return self._search_stream(customer, str(body.get("query", "")))
            return self._error(404, "NOT_FOUND", [], f"Method {method} not found.")

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":
            quota = {
                "errorCode": {"quotaError": "RESOURCE_TEMPORARILY_EXHAUSTED"},
                "message": "Too many requests. Retry in a while.",
                "details": {
                    "quotaErrorDetails": {
                        "rateScope": "ACCOUNT",
                        "rateName": "Requests per service per method",
                        "retryDelay": f"{retry_after_s}s",
                    }
                },
            }
            return self._error(429, "RESOURCE_EXHAUSTED", [quota], "Resource has been exhausted.")
        return self._error(503, "UNAVAILABLE", [], "The service is currently unavailable.")

    def _authenticate(self, request: Request) -> Response | None:
        if bearer(request) != self.access_token:
            code, message = "OAUTH_TOKEN_INVALID", "The OAuth token is not valid."
        elif request.headers.get("developer-token") != self.developer_token:
            code, message = "DEVELOPER_TOKEN_INVALID", "The developer token is not valid."
        else:
            return None
        failure = {"errorCode": {"authenticationError": code}, "message": message}
        return self._error(401, "UNAUTHENTICATED", [failure], "Request is not authenticated.")

    def _error(
        self, status: int, status_name: str, errors: list[dict[str, Any]], message: str = ""
    ) -> Response:
        error: dict[str, Any] = {"code": status, "message": message, "status": status_name}
        if errors:
            error["details"] = self._failure_details(errors)
        return reply(status, {"error": error})

    def _failure_details(self, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A google.rpc.Status `details` list holding one GoogleAdsFailure."""
        kind = f"type.googleapis.com/google.ads.googleads.{self.version}.errors.GoogleAdsFailure"
        return [{"@type": kind, "errors": errors, "requestId": request_id()}]

    def _mutate(self, customer: str, service: str, body: dict[str, Any]) -> Response:
        field, mask, _ = SERVICES[service]
        operations = body.get("operations")
        if not isinstance(operations, list) or not operations:
            required = {"errorCode": {"requestError": "REQUIRED_FIELD_MISSING"}, "message": ""}
            return self._error(400, "INVALID_ARGUMENT", [required], "operations is required.")
        # JSON type errors reject the whole request before any operation is looked at.
        for index, operation in enumerate(operations):
            value = (operation.get("update") or {}).get(field)
            if value is not None and not _is_int64(value):
                return self._error(
                    400,
                    "INVALID_ARGUMENT",
                    [],
                    f"Invalid value at 'operations[{index}].update.{mask}' (TYPE_INT64), {value}",
                )
        errors: list[dict[str, Any]] = []
        applied: dict[int, tuple[str, int | None]] = {}
        statuses: dict[str, str] = {}
        store = self._store(service)
        for index, operation in enumerate(operations):
            problem = self._problem(customer, service, operation)
            if problem:
                location = {"fieldPathElements": [{"fieldName": "operations", "index": index}]}
                errors.append(
                    {"errorCode": problem[0], "message": problem[1], "location": location}
                )
            elif operation["updateMask"] == "status":
                statuses[operation["update"]["resourceName"]] = operation["update"]["status"]
                applied[index] = (operation["update"]["resourceName"], None)
            else:
                update = operation["update"]
                applied[index] = (update["resourceName"], int(update[field]))
        if errors and not body.get("partialFailure"):
            return self._error(400, "INVALID_ARGUMENT", errors, "Invalid argument.")
        for name, micros in applied.values():
            if micros is not None:
                store[name] = micros
        self.ad_group_status.update(statuses)
        answer: dict[str, Any] = {
            "results": [
                {"resourceName": applied[i][0]} if i in applied else {}
                for i in range(len(operations))
            ]
        }
        if errors:
            answer["partialFailureError"] = {
                "code": 3,  # INVALID_ARGUMENT
                "message": f"Multiple errors in 'details'. First error: {errors[0]['message']}",
                "details": self._failure_details(errors),
            }
        return reply(200, answer)

    def _store(self, service: str) -> dict[str, int]:
        return self.ad_groups if service == "adGroups" else self.budgets

    def _problem(
        self, customer: str, service: str, operation: dict[str, Any]
    ) -> tuple[dict[str, str], str] | None:
        """Why Google would refuse this one operation (error code, message), if it would."""
        field, mask, precision_error = SERVICES[service]
        update = operation.get("update") or {}
        name = str(update.get("resourceName", ""))
        if "updateMask" not in operation:
            return {"fieldMaskError": "FIELD_MASK_MISSING"}, "The field mask is missing."
        if service == "adGroups" and operation["updateMask"] == "status":
            mine = name.startswith(f"customers/{customer}/") and name in self.ad_groups
            if set(update) != {"resourceName", "status"} or not mine:
                return {"mutateError": "RESOURCE_NOT_FOUND"}, "Resource was not found."
            if update["status"] not in ("ENABLED", "PAUSED", "REMOVED"):
                return {"fieldError": "INVALID_VALUE"}, "Invalid ad group status."
            return None
        if operation["updateMask"] != mask or set(update) != {"resourceName", field}:
            return {"fieldMaskError": "FIELD_NOT_FOUND"}, "The update mask does not match."
        if not name.startswith(f"customers/{customer}/") or name not in self._store(service):
            return {"mutateError": "RESOURCE_NOT_FOUND"}, "Resource was not found."
        if int(update[field]) % self.billable_unit_micros:
            return precision_error, "Amount is not a multiple of the billable unit."
        return None

    def _search_stream(self, customer: str, query: str) -> Response:
        query = " ".join(query.split())
        budget = BUDGET_QUERY.fullmatch(query)
        if budget:
            name = self.campaign_budgets.get((customer, budget.group(1)))
            campaign = f"customers/{customer}/campaigns/{budget.group(1)}"
            rows = (
                [{"campaign": {"resourceName": campaign, "campaignBudget": name}}] if name else []
            )
            return self._stream(rows, "campaign.campaignBudget")
        report = REPORT_QUERY.fullmatch(query)
        fields = [f.strip() for f in report.group("fields").split(",")] if report else []
        unknown = [f for f in fields if f not in REPORT_FIELDS]
        if not report or unknown:
            code = "UNRECOGNIZED_FIELD" if unknown else "UNEXPECTED_INPUT"
            failure = {"errorCode": {"queryError": code}, "message": f"Cannot parse: {query}"}
            return self._error(400, "INVALID_ARGUMENT", [failure], "Invalid query.")
        start = date.fromisoformat(report.group("start"))
        end = date.fromisoformat(report.group("end"))
        rows = [
            _row(customer, item, fields)
            for item in self.delivery
            if item["customer"] == customer and start <= item["day"] <= end
        ]
        return self._stream(rows, ",".join(fields))

    def _stream(self, rows: list[dict[str, Any]], field_mask: str) -> Response:
        size = self.stream_batch_size
        batches = [
            {"results": rows[i : i + size], "fieldMask": field_mask, "requestId": request_id()}
            for i in range(0, len(rows), size)
        ]
        return reply(200, batches or [{"fieldMask": field_mask, "requestId": request_id()}])


def _is_int64(value: Any) -> bool:
    """proto3 JSON accepts an int64 as a decimal string or an integral number."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.lstrip("-").isdigit()


def _row(customer: str, item: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """A GoogleAdsRow in proto3 JSON: int64 as strings, doubles as numbers, zeros left out."""
    row: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    for field in fields:
        if field == "ad_group.id":
            row["adGroup"] = {
                "resourceName": f"customers/{customer}/adGroups/{item['ad_group']}",
                "id": item["ad_group"],
            }
        elif field == "segments.date":
            row["segments"] = {"date": item["day"].isoformat()}
        else:
            name = field.removeprefix("metrics.")
            value = item.get(name, 0)
            if value:
                camel = name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
                metrics[camel] = float(value) if isinstance(value, Decimal) else str(value)
    if metrics:
        row["metrics"] = metrics
    return row
