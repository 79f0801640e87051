"""FAKE of HubSpot's CRM API (not HubSpot): contacts and orders search and the v4
associations batch read (orders to contacts).

Checked as HubSpot does: a private app token (`Authorization: Bearer`; 401 category
INVALID_AUTHENTICATION otherwise); search bodies with `filterGroups` (OR) of `filters` (AND;
`propertyName`, `operator`, `value` — dates in epoch milliseconds), `sorts`, `properties`,
`limit` up to 200 and a string `after`; search pages stop at 10,000 results as HubSpot's do.
Records are `{id, properties (all strings), createdAt, updatedAt, archived}`; more pages are
announced by `paging.next.after`. The batch read takes up to 1,000 `inputs` and answers 207
with an `errors` entry for the records that have no association. Errors are
`{status, message, correlationId, category}`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request, Response

from tests.fakes.ad_platforms import Failure, FakeApi, bearer, parse_json, reply

SEARCH_MAX, SEARCH_WINDOW, BATCH_MAX = 200, 10_000, 1000
# the property each searchable object is last modified by
MODIFIED = {"contacts": "lastmodifieddate", "orders": "hs_lastmodifieddate"}
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
        @app.post("/crm/v3/objects/{kind}/search")
        async def search(kind: str, request: Request) -> Response:
            if bearer(request) != self.token:
                return _unauthorized()
            if kind not in MODIFIED:
                return _error(404, f"Unable to infer object type from: {kind}", "OBJECT_NOT_FOUND")
            body = parse_json(await request.body())
            if not isinstance(body, dict):
                return _error(400, "Invalid input JSON", "VALIDATION_ERROR")
            limit, after = body.get("limit", 10), body.get("after", "0")
            if not isinstance(limit, int) or not 1 <= limit <= SEARCH_MAX:
                return _error(400, f"limit must be between 1 and {SEARCH_MAX}", "VALIDATION_ERROR")
            if not isinstance(after, str) or not after.isdigit():
                return _error(400, "after must be a numeric string", "VALIDATION_ERROR")
            records = self.contacts if kind == "contacts" else self.orders
            modified = MODIFIED[kind]

            def holds(record: dict[str, Any], f: dict[str, Any]) -> bool:
                moment = _ms(_parse(record["properties"][modified]))
                return bool(OPERATORS[f["operator"]](moment, int(f["value"])))

            groups = body.get("filterGroups") or []
            for f in (f for g in groups for f in g.get("filters", [])):
                if f.get("propertyName") != modified or f.get("operator") not in OPERATORS:
                    return _error(400, f"unsupported filter {f}", "VALIDATION_ERROR")
                if not str(f.get("value", "")).isdigit():
                    return _error(400, "date values are epoch milliseconds", "VALIDATION_ERROR")
            found = [
                r for r in records.values()
                if not groups or any(all(holds(r, f) for f in g.get("filters", [])) for g in groups)
            ]  # fmt: skip
            found.sort(key=lambda r: int(r["id"]))
            for sort in body.get("sorts", []):
                if sort.get("propertyName") != modified:
                    return _error(400, f"unsupported sort {sort}", "VALIDATION_ERROR")
                found.sort(
                    key=lambda r: r["properties"][modified],
                    reverse=sort.get("direction") == "DESCENDING",
                )
            start = int(after)
            if start + limit > SEARCH_WINDOW:
                return _error(400, "search results are limited to 10,000", "VALIDATION_ERROR")
            wanted = set(body.get("properties") or DEFAULT_PROPERTIES[kind])
            page = [_only(r, wanted | {"hs_object_id", "createdate", modified})
                    for r in found[start : start + limit]]  # fmt: skip
            return reply(200, _page(page, start + limit, len(found), total=len(found)))

        @app.post("/crm/v4/associations/{from_kind}/{to_kind}/batch/read")
        async def associations(from_kind: str, to_kind: str, request: Request) -> Response:
            if bearer(request) != self.token:
                return _unauthorized()
            if (from_kind, to_kind) != ("orders", "contacts"):
                return _error(400, f"unsupported association {from_kind} -> {to_kind}",
                              "VALIDATION_ERROR")  # fmt: skip
            body = parse_json(await request.body())
            inputs = body.get("inputs") if isinstance(body, dict) else None
            if not isinstance(inputs, list) or not 1 <= len(inputs) <= BATCH_MAX:
                return _error(400, f"inputs must hold 1 to {BATCH_MAX} ids", "VALIDATION_ERROR")
            results, missing = [], []
            for item in inputs:
                linked = (self.orders.get(str(item.get("id"))) or {}).get("associations") or {}
                contacts = (linked.get("contacts") or {}).get("results") or []
                if not contacts:
                    missing.append(str(item.get("id")))
                    continue
                to = [{"toObjectId": int(c["id"]), "associationTypes": [
                    {"category": "HUBSPOT_DEFINED", "typeId": 507, "label": None}]}
                    for c in contacts]  # fmt: skip
                results.append({"from": {"id": str(item["id"])}, "to": to})
            answer: dict[str, Any] = {"status": "COMPLETE", "results": results,
                                      "startedAt": _iso(datetime.now(UTC)),
                                      "completedAt": _iso(datetime.now(UTC))}  # fmt: skip
            if missing:
                answer["numErrors"] = len(missing)
                answer["errors"] = [
                    {"status": "error", "category": "OBJECT_NOT_FOUND",
                     "message": f"No {to_kind} is associated with {from_kind} {i}.",
                     "context": {"fromObjectId": [i]}}
                    for i in missing
                ]  # fmt: skip
            return reply(207 if missing else 200, answer)

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":
            return _error(
                429, "You have reached your secondly limit.", "RATE_LIMITS",
                {"Retry-After": str(retry_after_s)},
            )  # fmt: skip
        return _error(502, "Bad Gateway", "INTERNAL_ERROR")


DEFAULT_PROPERTIES = {
    "contacts": ["email", "firstname", "lastname"],
    "orders": ["hs_order_name", "hs_total_price", "hs_currency_code"],
}


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
