"""`kiki bench flow`: the bid loop at scale, budget leases against per-tick reservations;
`kiki bench pacing`: the pacing controller alone, replayed at several start hours."""

from __future__ import annotations

import json
from datetime import datetime

import click

from benchmarks.flow import pacing_rows


@click.command("flow")
@click.option("--campaigns", default=1000, show_default=True)
@click.option("--minutes", default=3.0, show_default=True, help="Virtual minutes per run.")
@click.option("--tick-s", default=2.0, show_default=True)
@click.option("--lease-ticks", default=10, show_default=True, help="Ticks one lease covers.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_flow(
    campaigns: int, minutes: float, tick_s: float, lease_ticks: int, as_json: bool
) -> None:
    """Decisions logged per second and tick latency for CAMPAIGNS x 5 platforms x 4 ad
    groups on the simulator (real bid-loop and budget actors, audit trail in PostgreSQL and
    `decision:` log lines):
    the baseline reserves and commits every pool every tick (leases of one tick), ours holds
    leases of --lease-ticks. Both on one scratch PostgreSQL and one local Ray."""
    from benchmarks.flow import lease_runs

    rows = lease_runs(campaigns, minutes, tick_s, lease_ticks)
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(
        f"SyncFlow bid loop: {campaigns} campaigns x 5 platforms x 4 ad groups, "
        f"{minutes:g} virtual minutes at {tick_s:g} s ticks\n"
    )
    click.echo(
        "| run | decisions/s | tick p50 ms | tick p99 ms | budget ms/tick | overspend | ratio |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for name, r in rows.items():
        click.echo(
            f"| {name} | {r['decisions_per_s']:,} | {r['tick_ms_p50']} | {r['tick_ms_p99']} | "
            f"{r['budget_ms_mean']} | {r['overspend_micros']} | {r['ratio']:.2f}x |"
        )


@click.command("pacing")
@click.option("--campaigns", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--hours", default=0.25, show_default=True, type=click.FloatRange(0.01, 744))
@click.option("--tick-s", default=2.0, show_default=True, type=click.FloatRange(0.1, 3600))
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--day",
    type=click.DateTime(["%Y-%m-%d"]),
    default="2026-03-02",
    show_default=True,
    help="The day the schedules start.",
)
@click.option(
    "--start-hours",
    default="0,7,13,19",
    show_default=True,
    help="UTC hours the schedules start at, one replay each (time zones and traffic-shaped "
    "curves make pacing depend on it).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_pacing(
    campaigns: int,
    hours: float,
    tick_s: float,
    seed: int,
    day: datetime,
    start_hours: str,
    as_json: bool,
) -> None:
    """Pacing of CAMPAIGNS synthetic campaigns replayed without Ray or a database (the bid
    engine against the sandbox, budget leases granted by SyncShield's ledger logic): per start
    hour, how many campaigns the market did not limit stay within 2 % of their curves and
    spend at least 98 % of their budgets, the worst error, and how many of all campaigns stay
    within 2 %. Ours (any platform may spend a campaign's whole allowance for a tick) next to
    the baseline that splits it evenly over the campaign's platforms."""
    try:
        starts = [int(h) for h in start_hours.split(",")]
    except ValueError:
        message = "hours as integers, e.g. 0,7,13,19"
        raise click.BadParameter(message, param_hint="--start-hours") from None
    if not starts or any(not 0 <= h <= 23 for h in starts):
        raise click.BadParameter("each hour must be 0..23", param_hint="--start-hours")
    rows = pacing_rows(campaigns, hours, tick_s, seed, [day.replace(hour=h) for h in starts])
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(
        f"SyncFlow pacing replay: {campaigns} campaigns, {hours:g} h schedules, {tick_s:g} s "
        f"ticks, seed {seed}; the first six columns over the campaigns the market did not "
        "limit\n\n| start (UTC) | controller | campaigns | within 2 % | >= 98 % spent | p90 error "
        "| max error | utilisation | all within 2 % | overspend |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for r in rows:
        head = f"| {r['start_utc'][11:16]} | {r['controller']} | {r['demand_allowed']} | "
        tail = f" | {r['all_within_2pct']} | {r['overspend_micros'] / 1e6:,.2f} |"
        if not r["demand_allowed"]:
            click.echo(head + "— | — | — | — | —" + tail)
            continue
        click.echo(
            head + f"{r['within_2pct']} | {r['at_least_98pct']} | {r['pacing_error_p90']:.2%} | "
            f"{r['pacing_error_max']:.2%} | {r['utilisation']:.1%}" + tail
        )
