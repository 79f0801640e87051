"""CRM credentials encrypted at rest in the real PostgreSQL: the row holds Fernet tokens,
answers mask them, a sync opens them; a row stored before encryption still syncs and is
sealed on that read; under another key the scheduled round names the source and goes on
with the others. No Ray."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet

from kiki.artifacts import ArtifactStore
from kiki.auth import ensure_tenant
from kiki.config import Settings
from kiki.db import migrate
from kiki.db.pool import create_pool
from kiki.engage import messaging
from kiki.engage.crm import sources
from kiki.engage.schedule import run_round
from kiki.errors import ConfigError, InvalidInput
from kiki.vault import Vault, is_token
from tests.integration.test_engage_crm_sync import CRM_SCHEMA, migrated

SCHEMA = (
    "CREATE SCHEMA crm;" + CRM_SCHEMA + "INSERT INTO crm.people VALUES "
    "(1, 'kim@example.com', NULL, 'Kim', '2026-02-01Z');"
)


def test_credentials_are_sealed_opened_for_a_sync_and_migrated(
    fresh_db: str, tmp_path: Path
) -> None:
    vault = Vault.from_settings(Settings(home=tmp_path))
    pg = {"url": fresh_db, "contacts_table": "crm.people", "orders_table": "crm.sales"}
    hub = {"access_token": "pat-na1-secret"}

    async def scenario() -> None:
        pool = await create_pool(fresh_db, min_size=1, max_size=3)
        try:
            tenant = await migrated(pool, "vaulted")
            async with pool.acquire() as conn:
                await conn.execute(SCHEMA)
                shown = await sources.put(conn, tenant.id, "postgres", pg, True, vault)
                assert shown.config["url"] == "***"
                await sources.put(conn, tenant.id, "hubspot", hub, True, vault)
                raw = await conn.fetchval(
                    "SELECT config::text FROM engage_crm_sources WHERE source = 'hubspot'"
                )
                assert "pat-na1-secret" not in raw and is_token(json.loads(raw)["access_token"])
                assert [s.config.get("access_token") for s in await sources.listed(
                    conn, tenant.id)] == ["***", None]  # fmt: skip
                assert await sources.stored(conn, tenant.id, "hubspot", vault) == (
                    "hubspot", {"access_token": "pat-na1-secret",
                                "base_url": "https://api.hubapi.com", "timeout_s": 15.0},
                )  # fmt: skip
                with pytest.raises(InvalidInput, match="hubspot settings: access_token"):
                    await sources.put(conn, tenant.id, "hubspot", {}, True, vault)

                # a row from before encryption: read as plain, sealed by that read
                await conn.execute(
                    "UPDATE engage_crm_sources SET config = $1 WHERE source = 'postgres'",
                    json.dumps(pg),
                )
                assert (await sources.stored(conn, tenant.id, "postgres", vault))[1] == pg
                raw = await conn.fetchval(
                    "SELECT config FROM engage_crm_sources WHERE source = 'postgres'"
                )
                assert is_token(json.loads(raw)["url"])
                assert json.loads(raw)["contacts_table"] == "crm.people"
                assert (await sources.stored(conn, tenant.id, "postgres", vault))[1] == pg

            # another key: the round names the source it cannot open and syncs the others
            other = Vault(Fernet.generate_key(), "test")
            async with pool.acquire() as conn:
                await conn.execute(
                    "UPDATE engage_crm_sources SET config = $1 WHERE source = 'hubspot'",
                    json.dumps({"access_token": other.seal("pat-x")}),
                )
                with pytest.raises(ConfigError, match="hubspot CRM source's access_token"):
                    await sources.stored(conn, tenant.id, "hubspot", vault)
            async with httpx.AsyncClient() as client:
                store = ArtifactStore.from_settings(Settings(home=tmp_path))
                report = await run_round(
                    pool, client, vault, {}, messaging.Caps(), date(2026, 3, 1), store
                )
            assert [(s.source, s.customers_created) for s in report.syncs] == [("postgres", 1)]
            (error,) = report.errors
            assert error.startswith(f"{tenant.id} hubspot: the hubspot CRM source's access_token")
            assert "KIKI_SECRET_KEY" in error
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_sealing_keeps_every_setting(fresh_db: str, tmp_path: Path) -> None:
    """Non-secret settings stay readable in the row (base_url, api_version ...); a connected
    app's refresh token and secret are sealed like an access token."""
    vault = Vault.from_settings(Settings(home=tmp_path, secret_key=Fernet.generate_key().decode()))
    config = {"base_url": "https://acme.my.salesforce.com", "refresh_token": "5Aep-rt",
              "client_id": "3MVG9-app", "client_secret": "app-secret", "api_version": "61.0",
              "currency": "EUR"}  # fmt: skip

    async def scenario() -> None:
        conn = await asyncpg.connect(fresh_db)
        try:
            await migrate.migrate(conn, migrate.discover())
            tenant = await ensure_tenant(conn, "sf")
            saved = await sources.put(conn, tenant.id, "salesforce", config, False, vault)
            assert (saved.enabled, saved.config["api_version"]) == (False, "61.0")
            row = await conn.fetchval("SELECT config::text FROM engage_crm_sources")
            assert "5Aep-rt" not in row and "app-secret" not in row and "3MVG9-app" in row
            opened = await sources.stored(conn, tenant.id, "salesforce", vault)
            unset = {"access_token": "", "login_url": None, "timeout_s": 15.0}
            assert opened == ("salesforce", config | unset)
            assert await sources.due(conn) == []  # disabled: not synced on schedule
        finally:
            await conn.close()

    asyncio.run(scenario())
