"""`kiki bench flow`: the bid loop at scale, budget leases against per-tick reservations;
`kiki bench pacing`: the pacing controller alone, replayed at several start hours."""

from __future__ import annotations

import json
from datetime import datetime

import click

from benchmarks.flow import pacing_rows
from launcher.bench import nodes_option


@click.command("flow")
@click.option("--campaigns", default=1000, show_default=True)
@click.option("--minutes", default=3.0, show_default=True, help="Virtual minutes per run.")
@click.option("--tick-s", default=2.0, show_default=True)
@click.option("--lease-ticks", default=10, show_default=True, help="Ticks one lease covers.")
@nodes_option("3: also run on a local 3-node Ray, budget and bid-loop shards on different nodes.")
@click.option("--vcpus", default=8, show_default=True, help="Node size of the projection.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_flow(
    campaigns: int,
    minutes: float,
    tick_s: float,
    lease_ticks: int,
    nodes: str,
    vcpus: int,
    as_json: bool,
) -> None:
    """Decisions logged per second and tick latency for CAMPAIGNS x 5 platforms x 4 ad
    groups on the simulator (real bid-loop and budget actors, audit trail in PostgreSQL and
    `decision:` log lines):
    the baseline reserves and commits every pool every tick (leases of one tick), ours holds
    leases of --lease-ticks, and ours again with the trail in one plain table instead of day
    partitions (side by side: partitioning's cost), with the trail's rows and bytes per
    simulated day. All on one scratch PostgreSQL and one local Ray; with --nodes 3
    also both on a local 3-node Ray (head without CPUs, budget shards on worker a, bid-loop
    shards on worker b), next to the 1-node figures. Then the nodes of --vcpus that 10,000
    and 100,000 campaigns would need, from the CPU each shard used."""
    from benchmarks.capacity import ShardCosts, explain, project
    from benchmarks.flow import lease_runs

    out = lease_runs(campaigns, minutes, tick_s, lease_ticks, int(nodes))
    costs = ShardCosts(**out["costs"])
    projections = {n: project(costs, n, tick_s, vcpus) for n in (10_000, 100_000)}
    if as_json:
        out["projection"] = {n: p.model_dump() for n, p in projections.items()}
        click.echo(json.dumps(out))
        return
    click.echo(
        f"SyncFlow bid loop: {campaigns} campaigns x 5 platforms x 4 ad groups, "
        f"{minutes:g} virtual minutes at {tick_s:g} s ticks\n"
    )
    click.echo(
        "| run | decisions/s | tick p50 ms | tick p99 ms | budget ms/tick | overspend "
        "| bid-loop CPU s/shard | budget CPU s/shard | wall s | ratio | vs 1 node |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for name, r in out["rows"].items():
        versus = "" if r["vs_1_node"] is None else f"{r['vs_1_node']:.2f}x"
        click.echo(
            f"| {name} | {r['decisions_per_s']:,} | {r['tick_ms_p50']} | {r['tick_ms_p99']} | "
            f"{r['budget_ms_mean']} | {r['overspend_micros']} | "
            f"{r['bidloop_cpu_s_per_shard']} | {r['budget_cpu_s_per_shard']} | {r['wall_s']} | "
            f"{r['ratio']:.2f}x | {versus} |"
        )
    click.echo(
        "\nAudit trail per simulated day (one row a decision; bytes from "
        "pg_total_relation_size of the table and its index, every partition):\n\n"
        "| run | rows/day | bytes/row | GiB/day |\n| --- | ---: | ---: | ---: |"
    )
    for name, r in out["rows"].items():
        if "rows_per_day" in r:
            click.echo(
                f"| {name} | {r['rows_per_day']:,} | {r['trail_bytes_per_row']} | "
                f"{r['bytes_per_day'] / 2**30:,.1f} |"
            )
    for name, where in out["placement"].items():
        click.echo(f"\n{name}: " + ", ".join(f"{a} on {n}" for a, n in sorted(where.items())))
    click.echo(
        f"\nMeasured in the last run of leases: {costs.decisions_per_s_per_shard:,.0f} "
        f"decisions/s per bid-loop shard, {costs.bidloop_cpu_us_per_decision:.1f} us bid-loop "
        f"CPU per decision; budget {costs.budget_ms_per_tick:.1f} ms per tick (slowest shard), "
        f"{costs.budget_cpu_us_per_campaign_tick:.1f} us budget CPU per campaign-tick"
    )
    for p in projections.values():
        click.echo("\n" + explain(costs, p))


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
