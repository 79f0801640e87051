"""FAKE of HubSpot's CRM v3 API (not HubSpot): contacts search and the orders list.

Checked as HubSpot does: a private app token (`Authorization: Bearer`; 401 category
INVALID_AUTHENTICATION otherwise); search bodies with `filterGroups` of `filters`
(`propertyName`, `operator`, `value` — dates in epoch milliseconds), `sorts`, `properties`,
`limit` up to 200 and a string `after`; search pages stop at 10,000 results as HubSpot's do.
Lists take `limit` up to 100, `after`, comma-separated `properties` and `associations`.
Records are `{id, properties (all strings), createdAt, updatedAt, archived}`; more pages are
announced by `paging.next.after`. Errors are `{status, message, correlationId, category}`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response

from tests.fakes.ad_platforms import Failure, FakeApi, bearer, parse_json, reply

SEARCH_MAX, LIST_MAX, SEARCH_WINDOW = 200, 100, 10_000
OPERATORS = {
    "EQ": lambda a, b: a == b,
    "GT": lambda a, b: a > b,
    "GTE": lambda a, b: a >= b,
    "LT": lambda a, b: a < b,
    "LTE": lambda a, b: a <= b,
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class FakeHubSpot(FakeApi):
    """FAKE HubSpot. Seed with `add_contact` and `add_order`."""

    def __init__(self, *, token: str) -> None:
        self.token = token
        self.contacts: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        super().__init__()

    def add_contact(
        self, id: str, updated: datetime, *, email: str | None = None,
        firstname: str | None = None, phone: str | None = None,
    ) -> None:  # fmt: skip
        props = {"email": email, "firstname": firstname, "phone": phone}
        self.contacts[id] = self._record(id, updated, props | {"lastmodifieddate": _iso(updated)})

    def add_order(
        self, id: str, updated: datetime, *, contact: str | None, total: str, currency: str
    ) -> None:
        props = {"hs_total_price": total, "hs_currency_code": currency}
        record = self._record(id, updated, props | {"hs_lastmodifieddate": _iso(updated)})
        record["properties"]["hs_createdate"] = record["createdAt"]
        record["associations"] = (
            {"contacts": {"results": [{"id": contact, "type": "order_to_contact"}]}}
            if contact
            else {}
        )
        self.orders[id] = record

    @staticmethod
    def _record(id: str, updated: datetime, props: dict[str, Any]) -> dict[str, Any]:
        created = _iso(updated.replace(hour=0, minute=0, second=0, microsecond=0))
        return {
            "id": id,
            "properties": {"hs_object_id": id, "createdate": created, **props},
            "createdAt": created,
            "updatedAt": _iso(updated),
            "archived": False,
        }

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/crm/v3/objects/contacts/search")
        async def search(request: Request) -> Response:
            if bearer(request) != self.token:
                return _unauthorized()
            body = parse_json(await request.body())
            if not isinstance(body, dict):
                return _error(400, "Invalid input JSON", "VALIDATION_ERROR")
            limit, after = body.get("limit", 10), body.get("after", "0")
            if not isinstance(limit, int) or not 1 <= limit <= SEARCH_MAX:
                return _error(400, f"limit must be between 1 and {SEARCH_MAX}", "VALIDATION_ERROR")
            if not isinstance(after, str) or not after.isdigit():
                return _error(400, "after must be a numeric string", "VALIDATION_ERROR")
            found = list(self.contacts.values())
            for group in body.get("filterGroups", []):
                for f in group.get("filters", []):
                    test = OPERATORS.get(f.get("operator"))
                    if f.get("propertyName") != "lastmodifieddate" or test is None:
                        return _error(400, f"unsupported filter {f}", "VALIDATION_ERROR")
                    if not str(f.get("value", "")).isdigit():
                        return _error(400, "date values are epoch milliseconds", "VALIDATION_ERROR")
                    value = int(f["value"])
                    found = [c for c in found if test(_ms(_parse(c["updatedAt"])), value)]
            for sort in body.get("sorts", []):
                found.sort(
                    key=lambda c: c["updatedAt"], reverse=sort.get("direction") == "DESCENDING"
                )
            start = int(after)
            if start + limit > SEARCH_WINDOW:
                return _error(400, "search results are limited to 10,000", "VALIDATION_ERROR")
            wanted = set(body.get("properties") or ["email", "firstname", "lastname"])
            page = [_only(c, wanted | {"hs_object_id", "createdate", "lastmodifieddate"})
                    for c in found[start : start + limit]]  # fmt: skip
            return reply(200, _page(page, start + limit, len(found), total=len(found)))

        @app.get("/crm/v3/objects/orders")
        async def list_orders(request: Request) -> Response:
            if bearer(request) != self.token:
                return _unauthorized()
            q = request.query_params
            limit, after = q.get("limit", "10"), q.get("after", "0")
            if not limit.isdigit() or not 1 <= int(limit) <= LIST_MAX:
                return _error(400, f"limit must be between 1 and {LIST_MAX}", "VALIDATION_ERROR")
            if not after.isdigit():
                return _error(400, "Invalid after cursor", "VALIDATION_ERROR")
            wanted = set(filter(None, q.get("properties", "").split(",")))
            everything = sorted(self.orders.values(), key=lambda o: int(o["id"]))
            start, size = int(after), int(limit)
            page = []
            for order in everything[start : start + size]:
                shown = _only(order, wanted | {"hs_object_id", "createdate"})
                if "contacts" in q.get("associations", "").split(","):
                    shown["associations"] = order["associations"]
                page.append(shown)
            return reply(200, _page(page, start + size, len(everything)))

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":
            return _error(
                429, "You have reached your secondly limit.", "RATE_LIMITS",
                {"Retry-After": str(retry_after_s)},
            )  # fmt: skip
        return _error(502, "Bad Gateway", "INTERNAL_ERROR")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _only(record: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
    props = {k: v for k, v in record["properties"].items() if k in wanted}
    return {k: v for k, v in record.items() if k != "associations"} | {"properties": props}


def _page(results: list[Any], end: int, count: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {**extra, "results": results}
    if end < count:
        body["paging"] = {"next": {"after": str(end)}}
    return body


def _unauthorized() -> Response:
    return _error(
        401,
        "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
        "INVALID_AUTHENTICATION",
    )


def _error(
    status: int, message: str, category: str, headers: dict[str, str] | None = None
) -> Response:
    body = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    return reply(status, body, headers)
