"""`kiki`: run the platform and manage it from the shell.

Every failure the user can fix prints one line `kiki: error: <what and how to fix>` and exits
with 2 (bad configuration or input) or 1 (something did not work); never a stack trace.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import click

from kiki import __version__, auth
from kiki.artifacts import ArtifactStore
from kiki.config import APPS, ROOT_APP, Settings
from kiki.db import migrate, retention
from kiki.db.pool import connect
from kiki.errors import ConfigError, InvalidInput, KikiError
from launcher.db_cli import db_archive_wal, db_backup, db_restore
from launcher.exits import fail, settings_or_exit
from launcher.lazy import LazyGroup
from launcher.platform import (
    READY_TIMEOUT_S,
    Platform,
    check_health,
    database,
    describe_failure,
    pid_alive,
    placement,
    read_state,
    state_path,
)


class KikiGroup(LazyGroup):
    """Turns domain errors from any command into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, InvalidInput) as exc:
            fail(exc.message, 2)
        except KikiError as exc:
            fail(exc.message, 1)
        except asyncpg.PostgresError as exc:
            fail(f"the database refused the operation: {exc.__class__.__name__}: {exc}", 1)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("KIKI_DEBUG"):
                raise
            fail(f"unexpected {exc.__class__.__name__}: {exc} (KIKI_DEBUG=1 shows the traceback)")


# The commands defined in other modules, imported when run (launcher/lazy.py says why).
COMMANDS = {
    "bench": "launcher.bench:bench",
    "billing": "launcher.billing_cli:billing",
    "demo": "launcher.value_cli:demo",
    "engage": "launcher.engage_cli:engage",
    "flow": "launcher.flow_cli:flow",
    "ingest": "launcher.value_cli:ingest",
    "k8s": "launcher.k8s:k8s",
    "models": "launcher.value_cli:models",
    "simulate": "launcher.simulate:simulate",
    "train": "launcher.value_cli:train",
}


