"""The SyncEngage HTTP API, hosted in-process on real PostgreSQL with email delivered to a
local SMTP server and SMS / push to the provider fakes: the seed's calls (churn risk, message,
cohorts), segments CRUD, and the 4xx answers that say what to fix. The same app under Ray
Serve is covered by test_engage_serve.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from deployments._serve import ServiceRuntime
from deployments.engage.app import api
from deployments.engage.context import EngageContext
from kiki.auth import create_api_key, ensure_tenant
from kiki.config import Settings
from kiki.db import migrate
from kiki.db.pool import connect
from kiki.engage import registry
from kiki.engage.churn import MODEL_FEATURES, fit_churn_model
from kiki.engage.rfm import SEGMENTS as RFM_SEGMENTS
from kiki.shield.consent import ConsentRecord, Purpose, record_consent
from kiki.value import transactions
from kiki.vault import is_token
from tests.conftest import SUPPRESSIONS, SmtpServer, store_in
from tests.fakes.fake_fcm import FakeFcm
from tests.fakes.fake_shopify import FakeShopify
from tests.fakes.fake_twilio import FakeTwilio
from tests.unit.test_engage_churn import END, SMALL, simulate

SID = "AC" + "b" * 32
DEVICE = "device-token-" + "y" * 20
AS_OF = END.date().isoformat()

Call = Callable[..., Awaitable[httpx.Response]]


async def purchases_and_churn_model(
    conn: asyncpg.Connection, tenant_id: UUID, models: Path
) -> None:
    """The simulated purchases (order ids `sim-…`) and a small churn model trained on them up
    to END, promoted."""
    history = simulate()
    rows = transactions.from_frame(history.assign(quantity=1), "sim-")
    async with conn.transaction():
        await transactions.insert(conn, tenant_id, rows, SUPPRESSIONS)
    model = fit_churn_model(history[history["ts"] <= END], END, SMALL)
    url = store_in(Settings(home=models), model.save(models / "churn"), "churn")
    await promote_small_churn_model(conn, tenant_id, url)


async def promote_small_churn_model(
    conn: asyncpg.Connection, tenant_id: UUID, artifact_url: str
) -> None:
    """A churn model fitted with SMALL up to END, registered for the tenant and promoted."""
    saved = await registry.register(
        conn,
        tenant_id,
        metrics={},
        feature_schema=list(MODEL_FEATURES),
        config=SMALL.model_dump(),
        calibration_end=END.date(),
        horizon_days=SMALL.horizon_days,
        data_window={},
        artifact_url=artifact_url,
    )
    await registry.promote(conn, tenant_id, saved.version)


async def prepare(url: str, models: Path) -> str:
    """Tenant, purchases, a promoted churn model, a profile and consent; returns an API key."""
    conn = await connect(url)
    try:
        await migrate.migrate(conn, migrate.discover())
        tenant = await ensure_tenant(conn, "engage_api")
        await purchases_and_churn_model(conn, tenant.id, models)
        await record_consent(
            conn,
            tenant.id,
            [
                ConsentRecord(customer_id="cust_123", purpose=p, granted=True, source="test")
                for p in (Purpose.EMAIL, Purpose.SMS, Purpose.PUSH)
            ],
            SUPPRESSIONS,
        )
        return (await create_api_key(conn, "engage_api"))[1]
    finally:
        await conn.close()


def run_app(
    url: str,
    smtp: SmtpServer,
    tmp_path: Path,
    work: Callable[[Call, FakeTwilio, FakeFcm], Any],
    mounts: dict[str, httpx.ASGITransport] | None = None,
) -> None:
    twilio = FakeTwilio(account_sid=SID, auth_token="tw-secret")
    fcm = FakeFcm(project_id="kiki-app", access_token="fcm-secret")
    fcm.devices.add(DEVICE)
    settings = Settings(
        home=tmp_path,
        database_url=url,
        auth_cache_ttl_s=0,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_sender="news@kiki.test",
        twilio_account_sid=SID,
        twilio_auth_token="tw-secret",
        twilio_sender="+14155550199",
        fcm_project_id="kiki-app",
        fcm_access_token="fcm-secret",
        engage_cap_per_day=4,
    )

    async def main() -> None:
        key = await prepare(url, tmp_path)
        runtime = ServiceRuntime("engage", settings)
        providers = httpx.AsyncClient(
            mounts={
                "https://api.twilio.com": httpx.ASGITransport(app=twilio.app),
                "https://fcm.googleapis.com": httpx.ASGITransport(app=fcm.app),
                **(mounts or {}),
            }
        )
        api.state.runtime = runtime
        async with (
            api.router.lifespan_context(api),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=api),
                base_url="http://engage",
                headers={"X-API-Key": key},
            ) as client,
        ):
            # The app's context, with a client that reaches the provider fakes.
            runtime.context = EngageContext.of(runtime.pool, settings, providers)
            await work(client.request, twilio, fcm)
        api.state.runtime = None

    asyncio.run(main())


def test_churn_risk_cohorts_and_segments(
    fresh_db: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    async def work(call: Call, twilio: FakeTwilio, fcm: FakeFcm) -> None:
        r = await call("GET", "/api/v1/churn-risk", params={"threshold": 0.7, "as_of": AS_OF})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["model_version"] == 1 and page["total"] >= len(page["customers"]) > 0
        risks = [c["churn_risk"] for c in page["customers"]]
        assert risks == sorted(risks, reverse=True) and min(risks) >= 0.7
        first = page["customers"][0]
        assert first["reasons"] and first["reasons"][0]["contribution"] > 0
        assert first["ltv"] is None and "kiki train ltv" in page["ltv_unavailable"]
        assert date.fromisoformat(first["last_purchase"]) <= END.date()
        params = {"threshold": 0.7, "as_of": AS_OF, "limit": 2, "offset": 2}
        second = (await call("GET", "/api/v1/churn-risk", params=params)).json()
        assert [c["customer_id"] for c in second["customers"]] == [
            c["customer_id"] for c in page["customers"][2:4]
        ]
        bad = await call("GET", "/api/v1/churn-risk", params={"threshold": 7})
        assert bad.status_code == 422 and "threshold" in bad.json()["error"]["message"]

        r = await call("GET", "/api/v1/cohorts", params={"cohort_id": "cohort_jan_2024"})
        assert r.status_code == 200, r.text
        jan = r.json()
        assert jan["cohort_id"] == "cohort_jan_2024" and jan["retention"][0] == 1.0
        assert set(jan["revenue"]) == {"USD"}
        listed = (await call("GET", "/api/v1/cohorts", params={"as_of": AS_OF})).json()
        assert [c["cohort_id"] for c in listed["cohorts"]][:2] == [
            "cohort_jan_2024",
            "cohort_feb_2024",
        ]
        wrong = await call("GET", "/api/v1/cohorts", params={"cohort_id": "2024-01"})
        assert wrong.status_code == 400 and "cohort_jan_2026" in wrong.json()["error"]["message"]

        rule = {"all": [{"field": "days_since_last", "op": ">=", "value": 60}]}
        lapsed = {"segment_id": "lapsed", "name": "Lapsed", "rule": rule}
        made = await call("POST", "/api/v1/segments", json=lapsed)
        assert made.status_code == 201, made.text
        again = await call(
            "POST", "/api/v1/segments", json={"segment_id": "lapsed", "name": "x", "rule": rule}
        )
        assert again.status_code == 409
        members = await call(
            "GET", "/api/v1/segments/lapsed/customers", params={"as_of": AS_OF, "limit": 5}
        )
        assert members.status_code == 200 and members.json()["total"] > 0
        broken = {"field": "days_since_last", "op": ">=", "value": "soon"}
        r = await call("PUT", "/api/v1/segments/lapsed", json={"name": "x", "rule": broken})
        assert r.status_code == 400 and "a whole number" in r.json()["error"]["message"]
        assert (await call("DELETE", "/api/v1/segments/lapsed")).status_code == 204
        assert (await call("GET", "/api/v1/segments/lapsed")).status_code == 404
        rfm = (await call("GET", "/api/v1/rfm", params={"as_of": AS_OF})).json()
        assert sum(s["customers"] for s in rfm) > page["total"]  # everyone, not just the risky
        assert {s["segment"] for s in rfm} <= set(RFM_SEGMENTS)

    run_app(fresh_db, smtp_server, tmp_path, work)


def test_the_seed_message_over_every_channel(
    fresh_db: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    async def work(call: Call, twilio: FakeTwilio, fcm: FakeFcm) -> None:
        profile = {"email": "ada@example.com", "phone": "+14155550123", "push_token": DEVICE,
                   "first_name": "Ada", "attributes": {"tier": "gold"}}  # fmt: skip
        assert (await call("PUT", "/api/v1/customers/cust_123", json=profile)).status_code == 200
        seed = {"customer_id": "cust_123", "channel": "email", "template": "win_back",
                "personalization": True}  # fmt: skip
        r = await call("POST", "/api/v1/message", json=seed, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 201, r.text
        sent = r.json()
        assert sent["status"] == "sent" and sent["idempotency_key"] == "k1"
        (mail,) = smtp_server.messages
        assert mail["To"] == "ada@example.com" and mail["Subject"] == "Ada, we miss you"
        retry = await call("POST", "/api/v1/message", json=seed, headers={"Idempotency-Key": "k1"})
        assert retry.status_code == 200 and retry.json()["message_id"] == sent["message_id"]
        assert len(smtp_server.messages) == 1

        for channel in ("sms", "push", "in_app"):
            r = await call("POST", "/api/v1/message", json={**seed, "channel": channel})
            assert (r.status_code, r.json()["status"]) == (201, "sent"), r.text
        assert twilio.sent[0]["to"] == "+14155550123"
        assert fcm.delivered[0]["token"] == DEVICE
        inbox = (await call("GET", "/api/v1/inbox/cust_123")).json()
        assert inbox[0]["title"] == "Ada, we miss you"

        stranger = await call("POST", "/api/v1/message", json={**seed, "customer_id": "cust_9"})
        assert stranger.status_code == 201
        assert stranger.json()["status"] == "refused"
        assert "no email consent" in stranger.json()["reason"]
        capped = await call("POST", "/api/v1/message", json=seed)
        assert capped.json()["status"] == "refused" and "frequency cap" in capped.json()["reason"]
        unknown = await call("POST", "/api/v1/message", json={**seed, "template": "nope"})
        assert unknown.status_code == 400 and "win_back" in unknown.json()["error"]["message"]
        bad = await call("POST", "/api/v1/message", json={**seed, "channel": "fax"})
        assert bad.status_code == 422 and "channel" in bad.json()["error"]["message"]
        # Billing's `messages_sent`: four messages went out; the retried email counts once.
        conn = await connect(fresh_db)
        try:
            billed = await conn.fetchval(
                "SELECT sum((properties->>'quantity')::numeric) FROM billing_events "
                "WHERE metric_code = 'messages_sent'"
            )
        finally:
            await conn.close()
        assert billed == 4
        log = (await call("GET", "/api/v1/messages", params={"customer_id": "cust_123"})).json()
        assert [m["status"] for m in log][:2] == ["refused", "sent"]

    run_app(fresh_db, smtp_server, tmp_path, work)


def test_crm_sources_and_retention_rules(
    fresh_db: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    shop = "https://kiki-shop.myshopify.com"
    shopify = FakeShopify(token="shpat_api")
    moment = datetime(2026, 1, 2, 9, tzinfo=UTC)
    shopify.add_customer(42, moment, email="Lee@Example.com", first_name="Lee", phone=None)
    shopify.add_order(7, moment, customer=42, total_price="9.99")

    async def work(call: Call, twilio: FakeTwilio, fcm: FakeFcm) -> None:
        r = await call("PUT", "/api/v1/crm/shopify", json={"config": {"base_url": shop}})
        assert r.status_code == 400 and "access_token" in r.json()["error"]["message"]
        config = {"base_url": shop, "access_token": "shpat_api"}
        r = await call("PUT", "/api/v1/crm/shopify", json={"config": config})
        assert r.status_code == 200 and r.json()["config"]["access_token"] == "***"
        conn = await connect(fresh_db)
        try:  # stored encrypted, with the key generated into $KIKI_HOME
            stored = json.loads(await conn.fetchval("SELECT config FROM engage_crm_sources"))
        finally:
            await conn.close()
        assert is_token(stored["access_token"]) and (tmp_path / "secret.key").exists()
        assert [s["source"] for s in (await call("GET", "/api/v1/crm")).json()] == ["shopify"]
        r = await call("POST", "/api/v1/crm/shopify/sync")
        assert r.status_code == 200, r.text
        assert (r.json()["customers_created"], r.json()["orders_new"]) == (1, 1)
        assert (await call("POST", "/api/v1/crm/shopify/sync")).json()["orders_new"] == 0
        again = (await call("POST", "/api/v1/crm/shopify/sync?full=true")).json()
        assert (again["orders"], again["orders_new"], again["customers_created"]) == (1, 0, 0)
        assert (await call("GET", "/api/v1/customers/shopify-42")).json()["email"] == (
            "lee@example.com"
        )
        assert (await call("POST", "/api/v1/crm/hubspot/sync")).status_code == 404
        assert (await call("POST", "/api/v1/crm/zoho/sync")).status_code == 422

        rule = {"rule_id": "wb", "name": "Win back", "min_churn_risk": 0.95,
                "channel": "in_app", "template": "win_back"}  # fmt: skip
        bad = await call("POST", "/api/v1/rules", json=rule | {"template": "nope"})
        assert bad.status_code == 422 and "unknown template" in bad.text
        assert (await call("POST", "/api/v1/rules", json=rule)).status_code == 201
        assert (await call("POST", "/api/v1/rules", json=rule)).status_code == 409
        params = {"as_of": AS_OF}
        dry = await call("POST", "/api/v1/rules/wb/run", params=params)
        assert dry.status_code == 200, dry.text
        targets = dry.json()["targets"]
        assert targets and {t["outcome"] for t in targets} == {"would_send"}
        assert min(t["churn_risk"] for t in targets) >= 0.95
        assert (await call("GET", "/api/v1/messages")).json() == []
        real = await call("POST", "/api/v1/rules/wb/run", params=params | {"dry_run": "false"})
        assert {t["outcome"] for t in real.json()["targets"]} == {"sent"}
        logged = await call("GET", "/api/v1/messages", params={"limit": 1000})
        assert len(logged.json()) == len(targets)
        again = await call("POST", "/api/v1/rules/wb/run", params=params | {"dry_run": "false"})
        assert {t["outcome"] for t in again.json()["targets"]} == {"already_sent"}
        assert (await call("DELETE", "/api/v1/rules/wb")).status_code == 204
        assert (await call("POST", "/api/v1/rules/wb/run")).status_code == 404

    run_app(fresh_db, smtp_server, tmp_path, work, {shop: httpx.ASGITransport(app=shopify.app)})
