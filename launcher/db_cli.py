"""`kiki db backup` and `kiki db restore`: the database to and from the artifact store."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click

from kiki.artifacts import ArtifactStore, url_problem
from kiki.db import backup as backups
from kiki.db import wal
from launcher.exits import fail, settings_or_exit
from launcher.platform import database, embedded_postgres, pid_alive, read_state


def _store_url(value: str | None, option: str) -> str | None:
    if value is not None and (problem := url_problem(value.rstrip("/"))):
        fail(f"{option} {value!r}: {problem}", 2)
    return value


@click.command("backup")
@click.option(
    "--to",
    "to",
    metavar="URL",
    help="Store to write to: file:///path or s3://bucket/prefix (default: KIKI_ARTIFACTS_URL, "
    "or file://$KIKI_HOME/artifacts).",
)
@click.option(
    "--base",
    is_flag=True,
    help="A base backup of the whole server (pg_basebackup) instead of a dump: the start "
    "point of `kiki db restore --until`, with KIKI_WAL_ARCHIVE=1.",
)
def db_backup(to: str | None, base: bool) -> None:
    """Back up the database into the artifact store, under backups/<UTC time>-<dump|base>/.
    A dump (the default) is pg_dump of one snapshot with every table's row checksum. Prints
    the backup's URL, which `kiki db restore` takes. Safe while KIKI runs."""
    settings = settings_or_exit()
    store = ArtifactStore.from_settings(settings)
    if _store_url(to, "--to"):
        store = backups.store_for(to.rstrip("/"), store)  # type: ignore[union-attr]
    with database(settings, migrated=False) as url:
        taken = asyncio.run(backups.backup(url, store, base=base))
    info = taken.info
    what = (
        "a base backup of the server"
        if base
        else f"{len(info.tables)} tables, {sum(t.rows for t in info.tables.values()):,} rows"
    )
    click.echo(
        f"backed up {info.database} (PostgreSQL {info.server_version}, as of "
        f"{info.taken_at:%Y-%m-%d %H:%M:%S} UTC): {what}, {taken.bytes / 1e6:.1f} MB in "
        f"{taken.seconds:.1f} s"
    )
    click.echo(taken.url)


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--until {value!r} is not a time: give ISO 8601, e.g. 2026-12-07T17:30:00Z", 2)
        raise
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command("restore")
@click.argument("source", metavar="FROM")
@click.option(
    "--replace",
    is_flag=True,
    help="Drop the database first when it holds tables (a dump), or replace the data folder "
    "that holds one (a base backup); without it, only an empty one is restored into.",
)
@click.option(
    "--until",
    metavar="TIME",
    help="With a base backup: recover to this moment (ISO 8601; UTC unless it says); without "
    "it, to the last archived WAL.",
)
def db_restore(source: str, replace: bool, until: str | None) -> None:
    """Restore the backup at FROM (a URL printed by `kiki db backup`).

    A dump: checked against its SHA-256, replayed in one transaction (all or nothing) into
    the database, then every table's row checksum must match the backup's. With the embedded
    server and a lost data folder, a fresh server is started first.

    A base backup (embedded server only): the data folder (when it still holds a database,
    with --replace) is replaced by it and the archived WAL replayed up to --until, then the
    server is promoted.

    Stop KIKI (`kiki down`) first; `kiki up` afterwards rebuilds the budget actors from the
    restored ledger and applies pending migrations."""
    settings = settings_or_exit()
    source = source.rstrip("/")
    _store_url(source, "FROM")
    moment = _moment(until)
    state = read_state(settings)
    if state is not None and pid_alive(state.pid):
        fail(f"KIKI is running (pid {state.pid}): stop it with `kiki down`, then restore", 1)
    configured = ArtifactStore.from_settings(settings)
    with tempfile.TemporaryDirectory(prefix="kiki-restore-") as tmp:
        info = backups.download(source, backups.store_for(source, configured), Path(tmp))
        if info.format == "pg_basebackup":
            if settings.database_url:
                only = "a base backup restores the embedded server's data folder only"
                fail(f"{only}: unset KIKI_DATABASE_URL, or restore a dump (README, Operations)", 2)
            server = embedded_postgres(settings)
            if (server.pgdata / "PG_VERSION").exists() and not replace:
                fail(f"{server.pgdata} holds a database: pass --replace to replace it with the "
                     "base backup's", 1)  # fmt: skip
            server.stop()
            try:
                done = backups.recover(Path(tmp), server, configured, moment)
            finally:
                server.stop()
        elif moment is not None:
            fail("--until needs a base backup (`kiki db backup --base`), not a dump", 2)
            return
        else:
            with database(settings, migrated=False) as url:
                done = asyncio.run(backups.restore_folder(Path(tmp), url, replace))
    if info.format == "pg_basebackup":
        click.echo(
            f"recovered the server from the base backup of {info.taken_at:%Y-%m-%d %H:%M:%S} UTC "
            f"to {moment.isoformat() if moment else 'the last archived WAL'}: {done.tables} "
            f"tables, {done.rows:,} rows ({done.seconds:.1f} s)"
        )
        return
    click.echo(
        f"restored {info.database} as of {info.taken_at:%Y-%m-%d %H:%M:%S} UTC: "
        f"{done.tables} tables, {done.rows:,} rows, every checksum matches ({done.seconds:.1f} s)"
    )


@click.command("archive-wal")
def db_archive_wal() -> None:
    """Ship the WAL segments the embedded server has archived (KIKI_WAL_ARCHIVE=1) from
    $KIKI_HOME/wal-spool to the artifact store now. `kiki up` does this every few seconds;
    run it before a planned restore so the newest segments are in the store."""
    settings = settings_or_exit()
    store = ArtifactStore.from_settings(settings)
    shipped = wal.ship(settings.wal_spool, store)
    click.echo(f"shipped {len(shipped)} WAL files to {store.url_of(wal.WAL)}")
