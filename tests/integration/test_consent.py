"""The consent registry, GDPR export and erasure, and their HTTP routes, against a real
PostgreSQL (a fresh, migrated database per test; no Ray)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from fastapi.testclient import TestClient

from deployments._serve import ServiceRuntime, create_service_api
from deployments.shield.consent import router
from kiki import gdpr
from kiki.auth import Tenant, create_api_key, ensure_tenant
from kiki.config import Settings
from kiki.db import migrate
from kiki.db.pool import connect
from kiki.errors import InvalidInput
from kiki.shield.consent import (
    ConsentRecord,
    Purpose,
    consent_history,
    current_consent,
    filter_audience,
    record_consent,
)
from tests.conftest import SUPPRESSIONS

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def counts(**rows: int) -> dict[str, int]:
    """Rows per registered customer table: the ones named, zero for every other."""
    return {t.table: rows.get(t.table, 0) for t in gdpr.CUSTOMER_TABLES}


Scenario = Callable[[asyncpg.Connection], Awaitable[None]]


def run(url: str, scenario: Scenario) -> None:
    """Run `scenario` on a connection to the migrated database at `url`."""

    async def main() -> None:
        conn = await connect(url)
        try:
            await migrate.migrate(conn, migrate.discover())
            await scenario(conn)
        finally:
            await conn.close()

    asyncio.run(main())


def event(
    customer_id: str,
    purpose: str,
    granted: bool,
    at: datetime | None = None,
    key: str | None = None,
) -> ConsentRecord:
    return ConsentRecord(
        customer_id=customer_id,
        purpose=Purpose(purpose),
        granted=granted,
        source="api",
        recorded_at=at,
        idempotency_key=key,
    )


async def states(conn: asyncpg.Connection, tenant: Tenant, customer_id: str) -> dict[str, bool]:
    current = await current_consent(conn, tenant.id, customer_id)
    return {purpose.value: state.granted for purpose, state in current.items()}


def test_grant_withdraw_regrant_keeps_the_history_and_the_latest_state(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        acme = await ensure_tenant(conn, "acme")
        for hours, granted in ((0, True), (1, False), (2, True)):
            await record_consent(
                conn,
                acme.id,
                [event("c1", "email", granted, T0 + timedelta(hours=hours))],
                SUPPRESSIONS,
            )
        await record_consent(conn, acme.id, [event("c1", "sms", False, T0)], SUPPRESSIONS)

        history = await consent_history(conn, acme.id, "c1")
        assert [(h.purpose, h.granted) for h in history] == [
            (Purpose.EMAIL, True), (Purpose.SMS, False), (Purpose.EMAIL, False),
            (Purpose.EMAIL, True),
        ]  # fmt: skip
        assert await states(conn, acme, "c1") == {"email": True, "sms": False}
        current = await current_consent(conn, acme.id, "c1")
        assert current[Purpose.EMAIL].recorded_at == T0 + timedelta(hours=2)
        assert current[Purpose.EMAIL].source == "api"
        assert Purpose.PUSH not in current  # never recorded = no consent

    run(fresh_db, scenario)


def test_the_latest_recorded_at_wins_even_when_events_arrive_out_of_order(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        acme = await ensure_tenant(conn, "acme")
        # The withdrawal (10:00) reaches us before the older grants from a CRM import.
        await record_consent(
            conn, acme.id, [event("c1", "email", False, T0 + timedelta(hours=1))], SUPPRESSIONS
        )
        await record_consent(
            conn,
            acme.id,
            [event("c1", "email", True, T0), event("c1", "email", True, T0)],
            SUPPRESSIONS,
        )
        assert await states(conn, acme, "c1") == {"email": False}
        history = await consent_history(conn, acme.id, "c1")
        assert [h.granted for h in history] == [True, True, False]

        # Same instant (no recorded_at: the batch shares now()): the later record wins.
        await record_consent(
            conn, acme.id, [event("c2", "sms", True), event("c2", "sms", False)], SUPPRESSIONS
        )
        assert await states(conn, acme, "c2") == {"sms": False}

    run(fresh_db, scenario)


def test_a_retried_batch_is_applied_once(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        acme = await ensure_tenant(conn, "acme")
        batch = [
            event("c1", "email", True, T0, key="import-7:0"),
            event("c1", "email", False, T0 + timedelta(hours=1), key="import-7:1"),
        ]
        assert (await record_consent(conn, acme.id, batch, SUPPRESSIONS)).recorded == 2
        assert (await record_consent(conn, acme.id, batch, SUPPRESSIONS)).recorded == 0
        assert (
            await record_consent(conn, acme.id, [*batch, event("c1", "sms", True)], SUPPRESSIONS)
        ).recorded == 1
        assert len(await consent_history(conn, acme.id, "c1")) == 3
        # The key is per tenant: another tenant may use the same one.
        other = await ensure_tenant(conn, "other")
        assert (await record_consent(conn, other.id, batch, SUPPRESSIONS)).recorded == 2

    run(fresh_db, scenario)


def test_a_future_recorded_at_is_refused_and_the_batch_is_not_stored(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        acme = await ensure_tenant(conn, "acme")
        future = datetime.now(UTC) + timedelta(days=1)
        batch = [event("c1", "email", False), event("c1", "email", True, future)]
        with pytest.raises(InvalidInput, match=r"records\[1\]\.recorded_at .* is in the future"):
            await record_consent(conn, acme.id, batch, SUPPRESSIONS)
        assert await consent_history(conn, acme.id, "c1") == []

    run(fresh_db, scenario)


def test_the_audience_keeps_only_customers_whose_latest_event_grants(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        acme = await ensure_tenant(conn, "acme")
        await record_consent(
            conn,
            acme.id,
            [
                event("granted", "ads_personalization", True, T0),
                event("withdrawn", "ads_personalization", True, T0),
                event("withdrawn", "ads_personalization", False, T0 + timedelta(minutes=1)),
                event("other_purpose", "email", True, T0),
            ],
            SUPPRESSIONS,
        )
        ids = ["unknown", "withdrawn", "granted", "other_purpose", "granted"]
        allowed, denied = await filter_audience(conn, acme.id, ids, Purpose.ADS_PERSONALIZATION)
        assert allowed == ["granted"]
        assert denied == ["unknown", "withdrawn", "other_purpose"]

        many = [f"m{i:05d}" for i in range(5_000)]
        await record_consent(
            conn,
            acme.id,
            [event(c, "push", i % 3 == 0, T0) for i, c in enumerate(many)],
            SUPPRESSIONS,
        )
        allowed, denied = await filter_audience(conn, acme.id, many, Purpose.PUSH)
        assert allowed == many[::3]
        assert len(allowed) + len(denied) == 5_000 and not set(allowed) & set(denied)

    run(fresh_db, scenario)


def test_tenants_never_see_or_touch_each_others_customers(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        acme = await ensure_tenant(conn, "acme")
        beta = await ensure_tenant(conn, "beta")
        await record_consent(conn, acme.id, [event("c1", "email", True, T0)], SUPPRESSIONS)
        await record_consent(conn, beta.id, [event("c1", "email", False, T0)], SUPPRESSIONS)

        assert await states(conn, acme, "c1") == {"email": True}
        assert await states(conn, beta, "c1") == {"email": False}
        assert (await filter_audience(conn, beta.id, ["c1"], Purpose.EMAIL))[0] == []
        assert await gdpr.erase_customer(conn, acme.id, "c1", "cli", SUPPRESSIONS) == counts(
            consent_events=1
        )
        assert await states(conn, beta, "c1") == {"email": False}
        exported = await gdpr.export_customer(conn, beta.id, "c1", "cli")
        assert [r["tenant_id"] for r in exported["consent_events"]] == [str(beta.id)]

    run(fresh_db, scenario)


async def audit_rows(conn: asyncpg.Connection) -> list[dict]:
    rows = await conn.fetch("SELECT * FROM gdpr_audit ORDER BY id")
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


def test_export_returns_every_row_as_json_and_is_audited(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        acme = await ensure_tenant(conn, "acme")
        await record_consent(
            conn,
            acme.id,
            [event("c1", "email", True, T0, key="k1"), event("c1", "sms", False, T0)],
            SUPPRESSIONS,
        )
        await record_consent(conn, acme.id, [event("c2", "email", True, T0)], SUPPRESSIONS)

        exported = await gdpr.export_customer(conn, acme.id, "c1", "AbCd1234")
        rows = exported["consent_events"]
        assert {(r["purpose"], r["granted"]) for r in rows} == {("email", True), ("sms", False)}
        assert rows[0]["recorded_at"] == T0.isoformat()
        assert {r["customer_id"] for r in rows} == {"c1"}
        json.dumps(exported)  # JSON-safe throughout

        (audit,) = await audit_rows(conn)
        assert audit["action"] == "export" and audit["requested_by"] == "AbCd1234"
        assert audit["subject_hash"] == gdpr.subject_hash(acme.id, "c1")
        assert audit["detail"] == {"tables": counts(consent_events=2)}

    run(fresh_db, scenario)


def test_erasure_removes_only_that_customer_and_leaves_a_trail_without_the_id(
    fresh_db: str,
) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        acme = await ensure_tenant(conn, "acme")
        beta = await ensure_tenant(conn, "beta")
        await record_consent(
            conn,
            acme.id,
            [
                event("c1", "email", True, T0),
                event("c1", "push", True, T0),
                event("c2", "sms", True),
            ],
            SUPPRESSIONS,
        )
        await record_consent(conn, beta.id, [event("c1", "email", True, T0)], SUPPRESSIONS)

        assert await gdpr.erase_customer(conn, acme.id, "c1", "cli", SUPPRESSIONS) == counts(
            consent_events=2
        )
        assert await consent_history(conn, acme.id, "c1") == []
        assert len(await consent_history(conn, acme.id, "c2")) == 1
        assert len(await consent_history(conn, beta.id, "c1")) == 1
        assert await gdpr.export_customer(conn, acme.id, "c1", "cli") == {
            t.table: [] for t in gdpr.CUSTOMER_TABLES
        }
        assert await gdpr.erase_customer(conn, acme.id, "c1", "cli", SUPPRESSIONS) == counts(
            consent_events=0
        )

        erase, export, again = await audit_rows(conn)
        assert (erase["action"], export["action"], again["action"]) == ("erase", "export", "erase")
        assert erase["detail"] == {"tables": counts(consent_events=2)}
        assert erase["subject_hash"] == gdpr.subject_hash(acme.id, "c1") != "c1"
        # The trail keeps counts and a digest, never the identifier itself.
        assert "c1" not in json.dumps(erase["detail"]) and len(erase["subject_hash"]) == 64

    run(fresh_db, scenario)


def test_every_registered_table_is_exported_and_erased(
    fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later service's table joins with one registry line, whatever its column names."""
    notes = gdpr.CustomerTable("crm notes", customer_column="client ref", tenant_column="owner")
    monkeypatch.setattr(gdpr, "CUSTOMER_TABLES", (*gdpr.CUSTOMER_TABLES, notes))

    async def scenario(conn: asyncpg.Connection) -> None:
        acme = await ensure_tenant(conn, "acme")
        beta = await ensure_tenant(conn, "beta")
        await conn.execute('CREATE TABLE "crm notes" (owner uuid, "client ref" text, note text)')
        await conn.executemany(
            'INSERT INTO "crm notes" VALUES ($1, $2, $3)',
            [(acme.id, "c1", "vip"), (acme.id, "c2", "new"), (beta.id, "c1", "beta's")],
        )
        await record_consent(conn, acme.id, [event("c1", "email", True, T0)], SUPPRESSIONS)

        exported = await gdpr.export_customer(conn, acme.id, "c1", "cli")
        assert exported["crm notes"] == [{"owner": str(acme.id), "client ref": "c1", "note": "vip"}]
        erased = await gdpr.erase_customer(conn, acme.id, "c1", "cli", SUPPRESSIONS)
        assert erased == {**counts(consent_events=1), "crm notes": 1}
        left = await conn.fetch('SELECT note FROM "crm notes" ORDER BY note')
        assert [r["note"] for r in left] == ["beta's", "new"]

    run(fresh_db, scenario)


