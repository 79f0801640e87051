"""Push notifications through Firebase Cloud Messaging's HTTP v1 API.

`POST /v1/projects/{project_id}/messages:send` with `Authorization: Bearer <OAuth 2.0 access
token>` and `{"message": {"token", "notification": {"title", "body"}, "data"}}`; success is
`{"name": "projects/{project_id}/messages/{id}"}`. Errors are Google's
`{"error": {"code", "message", "status", "details": [{"@type": ...FcmError, "errorCode"}]}}`:
UNREGISTERED (404) for a token that is no longer valid, INVALID_ARGUMENT (400), QUOTA_EXCEEDED
(429), UNAVAILABLE (503).

The access token is minted from the Firebase project's service account key
(KIKI_FCM_SERVICE_ACCOUNT, the key file's JSON): a JWT signed RS256 by the key is traded at
Google's token endpoint (RFC 7523 jwt-bearer grant) for an hour's token, renewed before it
expires, once for all concurrent sends (kiki.http). A fixed KIKI_FCM_ACCESS_TOKEN still works
for a deployment that mints tokens itself.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, model_validator

from kiki.engage.channels.base import Channel, Outgoing
from kiki.engage.channels.http import HttpChannel, ProviderSettings
from kiki.http import Reply, ServiceAccountGrant, dumps

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


class FcmSettings(ProviderSettings):
    base_url: str = "https://fcm.googleapis.com"
    project_id: str = Field(pattern=r"^[a-z][a-z0-9-]{4,29}$")
    access_token: SecretStr | None = None
    oauth: ServiceAccountGrant | None = Field(None, description="the service account's grant")

    @model_validator(mode="after")
    def _credentials(self) -> FcmSettings:
        if self.access_token is None and self.oauth is None:
            raise ValueError("give the service account (oauth) or an access_token")
        return self


class FcmPushChannel(HttpChannel[FcmSettings]):
    channel: ClassVar[Channel] = "push"
    provider = "FCM"
    credential_hint = (
        "KIKI_FCM_SERVICE_ACCOUNT (a key of a service account allowed to send) or "
        "KIKI_FCM_ACCESS_TOKEN (an OAuth 2.0 token with the firebase.messaging scope)"
    )
    grant_hint = "check KIKI_FCM_SERVICE_ACCOUNT: Google refused its key (revoked or deleted?)"

    def error_message(self, reply: Reply) -> str:
        error = reply.error
        if not error:
            return super().error_message(reply)
        codes = [d.get("errorCode") for d in error.get("details", []) if "errorCode" in d]
        return f"{error.get('message')} ({codes[0] if codes else error.get('status')})"

    async def send(self, message: Outgoing) -> str:
        payload = {
            "message": {
                "token": message.to,
                "notification": {"title": message.subject, "body": message.body},
                "data": {"kiki_message_id": str(message.message_id)},
            }
        }
        reply = await self._call(
            "POST",
            f"/v1/projects/{self.settings.project_id}/messages:send",
            content=dumps(payload),
            headers={
                "Authorization": self._bearer(),
                "Content-Type": "application/json; UTF-8",
            },
        )
        return str(reply.body["name"])
