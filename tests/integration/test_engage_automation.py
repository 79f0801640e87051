"""The engage automation actor on the running platform (Ray): the engage app starts the one
named detached actor; a round syncs a tenant's PostgreSQL CRM source, idempotently, and
reports a rule it cannot run yet (no churn model) without stopping the round."""

from __future__ import annotations

from datetime import UTC, datetime

import ray

from actors.engage import engage_automation
from kiki.auth import ensure_tenant
from kiki.db.pool import connect
from kiki.engage import retention
from kiki.engage.crm import sources
from kiki.vault import Vault
from tests.integration.conftest import RunningPlatform, run


def test_actor_syncs_crm_and_reports_rules(platform: RunningPlatform) -> None:
    url = platform.database_url

    async def prepare() -> str:
        conn = await connect(url)
        try:
            tenant = await ensure_tenant(conn, "engage_automation")
            await conn.execute(
                """CREATE SCHEMA IF NOT EXISTS auto_crm;
                   CREATE TABLE IF NOT EXISTS auto_crm.people (id int PRIMARY KEY, email text,
                       phone text, first_name text, updated_at timestamptz NOT NULL);
                   CREATE TABLE IF NOT EXISTS auto_crm.sales (id int PRIMARY KEY,
                       contact_id int, occurred_at timestamptz, amount numeric, currency text,
                       updated_at timestamptz NOT NULL)"""
            )
            await conn.execute(
                "INSERT INTO auto_crm.people VALUES (1, 'ray@example.com', NULL, 'Ray', $1), "
                "(2, 'sun@example.com', NULL, 'Sun', $1) ON CONFLICT DO NOTHING",
                datetime(2026, 2, 1, tzinfo=UTC),
            )
            config = {
                "url": url,
                "contacts_table": "auto_crm.people",
                "orders_table": "auto_crm.sales",
            }
            # sealed with the key the platform's processes share ($KIKI_HOME/secret.key)
            vault = Vault.from_settings(platform.settings)
            await sources.put(conn, tenant.id, "postgres", config, True, vault)
            rule = retention.RuleIn(name="wb", channel="in_app", template="win_back")
            await retention.create(conn, tenant.id, "wb", rule)
            return str(tenant.id)
        finally:
            await conn.close()

    tenant_id = run(prepare())
    actor = engage_automation(url, platform.settings)  # the one the engage app started
    first = ray.get(actor.run_once.remote(), timeout=120)
    ours = [s for s in first["syncs"] if s["source"] == "postgres"]
    assert [(s["contacts"], s["customers_created"]) for s in ours] == [(2, 2)]
    assert any(e.startswith(f"{tenant_id} rules: no churn model") for e in first["errors"])
    second = ray.get(actor.run_once.remote(), timeout=120)
    assert [s["customers_created"] for s in second["syncs"] if s["source"] == "postgres"] == [0]
