"""`kiki simulate`: the command; the simulation itself is benchmarks/simulate.py."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import click

from benchmarks.pacing import SimulationOptions
from benchmarks.simulate import report, run_simulation, table, write_chart
from kiki.artifacts import ArtifactStore
from kiki.flow.connectors.base import PLATFORMS
from launcher.exits import fail, settings_or_exit


def _parse_start(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not ISO 8601, e.g. 2026-11-28T00:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command("simulate")
@click.option("--campaigns", default=10, show_default=True, help="Synthetic campaigns.")
@click.option("--hours", default=2.0, show_default=True, help="Virtual hours to run.")
@click.option(
    "--speed", default=0.0, show_default=True, help="Virtual seconds per wall second; 0 = max."
)
@click.option("--seed", default=0, show_default=True)
@click.option("--tick-s", default=2.0, show_default=True, help="Virtual seconds per tick.")
@click.option("--platforms", default=5, show_default=True, help="Platforms per campaign (1-5).")
@click.option("--ad-groups", default=4, show_default=True, help="Ad groups per campaign.")
@click.option("--shards", default=2, show_default=True, help="Bid-loop actors.")
@click.option(
    "--start",
    "start_at",
    callback=_parse_start,
    help="Virtual start, ISO 8601 (UTC unless it has an offset), e.g. 2026-11-28T00:00; "
    "default: this hour. Time zones and traffic-shaped curves make pacing depend on it.",
)
@click.option(
    "--fail-platform",
    "outages",
    multiple=True,
    type=click.Choice(PLATFORMS),
    help="A sandbox platform that is down for the whole run (repeatable).",
)
@click.option(
    "--controller",
    type=click.Choice(["curve", "fill"]),
    default="curve",
    show_default=True,
    help="Pacing controller: curve paces by price on the curve error; fill, the earlier one, "
    "on the fill of each tick's capped allowance.",
)
@click.option(
    "--live",
    is_flag=True,
    help="The live market's conditions in the sandbox: no per-tick cap (each pool stops only "
    "at the daily budget pushed to its platform) and spend reported every --report-delay-s.",
)
@click.option(
    "--report-delay-s",
    default=60.0,
    show_default=True,
    help="With --live, seconds between spend reports (as KIKI_FLOW_SPEND_POLL_S live).",
)
@click.option(
    "--first-price",
    multiple=True,
    type=click.Choice(PLATFORMS),
    help="A sandbox platform that clears at first price (repeatable; default second price).",
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("simulation.png"),
    show_default=True,
    help="PNG of cumulative spend vs target.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def simulate(
    campaigns: int,
    hours: float,
    speed: float,
    seed: int,
    tick_s: float,
    platforms: int,
    ad_groups: int,
    shards: int,
    start_at: datetime | None,
    outages: tuple[str, ...],
    controller: str,
    live: bool,
    report_delay_s: float,
    first_price: tuple[str, ...],
    chart: Path,
    as_json: bool,
) -> None:
    """Run synthetic campaigns through the real bid-loop and budget actors, the audit trail
    and the sandbox exchange on a virtual clock; print per campaign budget, spend,
    utilisation, max pacing error, overspend, ROAS and the market's shortfall (how far behind
    even a bidder seeing every auction would have been at the bids the goal allowed; the
    "demand_allowed" summary is over campaigns with at most 2 %), the loop's decisions/s and
    tick latency, and write a chart (here and in the artifact store). Decisions go to the
    platform's database under a new tenant `sim-<id>` and to decision logs under
    KIKI_HOME/logs."""
    from pydantic import ValidationError

    from benchmarks.serving import local_ray
    from launcher.platform import database

    try:
        options = SimulationOptions(
            campaigns=campaigns,
            hours=hours,
            speed=speed,
            seed=seed,
            tick_s=tick_s,
            platforms=platforms,
            ad_groups=ad_groups,
            outages=list(outages),
            start=start_at,
            controller=controller,
            tick_cap=not live,
            report_delay_s=report_delay_s if live else 0.0,
            first_price=list(first_price),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}", 2)
    settings = settings_or_exit()
    log_dir = str(settings.log_dir)
    with database(settings) as url, local_ray("kiki-simulate"):
        result = asyncio.run(run_simulation(url, options, log_dir, shards))
    write_chart(result, chart)
    # Kept beside the run's decisions, where any node (and the console) can read it.
    stored = ArtifactStore.from_settings(settings).put_bytes(
        f"simulations/{result.tenant_id}.png", chart.read_bytes()
    )
    if as_json:
        click.echo(json.dumps({**result.to_json(), "chart": str(chart), "chart_url": stored}))
        return
    click.echo(table(result))
    click.echo(report(result, chart))
    click.echo(f"chart kept in the artifact store: {stored}")
