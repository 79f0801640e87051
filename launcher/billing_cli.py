"""`kiki billing`: close billing periods (from cron, as often as wanted) and revenue reports."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import click

from kiki.auth import Tenant
from kiki.billing import payments, processors, reports
from kiki.billing.closing import CloseReport, close_period
from kiki.billing.pdf import format_minor
from kiki.config import Settings, load_settings
from kiki.db.pool import connect, create_pool
from launcher.platform import database
from launcher.value_cli import TENANT_OPTION, with_tenant


@click.group()
def billing() -> None:
    """Billing: close periods into invoices, revenue reports."""


def _as_of(value: datetime | None) -> datetime:
    """A date means the end of that day in UTC; a time without offset is UTC."""
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None and (value.hour, value.minute, value.second) == (0, 0, 0):
        return value.replace(tzinfo=UTC) + timedelta(days=1)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _due_tenants(conn: asyncpg.Connection, as_of: datetime) -> list[Tenant]:
    rows = await conn.fetch(
        """SELECT DISTINCT t.id, t.name FROM tenants t
           JOIN billing_subscriptions s ON s.tenant_id = t.id
           WHERE s.status = 'active' AND s.period_end <= $1 ORDER BY t.name""",
        as_of,
    )
    return [Tenant(id=r["id"], name=r["name"]) for r in rows]


def _close_all(settings: Settings, as_of: datetime) -> list[tuple[str, CloseReport]]:
    async def run(url: str) -> list[tuple[str, CloseReport]]:
        conn = await connect(url)
        try:
            return [
                (tenant.name, await close_period(conn, tenant, as_of))
                for tenant in await _due_tenants(conn, as_of)
            ]
        finally:
            await conn.close()

    with database(settings) as url:
        return asyncio.run(run(url))


def _collect(settings: Settings, as_of: datetime) -> None:
    """Charge the invoices due (first attempts and dunning retries) on the configured gateways."""
    gateways = processors.configured(settings)
    if not gateways:
        click.echo(
            "payments: neither KIKI_STRIPE_API_KEY nor KIKI_PAYPAL_CLIENT_ID/_SECRET is set, "
            "invoices left to collect later"
        )
        return

    async def run(url: str) -> list[Any]:
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            return await payments.collect_due(pool, gateways, as_of, limit=10_000)
        finally:
            await pool.close()

    with database(settings) as url:
        done = asyncio.run(run(url))
    paid = sum(p.status == "succeeded" for p in done)
    click.echo(f"payments: {len(done)} attempted, {paid} succeeded, {len(done) - paid} not")


@billing.command("close-period")
@click.option("--tenant", default=None, help="Only this tenant (default: every tenant due).")
@click.option(
    "--as-of",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]),
    default=None,
    help="Close periods ended by then; a date means the end of that day (UTC). Default: now.",
)
def close_period_command(tenant: str | None, as_of: datetime | None) -> None:
    """Invoice every billing period that has ended: usage, base fees, prorations, tax,
    credits; finalize and number the invoices, renew the subscriptions, apply downgrades
    and cancellations due, then charge what is due. Safe to run again: nothing is billed
    twice."""
    settings = load_settings()
    moment = _as_of(as_of)
    if tenant:

        async def work(conn: asyncpg.Connection, owner: Tenant) -> CloseReport:
            return await close_period(conn, owner, moment)

        closed = [(tenant, with_tenant(settings, tenant, work))]
    else:
        closed = _close_all(settings, moment)
    for name, r in closed:
        click.echo(
            f"{name}: {r.invoices} invoices ({r.renewed} renewed, {r.downgraded} downgraded, "
            f"{r.ended} ended; {r.late_events} late events billed, {r.late_unbilled} not)"
        )
    if not closed:
        click.echo(f"nothing to close as of {moment.isoformat()}")
    _collect(settings, moment)


@billing.command("report")
@TENANT_OPTION
@click.option("--month", default=None, help="YYYY-MM (default: this month).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report(tenant: str | None, month: str | None, as_json: bool) -> None:
    """MRR, ARR, ARPU, MRR movements and net revenue retention of a month, per currency,
    with the month's invoices by status."""
    try:
        day = datetime.strptime(month, "%Y-%m").date() if month else datetime.now(UTC).date()
    except ValueError:
        raise click.BadParameter(f"{month!r} is not YYYY-MM", param_hint="--month") from None
    day = day.replace(day=1)

    async def work(conn: asyncpg.Connection, owner: Tenant) -> tuple[list, list]:
        start = reports.month_start(day)
        invoices = await conn.fetch(
            """SELECT currency, status, count(*) AS n, sum(total_due_minor) AS due
               FROM billing_invoices WHERE tenant_id = $1
                 AND finalized_at >= $2 AND finalized_at < $3
               GROUP BY currency, status ORDER BY currency, status""",
            owner.id, start, reports.month_start(reports.next_month(day)),
        )  # fmt: skip
        return await reports.mrr_report(conn, owner.id, day), [dict(r) for r in invoices]

    mrr, invoices = with_tenant(load_settings(), tenant, work)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "month": f"{day:%Y-%m}",
                    "revenue": [r.model_dump(mode="json") for r in mrr],
                    "invoices": invoices,
                }
            )
        )
        return
    if not mrr and not invoices:
        click.echo(f"{day:%Y-%m}: no subscriptions and no invoices")
    for r in mrr:
        m, cur = r.movements, r.currency

        def f(minor: int, cur: str = cur) -> str:
            return format_minor(minor, cur)

        nrr = "n/a" if r.net_revenue_retention_percent is None else (
            f"{r.net_revenue_retention_percent} %")  # fmt: skip
        click.echo(
            f"{r.month} {cur}: MRR {f(r.mrr_minor)}, ARR {f(r.arr_minor)}, ARPU "
            f"{f(r.arpu_minor)}, {r.paying_customers} paying customers\n"
            f"  movements: start {f(m.starting_mrr)}, new {f(m.new)}, expansion "
            f"{f(m.expansion)}, reactivated {f(m.reactivated)}, contraction "
            f"{f(m.contraction)}, churned {f(m.churned)}\n"
            f"  net revenue retention: {nrr}"
        )
    for row in invoices:
        click.echo(
            f"  invoices {row['status']}: {row['n']}, {format_minor(row['due'], row['currency'])}"
        )
