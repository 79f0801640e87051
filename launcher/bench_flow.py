"""`kiki bench flow`: the bid loop at scale, budget leases against per-tick reservations;
`kiki bench pacing`: the pacing controller alone, replayed at several start hours."""

from __future__ import annotations

import json
from datetime import datetime

import click

from benchmarks.flow import MODES, pacing_rows
from benchmarks.pacing import SimulationOptions
from kiki.flow.connectors.base import PLATFORMS
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
    leases of --lease-ticks; then ours with the earlier (fill) pacing controller, in the live
    market's conditions (no per-tick cap, spend reported every 60 s), and with the trail in
    one plain table instead of day partitions (side by side: partitioning's cost), with the
    trail's rows and bytes per simulated day. All on one scratch PostgreSQL and one local Ray;
    with --nodes 3 also all on a local 3-node Ray (head without CPUs, budget shards on worker
    a, bid-loop shards on worker b), next to the 1-node figures. Then the nodes of --vcpus
    that 10,000 and 100,000 campaigns would need, from the CPU each shard used."""
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


def _names(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    """A comma-separated choice of `allowed` names, or a usage error naming them."""
    names = [n for n in text.split(",") if n]
    wrong = [n for n in names if n not in allowed]
    if wrong or not names:
        raise click.BadParameter(f"choose from {', '.join(allowed)}", param_hint=flag)
    return names


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
@click.option(
    "--controllers",
    default="fill,curve",
    show_default=True,
    help="Pacing controllers side by side: curve (paces by price, the default) and fill "
    "(the earlier one, on the fill of each tick's capped allowance).",
)
@click.option(
    "--modes",
    default="capped,live",
    show_default=True,
    help="capped: each tick's delivery capped at its allowance (the sandbox's own mode); "
    "live: the live market's conditions, no per-tick cap, spend reported every "
    "--report-delay-s, the daily budget pushed to the platform the only limit.",
)
@click.option(
    "--report-delay-s",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="In live mode, seconds between spend reports (KIKI_FLOW_SPEND_POLL_S live).",
)
@click.option(
    "--first-price",
    default=",".join(PLATFORMS),
    show_default=True,
    help="Platforms that clear at first price in the first-price runs (every run is also "
    "made at second price); empty: second price only.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_pacing(
    campaigns: int,
    hours: float,
    tick_s: float,
    seed: int,
    day: datetime,
    start_hours: str,
    controllers: str,
    modes: str,
    report_delay_s: float,
    first_price: str,
    as_json: bool,
) -> None:
    """Pacing of CAMPAIGNS synthetic campaigns replayed without Ray or a database (the bid
    engine against the sandbox; in capped mode budget leases granted by SyncShield's ledger
    logic): per start hour, mode, auction and controller, over the campaigns the market did
    not limit, cost per click and per conversion, ROAS, cost against the offline optimum of
    the same auctions (median and p90 of the per-campaign ratio) and against the best uniform
    bid per span in hindsight (at first price it pays its bid), how many stay within 2 % and
    5 % of their curves, spend at least 98 %, stay alive for 95 % of their schedules, the
    share of ticks in which a cap bound, and overspend over all campaigns."""
    try:
        starts = [int(h) for h in start_hours.split(",")]
    except ValueError:
        message = "hours as integers, e.g. 0,7,13,19"
        raise click.BadParameter(message, param_hint="--start-hours") from None
    if not starts or any(not 0 <= h <= 23 for h in starts):
        raise click.BadParameter("each hour must be 0..23", param_hint="--start-hours")
    kinds = _names(controllers, ("fill", "curve"), "--controllers")
    chosen = _names(modes, MODES, "--modes")
    platforms = _names(first_price, PLATFORMS, "--first-price") if first_price else []
    options = SimulationOptions(campaigns=campaigns, hours=hours, tick_s=tick_s, seed=seed)
    rows = pacing_rows(
        options, [day.replace(hour=h) for h in starts], kinds, chosen, platforms, report_delay_s
    )
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(
        f"SyncFlow pacing replay: {campaigns} campaigns, {hours:g} h schedules, {tick_s:g} s "
        f"ticks, seed {seed}, live reports every {report_delay_s:g} s; all but overspend over "
        "the campaigns the market did not limit\n\n| start (UTC) | mode | auction | controller "
        "| demand allowed | cost/click | cost/conv. | ROAS | vs optimum p50 / p90 | uniform bid "
        "vs optimum p50 | vs uniform bid p50 / p90 | within 2 % | within 5 % | >= 98 % spent "
        "| alive >= 95 % | cap bound | overspend |\n"
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: |"
    )
    for r in rows:
        click.echo(
            f"| {r['start_utc'][11:16]} | {r['mode']} | {r['auction']} | {r['controller']} | "
            f"{r['demand_allowed']} | {_num(r['cost_per_click'])} | "
            f"{_num(r['cost_per_conversion'])} | {_num(r['roas'])} | "
            f"{_num(r['vs_optimum_median'])} / {_num(r['vs_optimum_p90'])} | "
            f"{_num(r['uniform_vs_optimum_median'])} | "
            f"{_num(r['vs_uniform_median'])} / {_num(r['vs_uniform_p90'])} | "
            f"{r['within_2pct']} | {r['within_5pct']} | {r['at_least_98pct']} | "
            f"{r['alive_95pct']} | {_pct(r['cap_bound_share'])} | {_pct(r['overspend_share'])} |"
        )


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"
