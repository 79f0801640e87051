"""The real bid loop on a virtual clock against the sandbox exchange (`kiki simulate`).

The driver steps time: at each tick it moves the budget actors' clocks, then has every
bid-loop shard tick at that moment (in parallel), and keeps the wall clock `--speed` times
slower than virtual time (0 = as fast as the loop goes). At the end it settles open
reservations, flushes the audit trail, and scores each campaign against SyncShield's ledger.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import psutil
import ray

from actors.budget import BudgetClient
from actors.flow import BidLoopClient, BidLoopConfig, ShardStats, TickReport
from actors.guard import platform_guard
from benchmarks.pacing import (
    CampaignResult,
    SimulationOptions,
    campaign_result,
    summaries,
    synthetic_campaigns,
)
from benchmarks.serving import actor_nodes
from kiki.auth import ensure_tenant
from kiki.clock import VirtualClock
from kiki.flow import store
from kiki.flow.campaigns import Campaign, budget_op
from kiki.shield.book import BudgetOp
from kiki.shield.ratelimit import RateLimitConfig

# The sandbox's platforms take as many calls as the loop makes; real ones are set by
# KIKI_PLATFORM_RATE_PER_S.
SANDBOX_RATE = RateLimitConfig(rate_per_s=1e6, burst=1_000_000)


@dataclass(frozen=True)
class Placement:
    """More Ray actor options for each kind of shard: a benchmark pins each kind to a node."""

    budget: dict[str, Any] = field(default_factory=dict)
    bidloop: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ActorUse:
    """Where one of the run's actors ran, and the CPU seconds its process used while the
    driver stepped time (from the first tick to the flushed audit trail)."""

    node_id: str
    cpu_s: float


@dataclass
class SimulationResult:
    tenant_id: str
    options: SimulationOptions
    specs: list[Campaign]
    campaigns: list[CampaignResult]
    ticks: int
    decisions: int
    audit_rows: int
    wall_s: float
    tick_ms: list[float]  # per tick, the slowest shard
    phases_ms: dict[str, float]  # mean per tick, slowest shard
    slow_ticks: int
    refused: dict[str, int]  # platform -> ticks its pushes were refused (breaker / rate)
    moments: list[datetime]
    series: dict[str, list[int]]  # campaign -> cumulative spend per moment
    held: dict[str, int]  # campaign -> spend its shard's engine holds at the end (after stop)
    actors: dict[str, ActorUse] = field(default_factory=dict)  # when measured: name -> use

    @property
    def decisions_per_s(self) -> float:
        return self.decisions / self.wall_s if self.wall_s else 0.0

    def tick_percentile(self, q: float) -> float:
        return float(np.percentile(self.tick_ms, q)) if self.tick_ms else 0.0

    def to_json(self) -> dict:
        return {
            "tenant_id": self.tenant_id,
            "options": self.options.model_dump(mode="json"),
            "ticks": self.ticks,
            "decisions": self.decisions,
            "audit_rows": self.audit_rows,
            "wall_s": round(self.wall_s, 3),
            "decisions_per_s": round(self.decisions_per_s),
            "tick_ms": {
                "p50": round(self.tick_percentile(50), 2),
                "p99": round(self.tick_percentile(99), 2),
                "max": round(max(self.tick_ms, default=0.0), 2),
            },
            "phases_ms": {k: round(v, 2) for k, v in self.phases_ms.items()},
            "slow_ticks": self.slow_ticks,
            "refused": self.refused,
            "summary": {
                k: v.model_dump() if v else None for k, v in summaries(self.campaigns).items()
            },
            "campaigns": [c.model_dump() for c in self.campaigns],
        }


async def _ledger(budgets: BudgetClient, campaigns: list[Campaign]) -> dict[str, dict]:
    ops = [BudgetOp("status", c.tenant_id, c.campaign_id) for c in campaigns]
    return {
        op.campaign_id: result.snapshot or {}
        for op, result in zip(ops, await budgets.execute(ops), strict=True)
    }


@dataclass
class _Ticks:
    """What the driver records tick by tick."""

    moments: list[datetime] = field(default_factory=list)
    cumulative: list[list[int]] = field(default_factory=list)  # spend per campaign
    offered: list[list[int]] = field(default_factory=list)  # the market's reach per campaign
    tick_ms: list[float] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # summed over ticks, slowest shard
    refused: dict[str, int] = field(default_factory=dict)  # ticks a platform's push was refused
    decisions: int = 0

    def record(self, now: datetime, reports: list[TickReport], ms: float) -> None:
        self.tick_ms.append(ms)
        for name, phase_ms in max(reports, key=lambda r: r.ms).phases.items():
            self.phases[name] = self.phases.get(name, 0.0) + phase_ms
        self.decisions += sum(r.decisions for r in reports)
        for r in reports:
            for platform in r.refused:
                self.refused[platform] = self.refused.get(platform, 0) + 1
        self.moments.append(now)
        self.cumulative.append([s for r in reports for s in r.spent])
        self.offered.append([s for r in reports for s in r.reachable])


async def _campaigns(
    database_url: str, options: SimulationOptions, start: datetime, run_id: str
) -> tuple[str, list[Campaign]]:
    """A new tenant `sim-<run>` and its synthetic campaigns, stored for the bid loop."""
    conn = await asyncpg.connect(database_url)
    try:
        tenant = await ensure_tenant(conn, f"sim-{run_id}")
        campaigns = synthetic_campaigns(str(tenant.id), options, start)
        async with conn.transaction():
            for campaign in campaigns:
                await store.insert_campaign(conn, campaign, simulation=True)
    finally:
        await conn.close()
    return str(tenant.id), campaigns


async def _drive(
    loops: BidLoopClient,
    budgets: BudgetClient,
    options: SimulationOptions,
    start: datetime,
    reload_after: frozenset[int] = frozenset(),
) -> tuple[_Ticks, float]:
    """Step virtual time tick by tick (one past the end: it collects the last interval's
    delivery and commits it); returns what the ticks did and the wall seconds, the audit
    trail's backlog included (a decision counts once it is logged). After the ticks in
    `reload_after` every shard reloads its campaigns, as an edit through the API makes it."""
    ticks = _Ticks()
    total_ticks = int(np.ceil(options.hours * 3600 / options.tick_s))
    began = time.perf_counter()
    for k in range(total_ticks + 1):
        now = start + timedelta(seconds=k * options.tick_s)
        await budgets.advance_clock(now)
        started = time.perf_counter()
        reports: list[TickReport] = await loops.tick_all(now)
        ticks.record(now, reports, (time.perf_counter() - started) * 1000)
        if k in reload_after:
            await loops.reload_all()
        if options.speed > 0:
            ahead = (k + 1) * options.tick_s / options.speed - (time.perf_counter() - began)
            if ahead > 0:
                await asyncio.sleep(ahead)
    await loops.flush()
    return ticks, time.perf_counter() - began


async def run_simulation(
    database_url: str,
    options: SimulationOptions,
    log_dir: str | None = None,
    shards: int = 2,
    placement: Placement | None = None,
    measure: bool = False,
    reload_after: frozenset[int] = frozenset(),
) -> SimulationResult:
    """Run one simulation on the connected Ray (call ray.init first) and this database.
    `measure`: record each actor's node and CPU seconds (needs Ray's state API: a dashboard).
    `reload_after`: ticks after which every shard reloads its campaigns."""
    placement = placement or Placement()
    run_id = uuid.uuid4().hex[:8]
    namespace = f"kiki-sim-{run_id}"
    start = options.start or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    tenant_id, campaigns = await _campaigns(database_url, options, start, run_id)
    budgets = BudgetClient(
        database_url,
        shards=2,
        namespace=namespace,
        clock=VirtualClock(start),
        detached=False,
        placement=placement.budget,
    )
    # Started (a process each, on a fresh node of a busy machine: can be past a command's
    # deadline) and rebuilt from the ledger before the first command.
    await budgets.ready()
    for result in await budgets.execute([budget_op(c) for c in campaigns]):
        result.raise_for_error()
    guard = platform_guard(namespace=namespace, rate=SANDBOX_RATE.model_dump())
    config = BidLoopConfig(
        namespace=namespace,
        detached=False,
        tick_s=options.tick_s,
        autorun=False,
        seed=options.seed,
        outages=tuple(options.outages),
        log_dir=log_dir,
        guard_rate=SANDBOX_RATE,
        tenant_id=tenant_id,
        value_app=None,  # synthetic segments: the ad groups' stated values
        lease_ticks=options.lease_ticks,
        exchange=options.exchange(),
        controller=options.controller,
        sandbox_tick_cap=options.tick_cap,
        sandbox_report_s=options.report_delay_s,
    )
    loops = BidLoopClient(
        database_url, config, shards=shards, clock=VirtualClock(start), placement=placement.bidloop
    )
    await loops.ready()
    order = [key[1] for stats in await loops.stats() for key in stats.keys]
    processes = actor_nodes(namespace) if measure else {}
    cpu_before = {name: _cpu_s(pid) for name, (_, pid) in processes.items()}
    ticks, wall_s = await _drive(loops, budgets, options, start, reload_after)
    used = {
        name: ActorUse(node, _cpu_s(pid) - cpu_before[name])
        for name, (node, pid) in processes.items()
    }
    audit_rows = await loops.stop()
    stats = await loops.stats()
    conn = await asyncpg.connect(database_url)
    try:
        await store.stop_simulation(conn, tenant_id)
    finally:
        await conn.close()
    ledger = await _ledger(budgets, campaigns)
    # The simulation's actors end with it, so they stop holding the cluster's CPUs.
    loops.kill()
    budgets.kill()
    ray.kill(guard, no_restart=True)
    result = _result(tenant_id, options, campaigns, order, ticks, wall_s, audit_rows, stats, ledger)
    result.actors = used
    return result


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process on this machine has used so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _result(
    tenant_id: str,
    options: SimulationOptions,
    campaigns: list[Campaign],
    order: list[str],
    ticks: _Ticks,
    wall_s: float,
    audit_rows: int,
    stats: list[ShardStats],
    ledger: dict[str, dict],
) -> SimulationResult:
    """Each campaign scored against SyncShield's ledger, and the run's figures."""
    value = {key[1]: v for s in stats for key, v in zip(s.keys, s.value, strict=True)}
    held = {key[1]: v for s in stats for key, v in zip(s.keys, s.spent, strict=True)}
    series = {cid: [row[i] for row in ticks.cumulative] for i, cid in enumerate(order)}
    reachable = {cid: [row[i] for row in ticks.offered] for i, cid in enumerate(order)}
    count = len(ticks.tick_ms)
    return SimulationResult(
        tenant_id=tenant_id,
        options=options,
        specs=campaigns,
        campaigns=[
            campaign_result(
                c,
                ticks.moments,
                series[c.campaign_id],
                ledger[c.campaign_id].get("committed", 0),
                ledger[c.campaign_id].get("over_delivered", 0),
                value[c.campaign_id],
                reachable[c.campaign_id],
            )
            for c in campaigns
        ],
        ticks=count,
        decisions=ticks.decisions,
        audit_rows=audit_rows,
        wall_s=wall_s,
        tick_ms=ticks.tick_ms,
        phases_ms={k: v / count for k, v in ticks.phases.items()},
        slow_ticks=sum(s.slow_ticks for s in stats),
        refused=ticks.refused,
        moments=ticks.moments,
        series=series,
        held=held,
    )


def write_chart(result: SimulationResult, path: Path) -> None:
    """Cumulative spend vs the pacing target, as a share of budget, for up to 8 campaigns."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from kiki.flow.pacing import TargetCurve

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    hours = [(m - result.moments[0]).total_seconds() / 3600 for m in result.moments]
    for campaign in result.specs[:8]:
        curve = TargetCurve(campaign.pacing_plan())
        budget = campaign.budget_micros
        spent = [s / budget for s in result.series[campaign.campaign_id]]
        (line,) = ax.plot(hours, spent, label=f"{campaign.campaign_id} ({campaign.pacing.shape})")
        ax.plot(hours, [curve.share(m) for m in result.moments], "--", color=line.get_color())
    ax.set_xlabel("hours since start")
    ax.set_ylabel("cumulative spend / budget")
    ax.set_title("Spend (solid) vs pacing target (dashed)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(result: SimulationResult) -> str:
    head = (
        "| campaign | budget | spend | utilisation | max pacing error | overspend | ROAS "
        "| market shortfall |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    rows = [
        f"| {c.campaign_id} | {c.budget_micros / 1e6:,.2f} | {c.spend_micros / 1e6:,.2f} | "
        f"{c.utilisation:.1%} | {c.max_pacing_error:.2%} | {c.overspend_micros / 1e6:,.2f} | "
        f"{'-' if c.roas is None else f'{c.roas:.2f}'} | {c.market_shortfall:.2%} |"
        for c in result.campaigns
    ]
    return "\n".join([head, *rows])


def report(result: SimulationResult, chart: Path) -> str:
    """The run's figures under the table: throughput, tick latency, pacing by group."""
    summary = result.to_json()
    return (
        f"\n{result.ticks} ticks, {result.decisions:,} decisions in {result.wall_s:.1f}s wall "
        f"({summary['decisions_per_s']:,} decisions/s logged; audit rows {result.audit_rows:,})"
        f"\ntick ms p50 {summary['tick_ms']['p50']} p99 {summary['tick_ms']['p99']} "
        f"max {summary['tick_ms']['max']}; mean per phase {summary['phases_ms']}"
        + "".join(
            f"\n{name}: {s.campaigns} campaigns, overspend {s.overspend_micros / 1e6:,.2f}, "
            f"utilisation {s.utilisation:.1%} (median {s.utilisation_median:.1%}, "
            f"{s.at_least_98pct} >= 98 %), max pacing error median "
            f"{s.pacing_error_median:.2%} p90 {s.pacing_error_p90:.2%} max "
            f"{s.pacing_error_max:.2%} ({s.within_2pct} <= 2 %)"
            for name, s in summaries(result.campaigns).items()
            if s is not None
        )
        + f"\nrefused pushes (ticks) {result.refused or 'none'}; chart {chart}; "
        f"tenant {result.tenant_id}"
    )
