"""Retention rules below HTTP against the real PostgreSQL and a real SMTP server: the dry run
lists who would get what and sends nothing; the real run delivers (read back over SMTP) or
logs the refusal; a rerun in the same period sends nothing; the next period may send again."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import pandas as pd
import pytest

from kiki.auth import ensure_tenant
from kiki.db import migrate
from kiki.db.pool import create_pool
from kiki.engage import messaging, retention
from kiki.engage.channels.base import Channel, MessageChannel
from kiki.engage.channels.email import SmtpChannel, SmtpSettings
from kiki.engage.risk import RiskTable
from kiki.errors import FailedPrecondition
from kiki.shield.consent import ConsentRecord, Purpose, record_consent
from tests.conftest import SUPPRESSIONS, SmtpServer

DAY = date(2026, 3, 31)
BOOK = {  # customer: (churn risk, expected LTV as the model gives it)
    "c_high": (0.91, 250.5),
    "c_poor": (0.88, 20.0),
    "c_safe": (0.20, 900.0),
    "c_noconsent": (0.75, 300.0),
}


def table(day: date, with_ltv: bool = True) -> RiskTable:
    frame = pd.DataFrame(
        {
            "churn_risk": [r for r, _ in BOOK.values()],
            "last_purchase": [day - timedelta(days=40)] * len(BOOK),
            "ltv_expected": [v for _, v in BOOK.values()],
        },
        index=pd.Index(list(BOOK), name="customer_id"),
    )
    if not with_ltv:
        frame = frame.drop(columns="ltv_expected")
    return RiskTable(day, 90, frame, frame[[]])


def test_dry_run_then_real_run_once_per_period(fresh_db: str, smtp_server: SmtpServer) -> None:
    async def scenario() -> None:
        pool = await create_pool(fresh_db, min_size=1, max_size=4)
        try:
            async with pool.acquire() as conn:
                await migrate.migrate(conn, migrate.discover())
                tenant = await ensure_tenant(conn, "retention")
                for customer in BOOK:
                    await messaging.upsert_profile(
                        conn, tenant.id, customer,
                        messaging.ProfileIn(email=f"{customer}@example.com", first_name="Ada"),
                        SUPPRESSIONS,
                    )  # fmt: skip
                await record_consent(
                    conn,
                    tenant.id,
                    [
                        ConsentRecord(
                            customer_id=c, purpose=Purpose.EMAIL, granted=True, source="t"
                        )
                        for c in ("c_high", "c_poor", "c_safe")
                    ],
                    SUPPRESSIONS,
                )
                rule = await retention.create(
                    conn, tenant.id, "win-back-vip",
                    retention.RuleIn(name="VIP win-back", min_churn_risk=0.7, min_ltv="100",
                                     channel="email", template="win_back", period_days=30),
                )  # fmt: skip
            channels: dict[Channel, MessageChannel] = {
                "email": SmtpChannel(
                    SmtpSettings(host=smtp_server.host, port=smtp_server.port, sender="k@kiki.test")
                )
            }
            caps = messaging.Caps()
            period = DAY.toordinal() // 30

            dry = await retention.run(
                pool, tenant.id, rule, table(DAY), channels, caps, SUPPRESSIONS, dry_run=True
            )
            assert [(t.customer_id, t.outcome, t.ltv_micros) for t in dry.targets] == [
                ("c_high", "would_send", 250_500_000),
                ("c_noconsent", "would_send", 300_000_000),
            ]
            assert dry.targets[0].idempotency_key == f"rule:win-back-vip:c_high:{period}"
            assert smtp_server.messages == []
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM engage_messages") == 0

            real = await retention.run(
                pool, tenant.id, rule, table(DAY), channels, caps, SUPPRESSIONS, dry_run=False
            )
            outcomes = {t.customer_id: (t.outcome, t.reason) for t in real.targets}
            assert outcomes["c_high"] == ("sent", None)
            assert outcomes["c_noconsent"][0] == "refused"
            assert "no consent" in (outcomes["c_noconsent"][1] or "")
            (mail,) = smtp_server.messages
            assert mail["To"] == "c_high@example.com" and mail["Subject"] == "Ada, we miss you"
            assert "40 days since your last order" in mail.get_content()

            again = await retention.run(pool, tenant.id, rule, table(DAY + timedelta(days=1)),
                                        channels, caps, SUPPRESSIONS, dry_run=False)  # fmt: skip
            assert {t.customer_id: t.outcome for t in again.targets}["c_high"] == "already_sent"
            assert len(smtp_server.messages) == 1

            later = DAY + timedelta(days=30)
            next_period = await retention.run(pool, tenant.id, rule, table(later), channels,
                                              caps, SUPPRESSIONS, dry_run=True)  # fmt: skip
            assert {t.customer_id: t.outcome for t in next_period.targets}["c_high"] == "would_send"

            with pytest.raises(FailedPrecondition, match="no LTV model"):
                await retention.run(pool, tenant.id, rule, table(DAY, with_ltv=False), channels,
                                    caps, SUPPRESSIONS, dry_run=True)  # fmt: skip
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_rule_input_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown template 'nope'"):
        retention.RuleIn(name="x", channel="email", template="nope")
    with pytest.raises(ValueError, match="min_ltv"):
        retention.RuleIn(name="x", channel="email", template="win_back", min_ltv="1e3")
    assert (
        retention.RuleIn(name="x", channel="sms", template="win_back", min_ltv="0.5").min_ltv_micros
        == 500_000
    )
