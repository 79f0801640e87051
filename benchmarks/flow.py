"""The bid loop's benchmarks: `kiki bench flow` (budget leases against reserving every pool
every tick, on the real actors, on one node and on three) and `kiki bench pacing` (the pacing
controller replayed without Ray at several start hours, ours against an even split)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from tempfile import TemporaryDirectory
from typing import Any

from actors.budget import ACTOR_PREFIX as BUDGET_PREFIX
from actors.flow.client import ACTOR_PREFIX as BIDLOOP_PREFIX
from actors.guard import GUARD_NAME
from benchmarks.capacity import ShardCosts
from benchmarks.pacing import SimulationOptions, replay_pacing, yardstick
from benchmarks.serving import local_ray, on_worker, scratch_database, three_nodes
from benchmarks.simulate import Placement, SimulationResult, run_simulation
from kiki.db.pool import connect
from kiki.flow.pacing import ControllerConfig, ControllerKind


def lease_runs(
    campaigns: int, minutes: float, tick_s: float, lease_ticks: int, nodes: int = 1
) -> dict[str, Any]:
    """Decisions/s, tick latency, budget time, overspend and CPU per shard of the baseline
    (leases of one tick: reserve and commit every pool every tick) and of leases of
    `lease_ticks`, on one scratch PostgreSQL and one local Ray, with the ratio to the
    baseline. With `nodes` 3 the same runs again on a local 3-node cluster (a fresh scratch
    PostgreSQL), the budget shards on worker a and the bid-loop shards on worker b, so every
    budget call of the loop crosses nodes; those rows also carry the ratio to the 1-node run.
    Returns the rows, where each 3-node run's actors were, and the costs of the last run of
    leases (for `benchmarks.capacity`)."""

    base = SimulationOptions(
        campaigns=campaigns, hours=minutes / 60, tick_s=tick_s, lease_ticks=lease_ticks
    )
    # Leases of one tick against ours; then ours with the earlier pacing controller, in the
    # live market's conditions (no per-tick cap, spend reported every 60 s), and with the
    # trail in one plain table, side by side. name -> (options, trail partitioned by day);
    # the unpartitioned run (the trail as before migration 0018) comes last, on the same
    # database.
    configs = {
        "baseline (lease 1)": (base.model_copy(update={"lease_ticks": 1}), True),
        f"leases of {lease_ticks}": (base, True),
        f"leases of {lease_ticks}, fill controller": (
            base.model_copy(update={"controller": "fill"}),
            True,
        ),
        f"leases of {lease_ticks}, live mode": (
            base.model_copy(update={"tick_cap": False, "report_delay_s": 60.0}),
            True,
        ),
        f"leases of {lease_ticks}, unpartitioned trail": (base, False),
    }
    trails: dict[str, dict[str, int]] = {}

    def runs(
        hosting: AbstractContextManager[dict[str, str] | None], placement: Placement | None
    ) -> dict[str, tuple[SimulationResult, dict[str, str]]]:
        out = {}
        # The decision log lines are written too (to a scratch folder): part of the trail.
        with scratch_database() as url, hosting as names, TemporaryDirectory() as logs:
            for name, (options, partitioned) in configs.items():
                with nullcontext() if partitioned else unpartitioned_trail(url):
                    r = asyncio.run(
                        run_simulation(url, options, logs, placement=placement, measure=True)
                    )
                    trails.setdefault(name, asyncio.run(trail_footprint(url)))
                where = {a: (names or {}).get(u.node_id, "the node") for a, u in r.actors.items()}
                out[name] = (r, where)
        return out

    single = runs(local_ray("kiki-bench", dashboard=True), None)
    multi = {}
    if nodes > 1:
        placement = Placement(budget=on_worker("a"), bidloop=on_worker("b"))
        multi = runs(three_nodes("kiki-bench"), placement)
    rows = {name: _row(r, single) | _per_day(r, trails[name]) for name, (r, _) in single.items()}
    rows |= {f"{name}, 3 nodes": _row(r, multi, single[name][0]) for name, (r, _) in multi.items()}
    last = (multi or single)[f"leases of {lease_ticks}"][0]
    return {
        "rows": rows,
        "placement": {f"{name}, 3 nodes": where for name, (_, where) in multi.items()},
        "costs": shard_costs(last).model_dump(),
    }


def _row(
    r: SimulationResult,
    same_nodes: dict[str, tuple[SimulationResult, dict[str, str]]],
    one_node: SimulationResult | None = None,
) -> dict[str, Any]:
    """One run's figures, its ratio to the baseline on as many nodes and, for a 3-node run,
    to the same configuration on one node."""
    base = next(iter(same_nodes.values()))[0]
    costs = shard_costs(r)
    return {
        "decisions_per_s": round(r.decisions_per_s),
        "tick_ms_p50": round(r.tick_percentile(50), 1),
        "tick_ms_p99": round(r.tick_percentile(99), 1),
        "budget_ms_mean": round(r.phases_ms.get("budget", 0.0), 1),
        "overspend_micros": sum(c.overspend_micros for c in r.campaigns),
        "bidloop_cpu_s_per_shard": round(costs.bidloop_cpu_s / costs.bidloop_shards, 1),
        "budget_cpu_s_per_shard": round(costs.budget_cpu_s / costs.budget_shards, 1),
        "wall_s": round(r.wall_s, 1),
        "ratio": round(r.decisions_per_s / base.decisions_per_s, 2),
        "vs_1_node": round(r.decisions_per_s / one_node.decisions_per_s, 2) if one_node else None,
    }


@contextmanager
def unpartitioned_trail(url: str) -> Iterator[None]:
    """flow_decisions as it was before migration 0018 (one plain table with the same columns
    and index) for the runs inside, the partitioned table back afterwards."""

    async def swap(sql: str) -> None:
        conn = await connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(
        swap(
            """ALTER TABLE flow_decisions RENAME TO flow_decisions_partitioned;
               CREATE TABLE flow_decisions (LIKE flow_decisions_partitioned
                   INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
               CREATE INDEX flow_decisions_plain_by_campaign
                   ON flow_decisions (tenant_id, campaign_id, decided_at);"""
        )
    )
    try:
        yield
    finally:
        asyncio.run(
            swap(
                """DROP TABLE flow_decisions;
                   ALTER TABLE flow_decisions_partitioned RENAME TO flow_decisions;"""
            )
        )


async def trail_footprint(url: str) -> dict[str, int]:
    """Rows in flow_decisions and the bytes they take (heap, indexes, TOAST; every partition
    of a partitioned table: pg_partition_tree lists none for a plain one)."""
    conn = await connect(url)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM flow_decisions) AS rows,
                      coalesce((SELECT sum(pg_total_relation_size(relid))
                                FROM pg_partition_tree('flow_decisions')),
                               pg_total_relation_size('flow_decisions')) AS bytes"""
        )
        return {"rows": row["rows"], "bytes": int(row["bytes"] or 0)}
    finally:
        await conn.close()