def test_consent_history_and_the_audit_trail_are_never_rewritten(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection) -> None:
        acme = await ensure_tenant(conn, "acme")
        await record_consent(conn, acme.id, [event("c1", "email", True, T0)], SUPPRESSIONS)
        await gdpr.export_customer(conn, acme.id, "c1", "cli")
        for sql in (
            "UPDATE consent_events SET granted = false",
            "UPDATE gdpr_audit SET requested_by = 'x'",
            "DELETE FROM gdpr_audit",
        ):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(sql)

    run(fresh_db, scenario)


def test_the_http_routes(fresh_db: str, tmp_path: Path) -> None:
    keys: dict[str, str] = {}

    async def make_keys(conn: asyncpg.Connection) -> None:
        for name in ("acme", "beta"):
            keys[name] = (await create_api_key(conn, name))[1]

    run(fresh_db, make_keys)
    api = create_service_api("shield", "t", "t")
    api.include_router(router)
    api.state.runtime = ServiceRuntime("shield", Settings(database_url=fresh_db, home=tmp_path))
    acme = {"X-API-Key": keys["acme"]}
    beta = {"X-API-Key": keys["beta"]}
    batch = {
        "records": [
            {"customer_id": "c1", "purpose": "email", "granted": True, "source": "web_form",
             "recorded_at": "2026-01-05T09:00:00Z"},
            {"customer_id": "c1", "purpose": "sms", "granted": False, "source": "web_form"},
        ]
    }  # fmt: skip

    with TestClient(api) as client:
        resp = client.post("/api/v1/consent", json=batch)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthenticated"

        retry = {**acme, "Idempotency-Key": "form-42"}
        resp = client.post("/api/v1/consent", json=batch, headers=retry)
        assert resp.status_code == 201 and resp.json() == {"recorded": 2, "suppressed": 0}
        again = client.post("/api/v1/consent", json=batch, headers=retry).json()
        assert again == {"recorded": 0, "suppressed": 0}

        resp = client.get("/api/v1/consent/c1", headers=acme)
        assert resp.status_code == 200
        body = resp.json()
        assert body["customer_id"] == "c1" and len(body["history"]) == 2
        assert body["purposes"]["email"]["granted"] is True
        assert body["purposes"]["email"]["recorded_at"] == "2026-01-05T09:00:00Z"
        assert body["purposes"]["sms"]["granted"] is False

        resp = client.get("/api/v1/consent/c1", headers=beta)
        assert resp.status_code == 404
        assert resp.json() == {
            "error": {"code": "not_found", "message": "no consent recorded for customer 'c1'"}
        }

        resp = client.post(
            "/api/v1/consent/audience",
            json={"purpose": "email", "customer_ids": ["c1", "c9"]},
            headers=acme,
        )
        assert resp.json() == {"purpose": "email", "allowed": ["c1"], "denied": ["c9"]}

        first = batch["records"][0]
        bad = {
            "purpose": {"records": [{**first, "purpose": "telepathy"}]},
            "recorded_at": {"records": [{**first, "recorded_at": "2026-01-05T09:00:00"}]},
            "records": {"records": []},
        }
        for field, body in bad.items():
            resp = client.post("/api/v1/consent", json=body, headers=acme)
            assert resp.status_code == 422, field
            error = resp.json()["error"]
            assert error["code"] == "invalid_input" and field in error["message"]
        resp = client.post(
            "/api/v1/consent/audience", json={"purpose": "email", "customer_ids": []}, headers=acme
        )
        assert resp.status_code == 422 and "customer_ids" in resp.json()["error"]["message"]
        future = {"records": [{**batch["records"][1], "recorded_at": "2999-01-01T00:00:00Z"}]}
        resp = client.post("/api/v1/consent", json=future, headers=acme)
        assert resp.status_code == 400 and "in the future" in resp.json()["error"]["message"]

        resp = client.get("/api/v1/gdpr/customers/c1/export", headers=acme)
        assert resp.status_code == 200 and len(resp.json()["consent_events"]) == 2
        resp = client.delete("/api/v1/gdpr/customers/c1", headers=acme)
        assert resp.status_code == 200 and resp.json() == {"erased": counts(consent_events=2)}
        assert client.get("/api/v1/consent/c1", headers=acme).status_code == 404
        assert client.delete("/api/v1/gdpr/customers/c1").status_code == 401
        # Suppressed: a later consent batch goes in without the erased customer.
        mixed = {"records": [{**first, "recorded_at": None}, {**first, "customer_id": "c2"}]}
        resp = client.post("/api/v1/consent", json=mixed, headers=acme)
        assert resp.status_code == 201 and resp.json() == {"recorded": 1, "suppressed": 1}
        assert client.get("/api/v1/consent/c1", headers=acme).status_code == 404

        paths = client.get("/openapi.json").json()["paths"]
        assert {"/api/v1/consent", "/api/v1/gdpr/customers/{customer_id}"} <= set(paths)

    async def check_trail(conn: asyncpg.Connection) -> None:
        rows = await audit_rows(conn)
        assert [r["action"] for r in rows] == ["export", "erase"]
        assert {r["requested_by"] for r in rows} == {keys["acme"].split("_")[1]}

    run(fresh_db, check_trail)
