"""FAKE of Shopify's Admin REST API (not Shopify): customers.json and orders.json.

Checked as Shopify does: `X-Shopify-Access-Token` (401 `{"errors": "[API] Invalid API key or
access token ..."}` otherwise), the API version in the path (404 for one not served),
`limit` at most 250, `updated_at_min` as ISO 8601, orders filtered by `status` (`open` by
default, `any` for all). Pages are cursor pages ordered by id: the next one is announced in
`Link: <...?limit=N&page_info=...>; rel="next"` (and `rel="previous"` after the first), and a
request with `page_info` may carry only `limit` and `fields` besides it (400 otherwise), as
Shopify's do. Money is a decimal string (`total_price`), times carry the shop's offset.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request, Response

from tests.fakes.ad_platforms import Failure, FakeApi, reply

MAX_LIMIT = 250
TOKEN_ERROR = "[API] Invalid API key or access token (unrecognized login or wrong password)"


class FakeShopify(FakeApi):
    """FAKE Shopify shop. Seed with `add_customer` and `add_order` (times must be aware)."""

    def __init__(self, *, token: str, api_version: str = "2024-10") -> None:
        self.token = token
        self.api_version = api_version
        self.data: dict[str, list[dict[str, Any]]] = {"customers": [], "orders": []}
        super().__init__()

    def add_customer(self, id: int, updated: datetime, **fields: Any) -> None:
        self.data["customers"].append(
            {"id": id, "updated_at": updated.isoformat(), "created_at": updated.isoformat()}
            | fields
        )

    def add_order(
        self, id: int, updated: datetime, *, customer: int | None, total_price: str,
        currency: str = "USD", closed: bool = False, **fields: Any,
    ) -> None:  # fmt: skip
        self.data["orders"].append(
            {
                "id": id,
                "name": f"#{1000 + id}",
                "created_at": updated.isoformat(),
                "processed_at": updated.isoformat(),
                "updated_at": updated.isoformat(),
                "closed_at": updated.isoformat() if closed else None,
                "total_price": total_price,
                "currency": currency,
                "customer": {"id": customer} if customer is not None else None,
            }
            | fields
        )

    def add_routes(self, app: FastAPI) -> None:
        @app.get("/admin/api/{version}/{resource}.json")
        async def listing(version: str, resource: str, request: Request) -> Response:
            if request.headers.get("x-shopify-access-token") != self.token:
                return reply(401, {"errors": TOKEN_ERROR})
            if version != self.api_version or resource not in self.data:
                return reply(404, {"errors": "Not Found"})
            q = dict(request.query_params)
            limit = q.pop("limit", "50")
            if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
                return reply(400, {"errors": {"limit": [f"must be between 1 and {MAX_LIMIT}"]}})
            if "page_info" in q:
                if set(q) - {"page_info", "fields"}:
                    return reply(
                        400, {"errors": {"page_info": ["cannot be used with other parameters"]}}
                    )
                try:
                    q = json.loads(base64.urlsafe_b64decode(q["page_info"]))
                except ValueError:
                    return reply(400, {"errors": {"page_info": ["Invalid value."]}})
            rows = sorted(self.data[resource], key=lambda r: r["id"])
            if "updated_at_min" in q:
                try:
                    since = datetime.fromisoformat(q["updated_at_min"])
                except ValueError:
                    return reply(400, {"errors": {"updated_at_min": ["is not a valid date"]}})
                rows = [r for r in rows if datetime.fromisoformat(r["updated_at"]) >= since]
            if resource == "orders":
                status = q.get("status", "open")
                if status == "open":
                    rows = [r for r in rows if r["closed_at"] is None]
                elif status == "closed":
                    rows = [r for r in rows if r["closed_at"] is not None]
            after = int(q.get("after_id", 0))
            rows = [r for r in rows if r["id"] > after]
            page = rows[: int(limit)]
            links = []
            if len(rows) > len(page):
                links.append(self._link(request, resource, limit, q, page[-1]["id"], "next"))
            if after:
                links.append(self._link(request, resource, limit, q, 0, "previous"))
            headers = {"Link": ", ".join(links)} if links else None
            return reply(200, {resource: page}, headers)

    def _link(
        self, request: Request, resource: str, limit: str, q: dict[str, Any], after: int, rel: str
    ) -> str:
        token = base64.urlsafe_b64encode(json.dumps(q | {"after_id": after}).encode()).decode()
        base = f"{request.base_url}admin/api/{self.api_version}/{resource}.json"
        return f'<{base}?limit={limit}&page_info={token}>; rel="{rel}"'

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":
            return reply(
                429,
                {"errors": "Exceeded 2 calls per second for api client. Reduce request rates."},
                {"Retry-After": str(retry_after_s)},
            )
        return reply(503, {"errors": "Service Unavailable"})
