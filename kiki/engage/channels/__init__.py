"""Messaging channels behind one interface: SMTP email, Twilio SMS, FCM push, in-app inbox."""

from __future__ import annotations

import json
from typing import Protocol

import asyncpg
import httpx
from pydantic import SecretStr

from kiki.engage.channels.base import Channel, MessageChannel
from kiki.engage.channels.email import SmtpChannel, SmtpSettings
from kiki.engage.channels.inbox import InboxChannel
from kiki.engage.channels.push import SCOPE, FcmPushChannel, FcmSettings
from kiki.engage.channels.sms import TwilioSettings, TwilioSmsChannel
from kiki.http import ServiceAccountGrant


class ChannelSettings(Protocol):
    """What the channels are configured from: `kiki.config.Settings` has these fields, and so
    has a Serve replica's settings with its app's args in place."""

    @property
    def smtp_host(self) -> str | None: ...
    @property
    def smtp_port(self) -> int: ...
    @property
    def smtp_sender(self) -> str: ...
    @property
    def smtp_username(self) -> str | None: ...
    @property
    def smtp_password(self) -> str | None: ...
    @property
    def smtp_starttls(self) -> bool: ...
    @property
    def twilio_base_url(self) -> str: ...
    @property
    def twilio_account_sid(self) -> str | None: ...
    @property
    def twilio_auth_token(self) -> str | None: ...
    @property
    def twilio_sender(self) -> str | None: ...
    @property
    def fcm_base_url(self) -> str: ...
    @property
    def fcm_project_id(self) -> str | None: ...
    @property
    def fcm_access_token(self) -> str | None: ...
    @property
    def fcm_service_account(self) -> str | None: ...


def configured_channels(
    settings: ChannelSettings, client: httpx.AsyncClient, pool: asyncpg.Pool
) -> dict[Channel, MessageChannel]:
    """The channels whose settings are present: in-app always, the others when configured."""
    channels: dict[Channel, MessageChannel] = {"in_app": InboxChannel(pool)}
    if settings.smtp_host:
        channels["email"] = SmtpChannel(
            SmtpSettings(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_sender,
                username=settings.smtp_username,
                password=SecretStr(settings.smtp_password) if settings.smtp_password else None,
                starttls=settings.smtp_starttls,
            )
        )
    if settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_sender:
        channels["sms"] = TwilioSmsChannel(
            client,
            TwilioSettings(
                base_url=settings.twilio_base_url,
                account_sid=settings.twilio_account_sid,
                auth_token=SecretStr(settings.twilio_auth_token),
                sender=settings.twilio_sender,
            ),
        )
    if settings.fcm_project_id and (settings.fcm_service_account or settings.fcm_access_token):
        key = settings.fcm_service_account
        channels["push"] = FcmPushChannel(
            client,
            FcmSettings(
                base_url=settings.fcm_base_url,
                project_id=settings.fcm_project_id,
                access_token=SecretStr(settings.fcm_access_token)
                if settings.fcm_access_token
                else None,
                oauth=ServiceAccountGrant.from_key_file(json.loads(key), SCOPE) if key else None,
            ),
        )
    return channels
