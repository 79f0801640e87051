"""Schema migrations: ordered `migrations/NNNN_name.sql`, each applied once in its own
transaction and recorded with a checksum, so an edited migration is caught, not re-run."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import asyncpg

from kiki.db.pool import connect
from kiki.errors import ConfigError

_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it keeps two processes from migrating the same database at once.
_LOCK_ID = 0x6B696B69

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationState:
    migration: Migration
    applied_at: datetime | None


def default_dir() -> Path:
    return Path(str(resources.files("kiki.db") / "migrations"))


def discover(directory: Path | None = None) -> list[Migration]:
    """Migrations in version order; a malformed name or a duplicate version is an error."""
    directory = directory or default_dir()
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _NAME_RE.match(path.name)
        if not match:
            raise ConfigError(f"migration file {path.name} must be named NNNN_lower_snake.sql")
        version = int(match.group(1))
        if version in found:
            raise ConfigError(f"two migrations share version {version:04d}: rename one")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


async def status(conn: asyncpg.Connection, migrations: list[Migration]) -> list[MigrationState]:
    await conn.execute(_CREATE_TABLE)
    rows = await conn.fetch("SELECT version, checksum, applied_at FROM schema_migrations")
    applied = {r["version"]: r for r in rows}
    for m in migrations:
        row = applied.get(m.version)
        if row and row["checksum"] != m.checksum:
            raise ConfigError(
                f"migration {m.version:04d}_{m.name} changed after it was applied; "
                "add a new migration instead of editing an applied one"
            )
    return [
        MigrationState(m, applied[m.version]["applied_at"] if m.version in applied else None)
        for m in migrations
    ]


async def migrate(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply the pending migrations in order; return those applied by this call."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        pending = [s.migration for s in await status(conn, migrations) if s.applied_at is None]
        for m in pending:
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version, m.name, m.checksum,
                )  # fmt: skip
        return pending
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def migrate_url(url: str) -> list[Migration]:
    """Apply every pending migration to the database at `url`; returns those applied."""
    conn = await connect(url)
    try:
        return await migrate(conn, discover())
    finally:
        await conn.close()
