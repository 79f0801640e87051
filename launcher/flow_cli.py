"""`kiki flow`: the live market's bookkeeping against the ad platforms."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

import click
import httpx

from kiki.db.pool import connect
from kiki.errors import KikiError
from kiki.flow import store
from kiki.flow.connectors import PlatformSettings, build_connector
from kiki.flow.live import load_credentials, parse_credentials
from kiki.flow.reconcile import Reconciliation, platform_spend, reconcile
from kiki.money import micros_to_decimal_str
from launcher.exits import fail, settings_or_exit
from launcher.platform import database


@click.group()
def flow() -> None:
    """SyncFlow in the live market (KIKI_PLATFORM_CREDENTIALS)."""


@flow.command("reconcile")
@click.option(
    "--date",
    "day",
    required=True,
    type=click.DateTime(["%Y-%m-%d"]),
    help="The report day to reconcile, YYYY-MM-DD (the platforms' own report day).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--credentials",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Platform credentials JSON (default: KIKI_PLATFORM_CREDENTIALS).",
)
def reconcile_command(day: datetime, as_json: bool, credentials: Path | None) -> None:
    """Per campaign and platform: the spend KIKI committed for --date against what the
    platform reports for it now, the differences, and the over-delivery beyond a platform's
    own daily limit on the budget KIKI pushed, as credit claims where the platform documents
    giving such spend back (a record to match against its invoice: no platform has an API
    to file one). Exit 0 when it ran, differences or not; 2 on bad input; 1 when a platform
    could not be read."""
    the_day = day.date()
    if the_day > datetime.now(UTC).date():
        raise click.BadParameter(f"{the_day} is in the future", param_hint="--date")
    settings = settings_or_exit()
    path = credentials or settings.platform_credentials
    if path is None:
        fail("no platform credentials: set KIKI_PLATFORM_CREDENTIALS or pass --credentials", 2)
    try:
        parsed = parse_credentials(load_credentials(path))
    except KikiError as exc:
        fail(exc.message, 2)
    try:
        with database(settings) as url:
            result = asyncio.run(_reconcile(url, parsed, the_day))
    except KikiError as exc:
        fail(f"reconciliation of {the_day} failed: {exc.message}")
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        _print(result)


async def _reconcile(
    url: str, credentials: dict[str, PlatformSettings], day: date
) -> Reconciliation:
    conn = await connect(url)
    try:
        campaigns = await store.campaigns_with_refs(conn)
        committed = {
            (r["tenant_id"], r["campaign_id"], r["platform"]): r["micros"]
            for r in await store.charged_on(conn, day)
        }
        pushes = await store.budgets_pushed_on(conn, day)
    finally:
        await conn.close()
    pushed = {
        (r["tenant_id"], r["campaign_id"], r["platform"], r["account_id"], r["campaign_ref"]): r[
            "max_budget_micros"
        ]
        for r in pushes
    }
    clients = {p: httpx.AsyncClient(timeout=s.timeout_s) for p, s in credentials.items()}
    try:
        connectors = {p: build_connector(p, clients[p], s) for p, s in credentials.items()}
        reported = await platform_spend(connectors, campaigns, day)
    finally:
        for client in clients.values():
            await client.aclose()
    currencies = {(c.tenant_id, c.campaign_id): c.currency for c in campaigns}
    return reconcile(day, committed, reported, pushed, currencies)


def _print(result: Reconciliation) -> None:
    click.echo(f"reconciliation of {result.day}: {len(result.lines)} campaign x platform lines, "
               f"{result.differences} with a difference")  # fmt: skip
    for line in result.lines:
        click.echo(
            f"  {line.tenant_id} {line.campaign_id} {line.platform}: KIKI "
            f"{micros_to_decimal_str(line.committed_micros)}, platform "
            f"{micros_to_decimal_str(line.reported_micros)} {line.currency} ({line.status}"
            + (
                f", {micros_to_decimal_str(line.over_limit_micros)} beyond the platform's limit"
                if line.over_limit_micros
                else ""
            )
            + ")"
        )
    for claim in result.claims:
        click.echo(
            f"  claim: {claim.platform} {claim.account_id}/{claim.campaign_ref} "
            f"{micros_to_decimal_str(claim.amount_micros)} {claim.currency}: {claim.process}"
        )
