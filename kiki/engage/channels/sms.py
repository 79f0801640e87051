"""SMS through Twilio's Programmable Messaging REST API (2010-04-01).

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To`, `From` (or
`MessagingServiceSid`) and `Body`, HTTP basic auth with the Account SID and auth token. A
created message answers 201 with its `sid` (SM...). Errors are
`{"code", "message", "more_info", "status"}`: e.g. 21211 for an invalid `To` number.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from kiki.engage.channels.base import Channel, Outgoing
from kiki.engage.channels.http import HttpChannel, ProviderSettings
from kiki.http import Reply


class TwilioSettings(ProviderSettings):
    base_url: str = "https://api.twilio.com"
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr
    sender: str = Field(description="an E.164 number, or a Messaging Service SID (MG...)")


class TwilioSmsChannel(HttpChannel[TwilioSettings]):
    channel: ClassVar[Channel] = "sms"
    provider = "Twilio"
    credential_hint = "KIKI_TWILIO_ACCOUNT_SID and KIKI_TWILIO_AUTH_TOKEN"

    def error_message(self, reply: Reply) -> str:
        body = reply.body if isinstance(reply.body, dict) else {}
        if "message" in body:
            return f"{body['message']} (error {body.get('code')})"
        return super().error_message(reply)

    async def send(self, message: Outgoing) -> str:
        s = self.settings
        sender_field = "MessagingServiceSid" if s.sender.startswith("MG") else "From"
        reply = await self._call(
            "POST",
            f"/2010-04-01/Accounts/{s.account_sid}/Messages.json",
            data={"To": message.to, sender_field: s.sender, "Body": message.body},
            auth=(s.account_sid, s.auth_token.get_secret_value()),
        )
        return str(reply.body["sid"])
