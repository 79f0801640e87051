"""FAKE of Salesforce's REST query resource (not Salesforce): SOQL over Contact and Order.

Checked as Salesforce does: `Authorization: Bearer` with the session's token (401
INVALID_SESSION_ID otherwise), the API version in the path (404 NOT_FOUND for one the org
does not serve), SOQL of the form `SELECT fields FROM object [WHERE LastModifiedDate >=|>
datetime] [ORDER BY field]` (400 MALFORMED_QUERY otherwise; INVALID_FIELD for an unknown
column). Answers are `{totalSize, done, records, nextRecordsUrl}`, records carrying
`attributes {type, url}`, datetimes as `2026-01-05T10:00:00.000+0000`, TotalAmount a JSON
number. Results come `batch_size` at a time behind `nextRecordsUrl` query locators.
Errors are a list of `{message, errorCode}`.

`serve_oauth_refresh` adds the token endpoint, `POST /services/oauth2/token` with
grant_type=refresh_token and the connected app's client_id and client_secret in the form:
answers `{access_token, instance_url, id, token_type, issued_at, signature}` (no lifetime, as
Salesforce: a session lasts the org's session timeout, `session_s`, and an expired one is 401
INVALID_SESSION_ID), or Salesforce's `{error, error_description}` (400 invalid_grant,
400 invalid_client_id, 400 invalid_client, 400 unsupported_grant_type).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response

from kiki.http import dumps
from tests.fakes.ad_platforms import Failure, FakeApi, bearer, reply

FIELDS = {
    "Contact": {"Id", "Email", "FirstName", "Phone", "LastModifiedDate"},
    "Order": {"Id", "BillToContactId", "EffectiveDate", "TotalAmount", "LastModifiedDate"},
}
SOQL = re.compile(
    r"^SELECT (?P<fields>[\w, ]+) FROM (?P<object>\w+)"
    r"(?: WHERE LastModifiedDate (?P<op>>=|>) (?P<since>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ))?"
    r"(?: ORDER BY (?P<order>\w+))?$"
)


def sf_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class FakeSalesforce(FakeApi):
    """FAKE Salesforce org. Seed with `add_contact` and `add_order`."""

    def __init__(
        self, *, token: str | None = None, api_version: str = "60.0", batch_size: int = 2000
    ) -> None:
        self.token = token
        self.api_version = api_version
        self.batch_size = batch_size
        self.records: dict[str, list[dict[str, Any]]] = {"Contact": [], "Order": []}
        self._locators: dict[str, list[dict[str, Any]]] = {}
        super().__init__()

    def add_contact(self, id: str, updated: datetime, **fields: Any) -> None:
        self.records["Contact"].append({"Id": id, "LastModifiedDate": updated, **fields})

    def add_order(self, id: str, updated: datetime, **fields: Any) -> None:
        self.records["Order"].append({"Id": id, "LastModifiedDate": updated, **fields})

    def serve_oauth_refresh(
        self, *, client_id: str, client_secret: str, refresh_token: str, session_s: int = 7200
    ) -> None:
        @self.app.post("/services/oauth2/token")
        async def token(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            if form.get("grant_type") != "refresh_token":
                return _oauth_error("unsupported_grant_type", "grant type not supported")
            if form.get("client_id") != client_id:
                return _oauth_error("invalid_client_id", "client identifier invalid")
            if form.get("client_secret") != client_secret:
                return _oauth_error("invalid_client", "invalid client credentials")
            if form.get("refresh_token") != refresh_token:
                return _oauth_error("invalid_grant", "expired access/refresh token")
            issued = int(self.now().timestamp() * 1000)
            return reply(
                200,
                {
                    "access_token": self.issue_token(session_s, prefix="00D5g000004!"),
                    "instance_url": str(request.base_url).rstrip("/"),
                    "id": "https://login.salesforce.com/id/00D5g000004/0055g00000A",
                    "token_type": "Bearer",
                    "issued_at": str(issued),
                    "signature": uuid.uuid4().hex,
                },
            )

    def add_routes(self, app: FastAPI) -> None:
        @app.get("/services/data/{version}/query")
        async def query(version: str, request: Request) -> Response:
            if (refused := self._refused(version, request)) is not None:
                return refused
            soql = request.query_params.get("q", "")
            parsed = SOQL.match(soql)
            if parsed is None or parsed["object"] not in FIELDS:
                return _error(400, "MALFORMED_QUERY", f"unexpected token in: {soql[:80]}")
            sobject = parsed["object"]
            fields = [f.strip() for f in parsed["fields"].split(",")]
            for name in [*fields, *filter(None, [parsed["order"]])]:
                if name not in FIELDS[sobject]:
                    return _error(
                        400, "INVALID_FIELD", f"No such column '{name}' on entity '{sobject}'."
                    )
            rows = list(self.records[sobject])
            if parsed["since"]:
                since = datetime.fromisoformat(parsed["since"].replace("Z", "+00:00"))
                keep = (lambda t: t >= since) if parsed["op"] == ">=" else (lambda t: t > since)
                rows = [r for r in rows if keep(r["LastModifiedDate"])]
            if parsed["order"]:
                rows.sort(key=lambda r: r[parsed["order"]])
            shaped = [_shape(sobject, r, fields, self.api_version) for r in rows]
            return self._batch(shaped, len(shaped))

        @app.get("/services/data/{version}/query/{locator}")
        async def more(version: str, locator: str, request: Request) -> Response:
            if (refused := self._refused(version, request)) is not None:
                return refused
            if locator not in self._locators:
                return _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            rest = self._locators.pop(locator)
            return self._batch(rest, int(locator.rsplit("-", 1)[1]) + len(rest))

    def _refused(self, version: str, request: Request) -> Response | None:
        token = bearer(request)
        if not ((self.token and token == self.token) or self.token_live(request)):
            return _error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if version != f"v{self.api_version}":
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        return None

    def _batch(self, rows: list[dict[str, Any]], total: int) -> Response:
        now, rest = rows[: self.batch_size], rows[self.batch_size :]
        body: dict[str, Any] = {"totalSize": total, "done": not rest, "records": now}
        if rest:
            locator = f"01g{uuid.uuid4().hex[:15]}-{total - len(rest)}"
            self._locators[locator] = rest
            body["nextRecordsUrl"] = f"/services/data/v{self.api_version}/query/{locator}"
        return _json(body)

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":
            return _error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        return _error(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable")


def _shape(sobject: str, row: dict[str, Any], fields: list[str], version: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attributes": {
            "type": sobject,
            "url": f"/services/data/v{version}/sobjects/{sobject}/{row['Id']}",
        }
    }
    for name in fields:
        value = row.get(name)
        out[name] = sf_time(value) if isinstance(value, datetime) else value
    return out


def _json(body: dict[str, Any]) -> Response:
    """Decimal amounts written as JSON numbers, digit for digit, as Salesforce does."""
    return Response(dumps(body), media_type="application/json")


def _oauth_error(error: str, description: str) -> Response:
    return reply(400, {"error": error, "error_description": description})


def _error(status: int, code: str, message: str) -> Response:
    return reply(status, [{"message": message, "errorCode": code}])
