"""Messaging end to end below HTTP: real PostgreSQL, real SMTP delivery to a local aiosmtpd
server (read back), Twilio and FCM fakes, the consent registry, caps and idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from pydantic import SecretStr

from kiki.auth import ensure_tenant
from kiki.db import migrate
from kiki.db.pool import create_pool
from kiki.engage import messaging
from kiki.engage.channels.base import Channel, MessageChannel
from kiki.engage.channels.email import SmtpChannel, SmtpSettings
from kiki.engage.channels.inbox import InboxChannel
from kiki.engage.channels.push import FcmPushChannel, FcmSettings
from kiki.engage.channels.sms import TwilioSettings, TwilioSmsChannel
from kiki.errors import Conflict
from kiki.shield.consent import ConsentRecord, Purpose, record_consent
from tests.conftest import SUPPRESSIONS, SmtpServer
from tests.fakes.fake_fcm import FakeFcm
from tests.fakes.fake_twilio import FakeTwilio

SID, TOKEN = "AC" + "a" * 32, "twilio-secret"
DEVICE = "device-token-" + "x" * 20


async def personalize(customer_id: str, profile: messaging.Profile | None) -> dict[str, Any]:
    return {
        "personalized": True,
        "first_name": profile.first_name if profile else None,
        "days_since_last": 40,
        "churn_risk": 0.82,
        "ltv": "120.5",
        "currency": "USD",
    }


Scenario = Callable[
    [asyncpg.Pool, UUID, dict[Channel, MessageChannel], FakeTwilio, FakeFcm], Awaitable[None]
]


def run(pg_url: str, smtp: SmtpServer, scenario: Scenario) -> None:
    async def main() -> None:
        pool = await create_pool(pg_url, min_size=1, max_size=4)
        try:
            async with pool.acquire() as conn:
                await migrate.migrate(conn, migrate.discover())
                tenant = await ensure_tenant(conn, "engage_messages")
                for customer in ("cust_123", "cust_9"):
                    await messaging.upsert_profile(
                        conn,
                        tenant.id,
                        customer,
                        messaging.ProfileIn(
                            email=f"{customer}@example.com",
                            phone="+14155550100",
                            push_token=DEVICE,
                            first_name="Ada",
                        ),
                        SUPPRESSIONS,
                    )
                await record_consent(
                    conn,
                    tenant.id,
                    [
                        ConsentRecord(customer_id="cust_123", purpose=p, granted=True, source="t")
                        for p in (Purpose.EMAIL, Purpose.SMS, Purpose.PUSH)
                    ],
                    SUPPRESSIONS,
                )
            twilio = FakeTwilio(account_sid=SID, auth_token=TOKEN)
            fcm = FakeFcm(project_id="kiki-test", access_token="fcm-token")
            fcm.devices.add(DEVICE)
            channels: dict[Channel, MessageChannel] = {
                "email": SmtpChannel(
                    SmtpSettings(host=smtp.host, port=smtp.port, sender="shop@kiki.test")
                ),
                "sms": TwilioSmsChannel(
                    twilio.client("https://api.twilio.com"),
                    TwilioSettings(
                        account_sid=SID, auth_token=SecretStr(TOKEN), sender="+14155550199"
                    ),
                ),
                "push": FcmPushChannel(
                    fcm.client("https://fcm.googleapis.com"),
                    FcmSettings(project_id="kiki-test", access_token=SecretStr("fcm-token")),
                ),
                "in_app": InboxChannel(pool),
            }
            await scenario(pool, tenant.id, channels, twilio, fcm)
        finally:
            await pool.close()

    asyncio.run(main())


def request(**fields: Any) -> messaging.MessageRequest:
    base = {"customer_id": "cust_123", "channel": "email", "template": "win_back"}
    return messaging.MessageRequest(**{**base, **fields})


def test_email_is_delivered_over_smtp_once_per_key(fresh_db: str, smtp_server: SmtpServer) -> None:
    async def scenario(pool, tenant, channels, twilio, fcm) -> None:  # type: ignore[no-untyped-def]
        caps = messaging.Caps()
        seed = request(personalization=True, idempotency_key="wb-1")
        sent, new = await messaging.send_message(
            pool, tenant, seed, channels, personalize, caps, SUPPRESSIONS
        )
        assert (sent.status, new) == ("sent", True)
        (mail,) = smtp_server.messages
        assert mail["To"] == "cust_123@example.com" and mail["From"] == "shop@kiki.test"
        assert mail["Subject"] == "Ada, we miss you"
        text = mail.get_content()
        assert "Hi Ada, it has been 40 days" in text and "just for you" in text  # risk 0.82
        assert mail["Message-ID"] == sent.provider_id
        again, new = await messaging.send_message(
            pool, tenant, seed, channels, personalize, caps, SUPPRESSIONS
        )
        assert (again.message_id, new, len(smtp_server.messages)) == (sent.message_id, False, 1)
        with pytest.raises(Conflict, match="used for another message"):
            await messaging.send_message(
                pool, tenant, request(channel="sms", idempotency_key="wb-1"), channels,
                personalize, caps, SUPPRESSIONS,
            )  # fmt: skip
        plain, _ = await messaging.send_message(
            pool, tenant, request(personalization=False), channels, personalize, caps, SUPPRESSIONS
        )
        assert plain.subject == "We miss you" and "Ada" not in (plain.body or "")

    run(fresh_db, smtp_server, scenario)


def test_no_consent_no_address_and_caps_are_refused_with_reasons(
    fresh_db: str, smtp_server: SmtpServer
) -> None:
    async def scenario(pool, tenant, channels, twilio, fcm) -> None:  # type: ignore[no-untyped-def]
        caps = messaging.Caps(per_day=2)
        no_consent, _ = await messaging.send_message(
            pool, tenant, request(customer_id="cust_9"), channels, personalize, caps, SUPPRESSIONS
        )
        assert no_consent.status == "refused" and "no email consent" in (no_consent.reason or "")
        async with pool.acquire() as conn:
            await record_consent(
                conn, tenant,
                [ConsentRecord(customer_id="cust_9", purpose=Purpose.SMS, granted=False,
                               source="sms_stop")], SUPPRESSIONS,
            )  # fmt: skip
        withdrawn, _ = await messaging.send_message(
            pool,
            tenant,
            request(customer_id="cust_9", channel="sms"),
            channels,
            personalize,
            caps,
            SUPPRESSIONS,
        )
        assert "withdrew sms consent" in (withdrawn.reason or "")
        nobody, _ = await messaging.send_message(
            pool, tenant, request(customer_id="ghost", channel="in_app"), channels, personalize,
            caps, SUPPRESSIONS,
        )  # fmt: skip
        assert nobody.status == "sent"  # in-app needs no opt-in and no address
        statuses = [
            (
                await messaging.send_message(
                    pool, tenant, request(), channels, personalize, caps, SUPPRESSIONS
                )
            )[0]
            for _ in range(3)
        ]
        assert [s.status for s in statuses] == ["sent", "sent", "refused"]
        assert "frequency cap: 2 messages" in (statuses[2].reason or "")
        assert len(smtp_server.messages) == 2
        async with pool.acquire() as conn:
            log = await messaging.messages(conn, tenant, "cust_123", None, 10)
        assert [m.status for m in log] == ["refused", "sent", "sent"]

    run(fresh_db, smtp_server, scenario)


def test_sms_push_and_in_app_through_their_providers(
    fresh_db: str, smtp_server: SmtpServer
) -> None:
    async def scenario(pool, tenant, channels, twilio, fcm) -> None:  # type: ignore[no-untyped-def]
        caps = messaging.Caps(per_day=10)
        twilio.fail_next("throttle")
        key = {"idempotency_key": "sms-1"}
        failed, _ = await messaging.send_message(
            pool, tenant, request(channel="sms", **key), channels, personalize, caps, SUPPRESSIONS
        )
        assert failed.status == "failed" and "Twilio throttled" in (failed.reason or "")
        sms, new = await messaging.send_message(
            pool, tenant, request(channel="sms", **key), channels, personalize, caps, SUPPRESSIONS
        )
        assert (sms.status, sms.message_id, new) == ("sent", failed.message_id, True)  # retried
        (delivered,) = twilio.sent
        assert delivered["to"] == "+14155550100" and delivered["sid"] == sms.provider_id
        assert delivered["body"].startswith("Hi Ada")

        push, _ = await messaging.send_message(
            pool, tenant, request(channel="push", template="vip_thanks"), channels,
            personalize, caps, SUPPRESSIONS,
        )  # fmt: skip
        assert push.status == "sent" and push.provider_id.startswith("projects/kiki-test/")
        assert fcm.delivered[0]["notification"]["body"].startswith("You are one of our best")
        assert "120.5 USD" in fcm.delivered[0]["notification"]["body"]
        fcm.devices.clear()
        gone, _ = await messaging.send_message(
            pool, tenant, request(channel="push"), channels, personalize, caps, SUPPRESSIONS
        )
        assert gone.status == "failed" and "UNREGISTERED" in (gone.reason or "")

        inbox, _ = await messaging.send_message(
            pool, tenant, request(channel="in_app", template="welcome"), channels,
            personalize, caps, SUPPRESSIONS,
        )  # fmt: skip
        async with pool.acquire() as conn:
            (item,) = await messaging.inbox(conn, tenant, "cust_123", 10)
        assert item.message_id == inbox.message_id and item.title == "Welcome, Ada!"

    run(fresh_db, smtp_server, scenario)
