"""Backup and restore of KIKI's database, with per-table checksums that prove a restore whole.

A logical backup is `pg_dump --format=custom` of one snapshot: the dump and the checksums are
taken inside the same exported snapshot, so the checksums describe exactly the rows in the
dump. The folder (`db.dump` + `backup.json`) goes into the artifact store under
`backups/<UTC time>-dump/<digest>/`, each file's SHA-256 in the store's manifest. A restore
downloads and checks the files, replays the dump in one transaction (all of it or nothing),
and recomputes every table's checksum against the manifest.

The tools are the embedded distribution's own (PostgreSQL 18): they dump any server from 9.2
up to 18 and restore into 18 or older servers' dumps; a newer server is refused with a message.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
from pydantic import BaseModel

from kiki.artifacts import ArtifactStore
from kiki.db import wal
from kiki.db.embedded import POSTGRES_BIN_PATH, EmbeddedPostgres
from kiki.db.pool import connect, redact
from kiki.errors import FailedPrecondition, InvalidInput, Unavailable

INFO = "backup.json"
DUMP = "db.dump"
BACKUPS = "backups"

# Row text must not depend on the session: the same row gives the same text on any server.
_STABLE_TEXT = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 3",
    "SET LOCAL bytea_output = 'hex'",
)
_TABLES = """SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS name
             FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
             ORDER BY 1"""


class TableSum(BaseModel):
    """A table's row count and the sum of its rows' hashes (64 bits of each row's MD5): any
    missing, extra or changed row changes it, in any order, in constant memory."""

    rows: int
    digest: str


class BackupInfo(BaseModel):
    """`backup.json`: what a backup holds and what a restore must find again."""

    format: Literal["pg_dump", "pg_basebackup"] = "pg_dump"
    taken_at: datetime
    database: str
    server_version: str
    server_version_num: int
    tool_version: str
    wal_lsn: str | None
    schema_version: int | None
    tables: dict[str, TableSum]  # empty for a base backup (no one snapshot to sum)


@dataclass(frozen=True)
class Taken:
    url: str
    info: BackupInfo
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Restored:
    info: BackupInfo
    tables: int
    rows: int
    seconds: float


def tool(name: str) -> Path:
    return POSTGRES_BIN_PATH / name


def tool_version(name: str) -> tuple[str, int]:
    """(`18.6`, 18) of one of the embedded distribution's tools."""
    out = subprocess.run(
        [str(tool(name)), "--version"], check=True, capture_output=True, text=True
    ).stdout
    found = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not found:
        raise Unavailable(f"cannot tell the version of {tool(name)} from {out!r}")
    return found.group(0), int(found.group(1))


async def checksums(conn: asyncpg.Connection) -> dict[str, TableSum]:
    """Every table's TableSum, read in the connection's current transaction (the caller's
    snapshot), so all tables are seen at one moment."""
    for statement in _STABLE_TEXT:
        await conn.execute(statement)
    sums = {}
    for name in [r["name"] for r in await conn.fetch(_TABLES)]:
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, COALESCE(sum(('x' || left(md5(t::text), 16))::bit(64)"  # nosec B608
            f"::bigint::numeric), 0)::text AS d FROM {name} AS t"  # name: quote_ident above
        )
        sums[name] = TableSum(rows=row["n"], digest=row["d"])
    return sums


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that gives the password to
    pg_dump / pg_restore (not on their command line, where `ps` would show it)."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is None:
        return url, env
    env["PGPASSWORD"] = unquote(parts.password)  # a URL carries it percent-encoded
    user = parts.username or ""
    netloc = f"{user}@{parts.netloc.rpartition('@')[2]}" if user else parts.netloc.split("@")[-1]
    return urlunsplit(parts._replace(netloc=netloc)), env


async def _run(args: list[str], env: Mapping[str, str], what: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *args, env=dict(env), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode:
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        detail = "; ".join(lines[:3]) or f"exit {proc.returncode}"
        raise Unavailable(f"{what} failed: {detail}")


async def dump(url: str, folder: Path) -> BackupInfo:
    """`pg_dump` the database of `url` into `folder`/db.dump and write `backup.json` with the
    checksums of the same snapshot."""
    conn = await connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            row = await _server(conn, "pg_dump")
            schema = await conn.fetchval(
                "SELECT max(version) FROM schema_migrations"
                if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
                else "SELECT NULL::int"
            )
            sums = await checksums(conn)
            target, env = libpq_target(url)
            # The dump reads the exported snapshot, which lives while this transaction does.
            await _run(
                [str(tool("pg_dump")), "--format=custom", f"--snapshot={snapshot}",
                 "--file", str(folder / DUMP), "--dbname", target],
                env, "pg_dump",
            )  # fmt: skip
    finally:
        await conn.close()
    info = BackupInfo(
        taken_at=row["at"].astimezone(UTC), database=row["db"], server_version=row["version"],
        server_version_num=row["num"], tool_version=tool_version("pg_dump")[0], wal_lsn=row["lsn"],
        schema_version=schema, tables=sums,
    )  # fmt: skip
    (folder / INFO).write_text(info.model_dump_json(indent=1))
    return info


async def _server(conn: asyncpg.Connection, tool_name: str) -> asyncpg.Record:
    """The server's version and WAL position, refused when newer than KIKI's tools."""
    version, major = tool_version(tool_name)
    row = await conn.fetchrow(
        """SELECT clock_timestamp() AS at, current_database() AS db,
                  current_setting('server_version') AS version,
                  current_setting('server_version_num')::int AS num,
                  CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                       ELSE pg_current_wal_lsn() END::text AS lsn"""
    )
    if row["num"] // 10000 > major:
        raise FailedPrecondition(
            f"the server runs PostgreSQL {row['version']}, newer than KIKI's {tool_name} "
            f"{version}: back it up with that server's own {tool_name}"
        )
    return row


async def backup(url: str, store: ArtifactStore, base: bool = False) -> Taken:
    """Dump the database (or, `base`, take a base backup of the whole server for point-in-time
    recovery) and put it into the artifact store; its URL and figures."""
    started = asyncio.get_running_loop().time()
    with tempfile.TemporaryDirectory(prefix="kiki-backup-") as tmp:
        info = await (base_backup(url, Path(tmp)) if base else dump(url, Path(tmp)))
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        stamp = info.taken_at.strftime("%Y%m%dT%H%M%SZ")
        kind = "base" if base else "dump"
        stored = await asyncio.to_thread(store.put_folder, Path(tmp), f"{stamp}-{kind}", BACKUPS)
    return Taken(stored, info, size, asyncio.get_running_loop().time() - started)


async def base_backup(url: str, folder: Path) -> BackupInfo:
    """`pg_basebackup` of the server (tar, compressed, with the WAL it needs) into `folder`.
    Replayed with the archived WAL after it, it restores the server to any later moment."""
    conn = await connect(url)
    try:
        row = await _server(conn, "pg_basebackup")
        target, env = libpq_target(url)
        await _run(
            # gzip level 1: half the time of the default level for a tenth more bytes.
            [str(tool("pg_basebackup")), "--pgdata", str(folder), "--format=tar",
             "--compress=gzip:1", "--wal-method=stream", "--checkpoint=fast", "--no-sync",
             "--dbname", target],
            env, "pg_basebackup",
        )  # fmt: skip
        done = await conn.fetchval("SELECT clock_timestamp()")
    finally:
        await conn.close()
    info = BackupInfo(
        format="pg_basebackup", taken_at=done.astimezone(UTC), database=row["db"],
        server_version=row["version"], server_version_num=row["num"],
        tool_version=tool_version("pg_basebackup")[0], wal_lsn=row["lsn"], schema_version=None,
        tables={},
    )  # fmt: skip
    (folder / INFO).write_text(info.model_dump_json(indent=1))
    return info


def download(backup_url: str, store: ArtifactStore, into: Path) -> BackupInfo:
    """The backup stored at `backup_url`, downloaded into `into` and checked file by file."""
    store.get_folder(
        backup_url, into, f"no backup at {backup_url}: give a URL that `kiki db backup` printed"
    )
    if not (into / INFO).is_file():
        raise InvalidInput(f"{backup_url} is not a KIKI database backup (no {INFO})")
    return BackupInfo.model_validate_json((into / INFO).read_text())


def recover(
    folder: Path,
    server: EmbeddedPostgres,
    wal_store: ArtifactStore,
    until: datetime | None,
    timeout_s: float = 600.0,
) -> Restored:
    """Point-in-time recovery of the embedded server: its data folder replaced by the base
    backup in `folder`, the WAL archived in `wal_store` replayed up to `until` (all when
    None). The server is left running."""
    started = time.monotonic()
    info = BackupInfo.model_validate_json((folder / INFO).read_text())
    if info.format != "pg_basebackup":
        raise InvalidInput("--until needs a base backup (`kiki db backup --base`), not a dump")
    if until is not None and until <= info.taken_at:
        raise InvalidInput(
            f"--until {until.isoformat()} is before the base backup ended "
            f"({info.taken_at.isoformat()}): pick a later time or an older base backup"
        )
    with tempfile.TemporaryDirectory(prefix="kiki-wal-") as tmp:
        wal.fetch_all(wal_store, Path(tmp))
        try:
            url = server.recover(folder, Path(tmp), until, timeout_s)
        except Unavailable as exc:
            if "before configured recovery target" not in exc.message:
                raise
            raise FailedPrecondition(
                f"the archived WAL ends before --until {until}: no transaction after that "
                "moment was archived. Restore without --until to recover all that was archived "
                "(run `kiki db archive-wal` on the old node first if it still exists)"
            ) from None
    found = asyncio.run(_sums(url))
    rows = sum(t.rows for t in found.values())
    return Restored(info, len(found), rows, time.monotonic() - started)


async def _sums(url: str) -> dict[str, TableSum]:
    conn = await connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await checksums(conn)
    finally:
        await conn.close()


async def _tables(conn: asyncpg.Connection) -> int:
    return len(await conn.fetch(_TABLES))


async def _recreate(url: str, database: str) -> None:
    """Drop and create the database of `url` again, empty (from the server's `postgres`)."""
    if database == "postgres":
        raise InvalidInput("will not drop the `postgres` database: restore into another one")
    admin = await connect(urlunsplit(urlsplit(url)._replace(path="/postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()


async def restore_folder(folder: Path, url: str, replace: bool) -> Restored:
    """Restore a downloaded backup folder into the database of `url` (empty, or emptied with
    `replace`), then prove every table's rows equal to the backup's."""
    started = asyncio.get_running_loop().time()
    info = BackupInfo.model_validate_json((folder / INFO).read_text())
    database = urlsplit(url).path.lstrip("/") or "postgres"
    conn = await connect(url)
    try:
        num = int(await conn.fetchval("SELECT current_setting('server_version_num')"))
        tables = await _tables(conn)
    finally:
        await conn.close()
    if num // 10000 < info.server_version_num // 10000:
        raise FailedPrecondition(
            f"the backup is of PostgreSQL {info.server_version}, the target server is older "
            f"({num // 10000}): restore into a server of version {info.server_version} or newer"
        )
    if tables and not replace:
        raise FailedPrecondition(
            f"database {database} at {redact(url)} holds {tables} tables: restore into an empty "
            "database, or pass --replace to drop this one and restore in its place"
        )
    if tables:
        await _recreate(url, database)
    target, env = libpq_target(url)
    await _run(
        [str(tool("pg_restore")), "--exit-on-error", "--single-transaction", "--no-owner",
         "--no-acl", "--dbname", target, str(folder / DUMP)],
        env, "pg_restore",
    )  # fmt: skip
    found = await _sums(url)
    names = info.tables.keys() | found.keys()
    wrong = sorted(n for n in names if info.tables.get(n) != found.get(n))
    if wrong:
        raise FailedPrecondition(
            f"the restored rows differ from the backup's checksums in {', '.join(wrong[:10])}: "
            "the backup is damaged or the target was written to during the restore"
        )
    rows = sum(t.rows for t in found.values())
    return Restored(info, len(found), rows, asyncio.get_running_loop().time() - started)


def store_for(url: str, base: ArtifactStore) -> ArtifactStore:
    """The store a backup URL lives in (it may differ from KIKI_ARTIFACTS_URL, e.g. an
    off-site bucket given to `--to`), with this node's cache and S3 endpoint."""
    parts = urlsplit(url)
    root = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    return ArtifactStore(url=root, cache_dir=base.cache_dir, endpoint_url=base.endpoint_url)
