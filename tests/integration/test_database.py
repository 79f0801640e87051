"""Migrations and API keys against a real PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from kiki import auth
from kiki.db import migrate
from kiki.db.embedded import EmbeddedPostgres, free_port
from kiki.db.pool import connect
from kiki.errors import ConfigError, NotFound, Unauthenticated, Unavailable


def test_migrations_apply_once_in_order_and_are_recorded(fresh_db: str, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    (tmp_path / "0002_b.sql").write_text("CREATE TABLE b (y int REFERENCES a(x));")

    async def scenario() -> None:
        conn = await connect(fresh_db)
        try:
            with pytest.raises(asyncpg.PostgresError):
                await migrate.migrate(conn, migrate.discover(tmp_path))  # b needs a unique key
            # 0001 committed on its own; 0002 rolled back entirely.
            states = await migrate.status(conn, migrate.discover(tmp_path))
            assert [s.applied_at is not None for s in states] == [True, False]
            assert await conn.fetchval("SELECT to_regclass('b')") is None

            (tmp_path / "0002_b.sql").write_text("CREATE TABLE b (y int);")
            applied = await migrate.migrate(conn, migrate.discover(tmp_path))
            assert [m.version for m in applied] == [2]
            assert await migrate.migrate(conn, migrate.discover(tmp_path)) == []

            (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x bigint);")
            with pytest.raises(ConfigError, match="changed after it was applied"):
                await migrate.migrate(conn, migrate.discover(tmp_path))
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_api_keys_authenticate_until_revoked(fresh_db: str) -> None:
    async def scenario() -> None:
        conn = await connect(fresh_db)
        try:
            await migrate.migrate(conn, migrate.discover())
            tenant, key = await auth.create_api_key(conn, "acme", "ci")
            assert (await auth.authenticate(conn, key)).tenant.id == tenant.id
            stored = await conn.fetchval("SELECT key_hash FROM api_keys")
            assert stored == auth.hash_api_key(key) and key not in stored
            (info,) = await auth.list_api_keys(conn, "acme")
            await auth.revoke_api_key(conn, info.prefix)
            with pytest.raises(Unauthenticated):
                await auth.authenticate(conn, key)
            with pytest.raises(NotFound):
                await auth.revoke_api_key(conn, info.prefix)
            with pytest.raises(Unauthenticated, match="missing"):
                await auth.authenticate(conn, None)
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_embedded_postgres_that_cannot_start_says_why(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pgdata", free_port())
    server.start()
    server.stop()
    (server.pgdata / "postgresql.auto.conf").write_text("shared_buffers = 'lots'\n")
    with pytest.raises(Unavailable, match="embedded PostgreSQL did not start") as info:
        server.start()
    assert "shared_buffers" in info.value.message or "server.log" in info.value.message
