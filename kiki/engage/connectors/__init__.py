"""Messaging channels behind one interface: SMTP email, Twilio SMS, FCM push, in-app inbox."""

from __future__ import annotations

import asyncpg
import httpx
from pydantic import SecretStr

from kiki.config import Settings
from kiki.engage.connectors.base import Channel, MessageChannel
from kiki.engage.connectors.email import SmtpChannel, SmtpSettings
from kiki.engage.connectors.inbox import InboxChannel
from kiki.engage.connectors.push import FcmPushChannel, FcmSettings
from kiki.engage.connectors.sms import TwilioSettings, TwilioSmsChannel


def configured_channels(
    settings: Settings, client: httpx.AsyncClient, pool: asyncpg.Pool
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
    if settings.fcm_project_id and settings.fcm_access_token:
        channels["push"] = FcmPushChannel(
            client,
            FcmSettings(
                base_url=settings.fcm_base_url,
                project_id=settings.fcm_project_id,
                access_token=SecretStr(settings.fcm_access_token),
            ),
        )
    return channels
