"""Push notifications through Firebase Cloud Messaging's HTTP v1 API.

`POST /v1/projects/{project_id}/messages:send` with `Authorization: Bearer <OAuth 2.0 access
token>` and `{"message": {"token", "notification": {"title", "body"}, "data"}}`; success is
`{"name": "projects/{project_id}/messages/{id}"}`. Errors are Google's
`{"error": {"code", "message", "status", "details": [{"@type": ...FcmError, "errorCode"}]}}`:
UNREGISTERED (404) for a token that is no longer valid, INVALID_ARGUMENT (400), QUOTA_EXCEEDED
(429), UNAVAILABLE (503).

The access token is configured (KIKI_FCM_ACCESS_TOKEN): minting it from a service account is
left to the deployment (e.g. a sidecar that refreshes it), as the platform keeps no key files.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from kiki.engage.channels.base import Channel, Outgoing
from kiki.engage.channels.http import HttpChannel, ProviderSettings
from kiki.http import Reply, dumps


class FcmSettings(ProviderSettings):
    base_url: str = "https://fcm.googleapis.com"
    project_id: str = Field(pattern=r"^[a-z][a-z0-9-]{4,29}$")
    access_token: SecretStr


class FcmPushChannel(HttpChannel[FcmSettings]):
    channel: ClassVar[Channel] = "push"
    provider = "FCM"
    credential_hint = "KIKI_FCM_ACCESS_TOKEN (an OAuth 2.0 token with the firebase.messaging scope)"

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
                "Authorization": f"Bearer {self.settings.access_token.get_secret_value()}",
                "Content-Type": "application/json; UTF-8",
            },
        )
        return str(reply.body["name"])