@click.group(cls=KikiGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kiki")
def main() -> None:
    """KIKI: paid-ads growth on autopilot, on Ray.

    Settings come from KIKI_* environment variables (see README). Start with `kiki up`.
    """


# --- up / down / status -------------------------------------------------------------------


def print_summary(settings: Settings, dev_key: str | None) -> None:
    state = read_state(settings)
    health = check_health(settings)
    click.echo("")
    click.echo(f"{'APP':<9} {'URL':<36} HEALTH")
    for app in APPS:
        code, detail = health[app]
        shown = "healthy" if code == 200 else f"{code or 'down'}: {detail}"
        where = "" if app == ROOT_APP else app  # the root's /health lists every service
        click.echo(f"{app:<9} {f'http://127.0.0.1:{settings.http_port}/{where}':<36} {shown}")
    click.echo("")
    click.echo(f"gRPC      127.0.0.1:{settings.grpc_port} (metadata `application: value`)")
    if state:
        click.echo(f"metrics   {state.metrics_url}")
        if state.dashboard_url:
            click.echo(f"dashboard {state.dashboard_url}")
        click.echo(f"database  {state.database}")
    click.echo(f"API docs  http://127.0.0.1:{settings.http_port}/<app>/docs")
    click.echo(
        f"console   http://127.0.0.1:{settings.http_port}/console/ "
        "(the web console: sign in with an API key, such as the one below)"
    )
    if dev_key:
        click.echo("")
        click.echo("Try it:")
        click.echo(
            f"  curl -H 'X-API-Key: {dev_key}' "
            f"http://127.0.0.1:{settings.http_port}/shield/api/v1/whoami"
        )
        click.echo(f"  curl http://127.0.0.1:{settings.http_port}/health   # every service, no key")


def _up_foreground(settings: Settings, demo: bool) -> None:
    stop = threading.Event()
    platform = Platform(settings, click.echo, demo=demo)
    try:
        platform.start()
    except BaseException as exc:
        platform.stop()
        if isinstance(exc, KeyboardInterrupt):
            fail("interrupted while starting", 130)
        fail(describe_failure(exc), 2 if isinstance(exc, ConfigError | InvalidInput) else 1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print_summary(settings, platform.dev_key)
    click.echo("\nKIKI is up. Press Ctrl-C to stop.")
    while not stop.wait(1.0):
        pass
    click.echo("")
    platform.stop()
    click.echo("KIKI stopped.")


def _up_detached(settings: Settings, demo: bool) -> None:
    log_dir = Path(settings.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "kiki-up.log"
    existing = read_state(settings)
    if existing and pid_alive(existing.pid):
        fail(f"KIKI is already running (pid {existing.pid}): see `kiki status` or `kiki down`", 2)
    with open(log_file, "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "launcher.cli", "up", *([] if demo else ["--no-demo"])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    click.echo(f"starting KIKI in the background (pid {child.pid}, log {log_file})")
    shown = 0
    deadline = time.monotonic() + READY_TIMEOUT_S + 60
    while True:
        lines = log_file.read_text().splitlines()
        for line in lines[shown:]:
            if line.startswith(("==>", "    ", "kiki: error")):
                click.echo(line)
        shown = len(lines)
        state = read_state(settings)
        if state and state.pid == child.pid and state.status == "ready":
            break
        if child.poll() is not None:
            fail(f"KIKI did not start (exit {child.returncode}); see {log_file}")
        if time.monotonic() > deadline:
            child.terminate()
            fail(f"KIKI did not become ready in time; see {log_file}")
        time.sleep(0.3)
    print_summary(settings, (Path(settings.home) / "dev_api_key").read_text().strip())
    click.echo("\nKIKI is up in the background: `kiki status`, `kiki down`.")


@main.command()
@click.option("--detach", "-d", is_flag=True, help="Run in the background and return when healthy.")
@click.option(
    "--no-demo",
    is_flag=True,
    help="On a first run (the development tenant has no data), skip loading the CDNOW demo "
    "and training its models.",
)
def up(detach: bool, no_demo: bool) -> None:
    """Start the platform: PostgreSQL, migrations, Ray, the six Serve apps and the proxy
    root's `/health`.

    Uses embedded PostgreSQL under $KIKI_HOME unless KIKI_DATABASE_URL is set, and a local
    Ray unless RAY_ADDRESS is set. On a first run the development tenant gets the CDNOW demo
    and small LTV and churn models, trained in the background. Stays up until Ctrl-C,
    unless --detach.
    """
    settings = settings_or_exit()
    if detach:
        _up_detached(settings, demo=not no_demo)
    else:
        _up_foreground(settings, demo=not no_demo)


@main.command()
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for shutdown.")
def down(timeout: float) -> None:
    """Stop a platform started with `kiki up` (foreground or detached).

    With RAY_ADDRESS set and no `kiki up` running here (the apps came from `serve deploy`, or
    `serve shutdown` already ran): take KIKI off that cluster, its detached actors included.
    """
    settings = settings_or_exit()
    state = read_state(settings)
    if state is None or not pid_alive(state.pid):
        if state is not None:
            Platform(settings, click.echo).stop_leftovers(state)
        if settings.ray_address:
            Platform(settings, click.echo).clear_cluster()
            click.echo("KIKI is off the cluster.")
        elif state is None:
            click.echo("KIKI is not running.")
        else:
            click.echo("KIKI was not running; cleaned up what it left behind.")
        return
    click.echo(f"stopping KIKI (pid {state.pid}) ...")
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(state.pid) and state_path(settings).exists():
        if time.monotonic() > deadline:
            fail(f"KIKI (pid {state.pid}) did not stop within {timeout:.0f}s; see its log")
        time.sleep(0.3)
    click.echo("KIKI stopped.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show whether KIKI runs, each app's health, and which node runs each replica and
    actor. Exit 0 when all are healthy, 1 when one is not, 3 when KIKI is not running."""
    settings = settings_or_exit()
    state = read_state(settings)
    if state is None or not pid_alive(state.pid):
        if as_json:
            click.echo(json.dumps({"running": False}))
        else:
            click.echo("KIKI is not running: start it with `kiki up`.")
        sys.exit(3)
    health = check_health(settings)
    healthy = all(code == 200 for code, _ in health.values())
    placed, unplaced = [], None
    try:
        placed = placement(state.dashboard_url) if state.dashboard_url else []
    except Exception as exc:  # the apps' health still answers the question
        unplaced = describe_failure(exc)
    if as_json:
        apps = {s: {"status": code, "detail": d} for s, (code, d) in health.items()}
        click.echo(json.dumps({"running": True, "status": state.status, "pid": state.pid,
                               "healthy": healthy, "apps": apps,
                               "placement": [p.model_dump() for p in placed],
                               "placement_error": unplaced}))  # fmt: skip
    else:
        click.echo(f"KIKI {state.status} (pid {state.pid})")
        print_summary(settings, None)
        click.echo("")
        click.echo(f"{'RUNS':<40} {'STATE':<9} NODE")
        for p in placed:
            click.echo(f"{p.kind + ' ' + p.name:<40} {p.state:<9} {p.node_ip} {p.node_id[:12]}")
        if unplaced:
            click.echo(f"(where things run is unknown: {unplaced})")
    sys.exit(0 if healthy else 1)


# --- db ------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database: migrations, backup and restore, retention of the append-only tables."""


db.add_command(db_backup)
db.add_command(db_restore)
db.add_command(db_archive_wal)


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations, each once, in its own transaction."""
    settings = settings_or_exit()
    with database(settings, migrated=False) as url:
        applied = asyncio.run(migrate.migrate_url(url))
    for m in applied:
        click.echo(f"applied {m.version:04d}_{m.name}")
    if not applied:
        click.echo("schema up to date")


@db.command("retention")
@click.option("--dry-run", is_flag=True, help="Say what would be created, exported and dropped.")
def db_retention(dry_run: bool) -> None:
    """Partitions of the next days ahead of time; every day of a day-partitioned table older
    than its retention (KIKI_DECISIONS_RETENTION_DAYS, KIKI_BILLING_EVENTS_RETENTION_DAYS,
    KIKI_ENGAGE_MESSAGES_RETENTION_DAYS, KIKI_WEBHOOK_DELIVERIES_RETENTION_DAYS; 0 = forever)
    exported to Parquet in the artifact store (KIKI_ARTIFACTS_URL) and dropped, unless rows
    in it are still needed (usage not invoiced, a webhook pending). The retraining actor runs
    the same every KIKI_RETENTION_CHECK_S."""
    settings = settings_or_exit()
    store = ArtifactStore.from_settings(settings)

    async def run(url: str) -> retention.RetentionReport:
        conn = await connect(url)
        try:
            today = datetime.now(UTC).date()
            keep = retention.keep_days(settings)
            return await retention.run(conn, store, today, keep, dry_run=dry_run)
        finally:
            await conn.close()

    with database(settings) as url:
        report = asyncio.run(run(url))
    if report.busy:
        fail("another retention run holds the lock (the scheduled job?); try again later")
    verb = "would create" if dry_run else "created"
    click.echo(f"{verb} {len(report.created)} partitions ahead: {', '.join(report.created) or '-'}")
    for table, days in report.keep_days.items():
        old = sum(p.table == table for p in report.expired)
        kept = f"keeping {days} days; {old} older partitions" if days else "keeping all days"
        click.echo(f"{table}: {kept}")
    for h in report.held:
        click.echo(f"  kept {h.partition}: {h.reason}")
    if dry_run:
        for p in report.expired:
            click.echo(f"  would export and drop {p.name}: ~{p.rows:,} rows, {p.bytes:,} bytes")
    for e in report.exported:
        state = "dropped" if e.dropped else "kept (rows arrived meanwhile; next run)"
        click.echo(f"  {e.table} {e.day}: {e.rows:,} rows, {e.bytes:,} bytes -> {e.url}, {state}")


@db.command("status")
def db_status() -> None:
    """List migrations and when each was applied."""
    settings = settings_or_exit()

    async def run(url: str) -> list[migrate.MigrationState]:
        conn = await connect(url)
        try:
            return await migrate.status(conn, migrate.discover())
        finally:
            await conn.close()

    with database(settings, migrated=False) as url:
        states = asyncio.run(run(url))
    for st in states:
        when = st.applied_at.isoformat(timespec="seconds") if st.applied_at else "pending"
        click.echo(f"{st.migration.version:04d}_{st.migration.name:<40} {when}")


# --- keys ----------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Tenants' API keys (stored hashed; a new key is shown once)."""


def _with_conn(settings: Settings, func: Callable[[Any], Any]) -> Any:
    async def run(url: str) -> Any:
        conn = await connect(url)
        try:
            return await func(conn)
        finally:
            await conn.close()

    with database(settings) as url:
        return asyncio.run(run(url))


_SECONDS_PER = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


class Duration(click.ParamType):
    """A span like 90d, 24h, 30m or 3600s."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower()
        if len(text) > 1 and text[-1] in _SECONDS_PER and text[:-1].isdigit():
            return timedelta(seconds=int(text[:-1]) * _SECONDS_PER[text[-1]])
        self.fail(f"{value!r} is not a duration: write e.g. 90d, 24h, 30m or 3600s", param, ctx)


SCOPE_HELP = (
    "read, write or admin (each includes the ones before it) for the tenant's data; operator "
    "for platform-wide state. Repeat or comma-separate."
)


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant name (created if new): a-z, 0-9, _ and -.")
@click.option("--label", default="", help="A note to tell keys apart.")
@click.option("--scope", "scopes", multiple=True, help=SCOPE_HELP + "  [default: admin]")
@click.option("--expires-in", type=Duration(), default=None, help="Lifetime, e.g. 90d.")
def keys_create(
    tenant: str, label: str, scopes: tuple[str, ...], expires_in: timedelta | None
) -> None:
    """Create an API key and print it (only this once)."""
    settings = settings_or_exit()
    auth.check_tenant_name(tenant)
    names = [n for given in scopes for n in given.split(",")] or ["admin"]
    chosen = auth.parse_scopes(names)
    _, key = _with_conn(
        settings, lambda conn: auth.create_api_key(conn, tenant, label, chosen, expires_in)
    )
    click.echo(key)


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(tenant: str | None, as_json: bool) -> None:
    """List keys by prefix with scopes, state, expiry and last use (the secret part is never
    stored; last use is exact to within KIKI_AUTH_CACHE_TTL_S)."""
    settings = settings_or_exit()
    found = _with_conn(settings, lambda conn: auth.list_api_keys(conn, tenant))
    if as_json:
        click.echo(json.dumps([k.model_dump(mode="json") for k in found], indent=2))
        return
    now = datetime.now(UTC)
    click.echo(f"{'prefix':<9} {'tenant':<20} {'scopes':<20} {'state':<8} "
               f"{'expires':<17} {'last used':<17} label")  # fmt: skip
    for k in found:
        scopes = ",".join(s.value for s in k.scopes)
        click.echo(
            f"{k.prefix:<9} {k.tenant:<20} {scopes:<20} {k.state(now):<8} "
            f"{_when(k.expires_at):<17} {_when(k.last_used_at):<17} {k.label}"
        )


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"


@keys.command("rotate")
@click.argument("prefix")
@click.option("--overlap", type=Duration(), default="24h", show_default=True,
              help="How long the old key keeps working.")  # fmt: skip
@click.option("--expires-in", type=Duration(), default=None,
              help="The new key's lifetime (default: the old key's).")  # fmt: skip
def keys_rotate(prefix: str, overlap: timedelta, expires_in: timedelta | None) -> None:
    """Make a successor of the key (same tenant, label and scopes) and print it; the old key
    expires after the overlap."""
    settings = settings_or_exit()
    key, old = _with_conn(
        settings, lambda conn: auth.rotate_api_key(conn, prefix, overlap, None, expires_in)
    )
    click.echo(key)
    click.echo(f"{prefix} keeps working until {_when(old.expires_at)} UTC", err=True)


@keys.command("revoke")
@click.argument("prefix")
def keys_revoke(prefix: str) -> None:
    """Revoke the key with this prefix (shown by `kiki keys list`)."""
    settings = settings_or_exit()
    _with_conn(settings, lambda conn: auth.revoke_api_key(conn, prefix))
    click.echo(f"revoked {prefix}")


if __name__ == "__main__":
    main()
