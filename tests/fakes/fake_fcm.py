"""FAKE of Firebase Cloud Messaging's HTTP v1 API (not Google): sending to a device token.

Checked as FCM does: a Bearer access token (401 UNAUTHENTICATED), the project in the path
(404 NOT_FOUND / SENDER_ID_MISMATCH for another project), a JSON body with one `message`
naming exactly one target, string-only `data` values (400 INVALID_ARGUMENT with a BadRequest
field violation), and the token: a registered one is delivered, a malformed one is
INVALID_ARGUMENT, a well-formed unknown one UNREGISTERED (404). Answers
`{"name": "projects/{project}/messages/{id}"}`.

`serve_google_oauth` adds Google's OAuth 2.0 token endpoint for service accounts (RFC 7523):
grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer and an `assertion` JWT that must be
RS256-signed by the account's key (checked against its public key), issued by its
client_email, addressed (`aud`) to the token URL, asking a scope, and live at most an hour
(iat/exp on the fake's clock). Answers `{access_token, expires_in, token_type}` with tokens
that expire after `lifetime_s`, or Google's `{error, error_description}` (400 invalid_grant,
invalid_scope, unsupported_grant_type).
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from google.auth import crypt

from tests.fakes.ad_platforms import Failure, FakeApi, bearer, parse_json, reply

TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class FakeFcm(FakeApi):
    """FAKE FCM. Register device tokens in `devices`; `delivered` holds what reached them."""

    def __init__(self, *, project_id: str, access_token: str | None = None) -> None:
        self.project_id = project_id
        self.access_token = access_token
        self.devices: set[str] = set()
        self.delivered: list[dict[str, Any]] = []
        super().__init__()

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/v1/projects/{project}/messages:send")
        async def send(project: str, request: Request) -> Response:
            fixed = self.access_token is not None and bearer(request) == self.access_token
            if not (fixed or self.token_live(request)):
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

    def serve_google_oauth(
        self, *, client_email: str, public_key_pem: str, token_url: str, lifetime_s: int = 3600
    ) -> None:
        path = token_url.split("://", 1)[1].partition("/")[2]

        @self.app.post(f"/{path}")
        async def token(request: Request) -> Response:
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            if form.get("grant_type") != JWT_BEARER:
                return _oauth_error("unsupported_grant_type", "Invalid grant_type")
            claims = _verified(form.get("assertion", ""), public_key_pem)
            if claims is None:
                return _oauth_error("invalid_grant", "Invalid JWT Signature.")
            if claims.get("iss") != client_email:
                return _oauth_error("invalid_grant", "Invalid grant: account not found")
            if claims.get("aud") != token_url:
                return _oauth_error("invalid_grant", "Invalid JWT: audience mismatch")
            now = self.now().timestamp()
            iat, exp = claims.get("iat"), claims.get("exp")
            if (
                not isinstance(iat, int)
                or not isinstance(exp, int)
                or exp - iat > 3600
                or not iat - 300 <= now < exp
            ):
                return _oauth_error(
                    "invalid_grant",
                    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                    "reasonable timeframe. Check your iat and exp values in the JWT claim.",
                )
            if not claims.get("scope"):
                return _oauth_error("invalid_scope", "Empty or missing scope not allowed.")
            access = self.issue_token(lifetime_s, prefix="ya29.")
            return reply(
                200, {"access_token": access, "expires_in": lifetime_s, "token_type": "Bearer"}
            )

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


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _verified(assertion: str, public_key_pem: str) -> dict[str, Any] | None:
    """The JWT's claims when it is RS256 and its signature matches the key, else None."""
    try:
        header, payload, signature = assertion.split(".")
        if json.loads(_b64(header)).get("alg") != "RS256":
            return None
        verifier = crypt.RSAVerifier.from_string(public_key_pem)
        if not verifier.verify(f"{header}.{payload}".encode(), _b64(signature)):
            return None
        claims = json.loads(_b64(payload))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def _oauth_error(error: str, description: str) -> Response:
    return reply(400, {"error": error, "error_description": description})
