"""`kiki db backup` and `kiki db restore`: the database to and from the artifact store."""

from __future__ import annotations

import asyncio

import click

from kiki.artifacts import ArtifactStore, url_problem
from kiki.db import backup as backups
from launcher.exits import fail, settings_or_exit
from launcher.platform import database, pid_alive, read_state


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
def db_backup(to: str | None) -> None:
    """Back up the database (pg_dump of one snapshot, with every table's checksum) into the
    artifact store, under backups/<UTC time>-dump/<digest>/. Prints the backup's URL, which
    `kiki db restore` takes. Safe while KIKI runs: the dump reads one consistent snapshot."""
    settings = settings_or_exit()
    store = ArtifactStore.from_settings(settings)
    if _store_url(to, "--to"):
        store = backups.store_for(to.rstrip("/"), store)  # type: ignore[union-attr]
    with database(settings, migrated=False) as url:
        taken = asyncio.run(backups.backup(url, store))
    rows = sum(t.rows for t in taken.info.tables.values())
    click.echo(
        f"backed up {taken.info.database} (PostgreSQL {taken.info.server_version}, snapshot of "
        f"{taken.info.taken_at:%Y-%m-%d %H:%M:%S} UTC): {len(taken.info.tables)} tables, "
        f"{rows:,} rows, {taken.bytes / 1e6:.1f} MB in {taken.seconds:.1f} s"
    )
    click.echo(taken.url)


@click.command("restore")
@click.argument("source", metavar="FROM")
@click.option(
    "--replace",
    is_flag=True,
    help="Drop the database first when it holds tables (without it, only an empty database "
    "is restored into).",
)
def db_restore(source: str, replace: bool) -> None:
    """Restore the backup at FROM (a URL printed by `kiki db backup`) into the database: the
    files are checked against their SHA-256, the dump is replayed in one transaction (all or
    nothing), and every table's row checksum must match the backup's. With the embedded
    server and a lost data folder, it starts a fresh server first. Stop KIKI (`kiki down`)
    before restoring; start it again with `kiki up` afterwards (the budget actors rebuild from
    the restored ledger, pending migrations are applied)."""
    settings = settings_or_exit()
    _store_url(source.rstrip("/"), "FROM")
    state = read_state(settings)
    if state is not None and pid_alive(state.pid):
        fail(f"KIKI is running (pid {state.pid}): stop it with `kiki down`, then restore", 1)
    store = backups.store_for(source.rstrip("/"), ArtifactStore.from_settings(settings))
    with database(settings, migrated=False) as url:
        done = asyncio.run(backups.restore(source.rstrip("/"), url, store, replace))
    click.echo(
        f"restored {done.info.database} as of {done.info.taken_at:%Y-%m-%d %H:%M:%S} UTC: "
        f"{done.tables} tables, {done.rows:,} rows, every checksum matches ({done.seconds:.1f} s)"
    )