def _per_day(r: SimulationResult, trail: dict[str, int]) -> dict[str, Any]:
    """What a simulated day of this run leaves in the trail: rows, and bytes at the table's
    measured bytes per row."""
    rows_per_day = r.audit_rows / (r.options.hours * 3600) * 86_400
    per_row = trail["bytes"] / trail["rows"] if trail["rows"] else 0.0
    return {
        "trail_bytes_per_row": round(per_row, 1),
        "rows_per_day": round(rows_per_day),
        "bytes_per_day": round(rows_per_day * per_row),
    }


def shard_costs(r: SimulationResult) -> ShardCosts:
    """A measured run's totals per kind of actor (`run_simulation(..., measure=True)`)."""

    def cpu(prefix: str) -> tuple[float, int]:
        used = [u.cpu_s for name, u in r.actors.items() if name.startswith(prefix)]
        return sum(used), len(used)

    bidloop_cpu, bidloop_shards = cpu(f"{BIDLOOP_PREFIX}-")
    budget_cpu, budget_shards = cpu(f"{BUDGET_PREFIX}-")
    return ShardCosts(
        campaigns=r.options.campaigns,
        ad_groups=r.options.platforms * r.options.ad_groups,
        ticks=r.ticks,
        wall_s=r.wall_s,
        decisions=r.decisions,
        bidloop_shards=bidloop_shards,
        budget_shards=budget_shards,
        bidloop_cpu_s=bidloop_cpu,
        budget_cpu_s=budget_cpu,
        guard_cpu_s=cpu(GUARD_NAME)[0],
        budget_ms_per_tick=r.phases_ms.get("budget", 0.0),
    )


MODES = ("capped", "live")


def pacing_rows(
    options: SimulationOptions,
    starts: list[datetime],
    controllers: list[ControllerKind],
    modes: list[str],
    first_price: list[str],
    report_delay_s: float,
) -> list[dict[str, Any]]:
    """Per start time, mode, auction and controller, the pacing replay's yardstick (see
    benchmarks/pacing.py): "capped" is the sandbox's own mode (each tick capped at its
    allowance, spend known each tick), "live" the live market's conditions (no per-tick cap,
    spend reported every `report_delay_s`, the daily budget the only limit); "second" clears
    every platform at second price, "first" the `first_price` platforms at first price."""
    auctions = {"second": [], "first": first_price} if first_price else {"second": []}
    rows = []
    for moment in starts:
        start = moment.replace(tzinfo=UTC)
        for mode in modes:
            for auction, platforms in auctions.items():
                run = options.model_copy(
                    update={
                        "tick_cap": mode == "capped",
                        "report_delay_s": report_delay_s if mode == "live" else 0.0,
                        "first_price": platforms,
                    }
                )
                for kind in controllers:
                    results = replay_pacing(
                        run, start, ControllerConfig(kind=kind, tick_capped=run.tick_cap)
                    )
                    rows.append(
                        {
                            "start_utc": start.isoformat(),
                            "seed": options.seed,
                            "mode": mode,
                            "auction": auction,
                            "controller": kind,
                            "campaigns": len(results),
                            **yardstick(results),
                        }
                    )
    return rows
