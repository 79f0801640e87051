"""`kiki bench backup`: the RPO and RTO figures of the README, on the demo-sized database.

A server of its own in a temporary folder, with WAL archiving; the CDNOW purchase log loaded
(69,659 purchases, what `kiki demo load cdnow` loads); then timed: a dump, a base backup, and
two disasters (the data folder deleted): a fresh server + the dump restored and checked, and
point-in-time recovery to a moment between two writes (the first must be there, the second
not). Library calls, so the `kiki` command's own start is not in the figures.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from kiki.artifacts import ArtifactStore
from kiki.auth import ensure_tenant
from kiki.config import Settings
from kiki.db import backup, migrate, wal
from kiki.db.embedded import EmbeddedPostgres, free_port
from kiki.gdpr import Suppressions
from kiki.value import transactions
from kiki.value.cdnow import load_cdnow


@dataclass(frozen=True)
class BackupFigures:
    rows: int
    dump_s: float
    dump_mb: float
    base_s: float
    base_mb: float
    fresh_server_s: float
    restore_s: float  # pg_restore and the checksums
    rto_dump_s: float  # fresh server, download, restore
    rto_pitr_s: float  # download base and WAL, replay, promote
    ship_s: float

    def to_json(self) -> dict[str, float]:
        return asdict(self)


async def _sql(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _load(url: str, settings: Settings) -> None:
    rows = transactions.from_frame(load_cdnow(), "cdnow-")
    conn = await asyncpg.connect(url)
    try:
        tenant = await ensure_tenant(conn, "demo")
        async with conn.transaction():
            await transactions.insert(conn, tenant.id, rows, Suppressions.from_settings(settings))
    finally:
        await conn.close()


async def _archived(url: str) -> datetime:
    """Write a marker, note the moment, write a second; archive both. The moment."""
    await _sql(url, "CREATE TABLE bench_marker (x int)")
    await _sql(url, "INSERT INTO bench_marker VALUES (1)")
    moment = await _sql(url, "SELECT clock_timestamp()")
    await _sql(url, "INSERT INTO bench_marker VALUES (2)")
    segment = str(await _sql(url, "SELECT pg_walfile_name(pg_switch_wal())"))
    while str(await _sql(url, "SELECT last_archived_wal FROM pg_stat_archiver")) < segment:
        await asyncio.sleep(0.1)
    assert isinstance(moment, datetime)
    return moment


def measure() -> BackupFigures:
    with tempfile.TemporaryDirectory(prefix="kiki-bench-backup-") as tmp:
        home = Path(tmp)
        settings = Settings(home=home)
        store = ArtifactStore.from_settings(settings)
        server = EmbeddedPostgres(home / "pgdata", free_port(), home / "wal-spool")
        url = server.start()
        try:
            asyncio.run(migrate.migrate_url(url))
            asyncio.run(_load(url, settings))
            dump = asyncio.run(backup.backup(url, store))
            base = asyncio.run(backup.backup(url, store, base=True))
            moment = asyncio.run(_archived(url))
            started = time.monotonic()
            wal.ship(home / "wal-spool", store)
            ship_s = time.monotonic() - started

            server.stop()
            shutil.rmtree(server.pgdata)
            started = time.monotonic()
            fresh = EmbeddedPostgres(server.pgdata, server.port)
            fresh.start()
            fresh_s = time.monotonic() - started
            with tempfile.TemporaryDirectory(dir=home) as folder:
                backup.download(dump.url, store, Path(folder))
                done = asyncio.run(backup.restore_folder(Path(folder), url, replace=False))
            rto_dump = time.monotonic() - started
            fresh.stop()

            shutil.rmtree(server.pgdata)
            started = time.monotonic()
            with tempfile.TemporaryDirectory(dir=home) as folder:
                backup.download(base.url, store, Path(folder))
                backup.recover(Path(folder), server, store, moment)
            rto_pitr = time.monotonic() - started
            kept = asyncio.run(_sql(url, "SELECT array_agg(x)::text FROM bench_marker"))
            if kept != "{1}":
                raise RuntimeError(f"recovery to {moment} kept {kept}, not {{1}}")
        finally:
            server.stop()
    return BackupFigures(
        rows=done.rows, dump_s=dump.seconds, dump_mb=dump.bytes / 1e6, base_s=base.seconds,
        base_mb=base.bytes / 1e6, fresh_server_s=fresh_s, restore_s=done.seconds,
        rto_dump_s=rto_dump, rto_pitr_s=rto_pitr, ship_s=ship_s,
    )  # fmt: skip
