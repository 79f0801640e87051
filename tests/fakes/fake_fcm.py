"""FAKE of Firebase Cloud Messaging's HTTP v1 API (not Google): sending to a device token.

Checked as FCM does: a Bearer access token (401 UNAUTHENTICATED), the project in the path
(404 NOT_FOUND / SENDER_ID_MISMATCH for another project), a JSON body with one `message`
naming exactly one target, string-only `data` values (400 INVALID_ARGUMENT with a BadRequest
field violation), and the token: a registered one is delivered, a malformed one is
INVALID_ARGUMENT, a well-formed unknown one UNREGISTERED (404). Answers
`{"name": "projects/{project}/messages/{id}"}`.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response

from tests.fakes.ad_platforms import Failure, FakeApi, bearer, parse_json, reply

TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


class FakeFcm(FakeApi):
    """FAKE FCM. Register device tokens in `devices`; `delivered` holds what reached them."""

    def __init__(self, *, project_id: str, access_token: str) -> None:
        self.project_id = project_id
        self.access_token = access_token
        self.devices: set[str] = set()
        self.delivered: list[dict[str, Any]] = []
        super().__init__()

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/v1/projects/{project}/messages:send")
        async def send(project: str, request: Request) -> Response:
            if bearer(request) != self.access_token:
                return _error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.",
                )
            if project != self.project_id:
                return _error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
            payload = parse_json(await request.body())
            message = payload.get("message") if isinstance(payload, dict) else None
            if not isinstance(message, dict):
                return _bad_request("message", "Invalid JSON payload received. Unknown name")
            targets = [k for k in ("token", "topic", "condition") if k in message]
            if len(targets) != 1:
                return _bad_request("message", "Exactly one of token, topic or condition")
            data = message.get("data", {})
            for i, (key, value) in enumerate(data.items()):
                if not isinstance(value, str):
                    return _bad_request(
                        f"message.data[{i}].value", f"Invalid value at 'message.data[{i}].value'"
                    )
                if key.startswith(("google", "gcm")) or key == "from":
                    return _bad_request(f"message.data[{i}].key", f"Invalid data key {key}")
            token = message.get("token", "")
            if not TOKEN_SHAPE.match(token):
                return _error(
                    400,
                    "INVALID_ARGUMENT",
                    "The registration token is not a valid FCM registration token",
                    "INVALID_ARGUMENT",
                )
            if token not in self.devices:
                return _error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
            name = f"projects/{project}/messages/{uuid.uuid4().int % 10**19}"
            self.delivered.append({"name": name, **message})
            return reply(200, {"name": name})

    def failure_response(self, failure: Failure, retry_after_s: int) -> Response:
        if failure == "throttle":
            response = _error(
                429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric", "QUOTA_EXCEEDED"
            )
            response.headers["Retry-After"] = str(retry_after_s)
            return response
        return _error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")


def _error(status: int, state: str, message: str, fcm_code: str | None = None) -> Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": state}
    if fcm_code:
        error["details"] = [{"@type": FCM_ERROR, "errorCode": fcm_code}]
    return reply(status, {"error": error})


def _bad_request(field: str, description: str) -> Response:
    error = {
        "code": 400,
        "message": description,
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": description}],
            }
        ],
    }
    return reply(400, {"error": error})
