"""`kiki bench flow`: the bid loop at scale, budget leases against per-tick reservations."""

from __future__ import annotations

import asyncio
import json
from tempfile import TemporaryDirectory

import click

from launcher.bench import scratch_database


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
    from benchmarks.serving import local_ray
    from kiki.flow.simulation import SimulationOptions
    from launcher.simulate import SimulationResult, run_simulation

    def options(lease: int) -> SimulationOptions:
        return SimulationOptions(
            campaigns=campaigns, hours=minutes / 60, tick_s=tick_s, lease_ticks=lease
        )

    runs: dict[str, SimulationResult] = {}
    # The decision log lines are written too (to a scratch folder): they are part of the trail.
    with scratch_database() as url, local_ray("kiki-bench"), TemporaryDirectory() as logs:
        for name, lease in (("baseline (lease 1)", 1), (f"leases of {lease_ticks}", lease_ticks)):
            runs[name] = asyncio.run(run_simulation(url, options(lease), log_dir=logs))
    base = next(iter(runs.values()))
    rows = {
        name: {
            "decisions_per_s": round(r.decisions_per_s),
            "tick_ms_p50": round(r.tick_percentile(50), 1),
            "tick_ms_p99": round(r.tick_percentile(99), 1),
            "budget_ms_mean": round(r.phases_ms.get("budget", 0.0), 1),
            "overspend_micros": sum(c.overspend_micros for c in r.campaigns),
            "ratio": round(r.decisions_per_s / base.decisions_per_s, 2),
        }
        for name, r in runs.items()
    }
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
