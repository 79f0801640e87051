"""FAKE of Twilio's Programmable Messaging REST API (not Twilio): creating an SMS.

Checked as Twilio does: HTTP basic auth with the Account SID and auth token (20003
otherwise), the account in the path matching the credentials (20404), form-encoded `To` in
E.164 (21211), `From` or `MessagingServiceSid` (21603), a non-empty `Body` of at most 1,600
characters (21602, 21617). Errors are `{"code", "message", "more_info", "status"}`; a created
message answers 201 with Twilio's message fields, `sid` SM + 32 hex digits, status `queued`.
"""

from __future__ import annotations

import base64
import re
import uuid
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response

from tests.fakes.ad_platforms import Failure, FakeApi, reply

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


class FakeTwilio(FakeApi):
    """FAKE Twilio. `sent` holds every created message as Twilio reports it."""

    def __init__(self, *, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.sent: list[dict[str, Any]] = []
        super().__init__()

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/2010-04-01/Accounts/{account}/Messages.json")
        async def create(account: str, request: Request) -> Response:
            if not self._authorized(request):
                return _error(401, 20003, "Authenticate")
            if account != self.account_sid:
                return _error(
                    404, 20404, f"The requested resource {request.url.path} was not found"
                )
            form = dict(parse_qsl((await request.body()).decode()))
            to, body = str(form.get("To", "")), str(form.get("Body", ""))
            sender = form.get("From") or form.get("MessagingServiceSid")
            if not E164.match(to):
                return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            if not sender:
                return _error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required")
            if not body:
                return _error(400, 21602, "Message body is required.")
            if len(body) > 1600:
                return _error(
                    400, 21617, "The concatenated message body exceeds the 1600 character limit."
                )
            sid = "SM" + uuid.uuid4().hex
            message = {
                "sid": sid,
                "account_sid": account,
                "to": to,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": body,
                "status": "queued",
                "num_segments": str(-(-len(body) // 160)),
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "date_created": formatdate(usegmt=True),
                "price": None,
                "error_code": None,
                "error_message": None,
                "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
            }
            self.sent.append(message)
            return reply(201, message)

    def _authorized(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == (self.account_sid, self.auth_token)

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":
            return _error(429, 20429, "Too Many Requests", {"Retry-After": str(retry_after_s)})
        return _error(503, 20500, "Internal Server Error")


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return reply(status, body, headers)
