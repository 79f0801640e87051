"""The simulator's pure parts: synthetic campaigns, the per-campaign report, and a replay of
the pacing alone.

`kiki simulate` (launcher/simulate.py) runs the real bid-loop actors, budget actors, audit
trail and sandbox exchange on a virtual clock; this module decides what to run and scores it.
`replay_pacing` runs the same engine, leases and ledger rules against the same sandbox without
Ray or a database, in seconds for 1,000 campaigns: what `kiki bench pacing` compares
controllers with, in the sandbox's own mode (each tick capped at its allowance) and in the live
market's conditions (no per-tick cap, spend reported late, the daily budget the only limit), and
against the offline optimum of the same auctions (kiki.flow.optimum).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
from pydantic import BaseModel, Field

from kiki.flow.campaigns import AdGroup, Campaign, CampaignStatus, PacingSettings, budget_op
from kiki.flow.connectors.base import PLATFORMS
from kiki.flow.engine import BidEngine
from kiki.flow.exchange import (
    ExchangeConfig,
    SandboxExchange,
    SpendReports,
    Units,
    sandbox_units,
)
from kiki.flow.leases import LeaseBook, commit_op
from kiki.flow.optimum import OfflineOptimum
from kiki.flow.pacing import (
    ControllerConfig,
    ControllerKind,
    TargetCurve,
    market_shortfall,
    pacing_error,
)
from kiki.money import sum_micros_by
from kiki.shield.book import BudgetBook, BudgetOp, OpResult

_ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo")


# A campaign whose market could not have kept it this close to its curve (market_shortfall)
# lacked demand: the pacing targets are judged over the others.
DEMAND_MARGIN = 0.02


class SimulationOptions(BaseModel):
    campaigns: int = Field(10, ge=1, le=100_000)
    hours: float = Field(2.0, gt=0, le=24 * 31)
    speed: float = Field(0.0, ge=0, description="virtual seconds per wall second; 0 = flat out")
    seed: int = 0
    tick_s: float = Field(2.0, gt=0, le=3600)
    platforms: int = Field(5, ge=1, le=len(PLATFORMS))
    ad_groups: int = Field(4, ge=1, le=100)
    outages: list[str] = Field(default_factory=list, description="sandbox platforms that are down")
    lease_ticks: int = Field(10, ge=1, le=1000, description="ticks a budget lease covers")
    start: datetime | None = None
    budget_per_hour: tuple[int, int] = (1_000, 3_000)  # whole currency units, drawn per campaign
    tick_cap: bool = Field(
        True, description="cap each tick's delivery at its allowance (the sandbox's own mode)"
    )
    report_delay_s: float = Field(
        0.0, ge=0, le=3600, description="spend reported every this many seconds; 0 = each tick"
    )
    first_price: list[str] = Field(
        default_factory=list, description="sandbox platforms that clear at first price"
    )
    controller: ControllerKind = Field("curve", description="the pacing controller")

    def exchange(self) -> ExchangeConfig:
        return ExchangeConfig(auction=dict.fromkeys(self.first_price, "first"))


def synthetic_campaigns(
    tenant_id: str, options: SimulationOptions, start: datetime
) -> list[Campaign]:
    """Campaigns with seeded budgets, goals, time zones and pacing shapes, all running over
    [start, start + hours)."""
    rng = np.random.default_rng(options.seed)
    end = start + timedelta(hours=options.hours)
    out = []
    for i in range(options.campaigns):
        per_hour = int(rng.integers(*options.budget_per_hour))
        budget_micros = int(per_hour * options.hours * 1_000_000)
        roas = rng.random() < 0.7
        groups = tuple(
            AdGroup(
                ad_group_id=f"ag{j}",
                segment=f"seg{int(rng.integers(0, 50))}",
                value_per_conversion=Decimal(int(rng.integers(30, 120))),
            )
            for j in range(options.ad_groups)
        )
        out.append(
            Campaign(
                tenant_id=tenant_id,
                campaign_id=f"sim{i:05d}",
                name=f"simulated campaign {i}",
                status=CampaignStatus.RUNNING,
                starts_at=start,
                ends_at=end,
                timezone=str(rng.choice(_ZONES)),
                budget_micros=budget_micros,
                currency="USD",
                goal_kind="roas" if roas else "cpa",
                goal_target=Decimal(str(round(float(rng.uniform(1.5, 3.0)), 2)))
                if roas
                else Decimal(int(rng.integers(15, 40)) * 1_000_000),
                platforms=PLATFORMS[: options.platforms],
                ad_groups=groups,
                max_bid_micros=None,
                pacing=PacingSettings(shape="traffic" if rng.random() < 0.5 else "even"),
            )
        )
    return out


class CampaignResult(BaseModel):
    campaign_id: str
    budget_micros: int
    spend_micros: int  # committed in SyncShield's ledger
    utilisation: float
    max_pacing_error: float
    overspend_micros: int
    over_delivered_micros: int
    roas: float | None
    market_shortfall: float = Field(
        description="how far behind its curve (share of budget) the market left even a bidder "
        "who saw every auction in advance, at the highest bids the goal allowed"
    )
    # Scored by the replay only (`kiki bench pacing`):
    clicks: int | None = None
    conversions: int | None = None
    cost_vs_optimum: float | None = Field(
        None, description="cost per unit of goal / the offline optimum's on the same auctions"
    )
    uniform_vs_optimum: float | None = Field(
        None,
        description="the best uniform bid per span in hindsight (paying its bid at first "
        "price): its cost per unit of goal / the offline optimum's",
    )
    alive_share: float | None = Field(
        None, description="share of the schedule before 99 % of the budget was spent"
    )
    cap_bound_share: float | None = Field(
        None, description="share of live ticks in which a cap stopped a won auction"
    )


def campaign_result(
    campaign: Campaign,
    moments: list[datetime],
    cumulative: list[int],
    ledger_committed: int,
    over_delivered: int,
    value_micros: int,
    reachable: list[int],
) -> CampaignResult:
    """Score one campaign: `cumulative` is its spend at each of `moments` (tick times),
    `reachable` what the market offered it at its goal's highest bids in the interval ending
    at each."""
    budget = campaign.budget_micros
    curve = TargetCurve(campaign.pacing_plan())
    return CampaignResult(
        campaign_id=campaign.campaign_id,
        budget_micros=budget,
        spend_micros=ledger_committed,
        utilisation=ledger_committed / budget,
        max_pacing_error=pacing_error(curve, budget, moments, cumulative),
        overspend_micros=max(0, ledger_committed - budget),
        over_delivered_micros=over_delivered,
        roas=value_micros / ledger_committed if ledger_committed else None,
        market_shortfall=market_shortfall(curve, budget, moments, reachable),
    )


class Summary(BaseModel):
    """The targets, over a group of campaigns."""

    campaigns: int
    overspend_micros: int
    utilisation: float  # total spend / total budget
    utilisation_median: float
    at_least_98pct: int  # campaigns with utilisation >= 98 %
    pacing_error_median: float
    pacing_error_p90: float
    pacing_error_max: float
    within_2pct: int  # campaigns with max pacing error <= 2 %


def summarize(results: list[CampaignResult]) -> Summary | None:
    if not results:
        return None
    utilisation = np.array([r.utilisation for r in results])
    errors = np.array([r.max_pacing_error for r in results])
    return Summary(
        campaigns=len(results),
        overspend_micros=sum(r.overspend_micros for r in results),
        utilisation=sum(r.spend_micros for r in results) / sum(r.budget_micros for r in results),
        utilisation_median=float(np.median(utilisation)),
        at_least_98pct=int((utilisation >= 0.98).sum()),
        pacing_error_median=float(np.median(errors)),
        pacing_error_p90=float(np.percentile(errors, 90)),
        pacing_error_max=float(errors.max()),
        within_2pct=int((errors <= 0.02).sum()),
    )


def summaries(results: list[CampaignResult]) -> dict[str, Summary | None]:
    """Over all campaigns, and over those that demand allowed (the market could have kept
    them within DEMAND_MARGIN of their curves at the bids their goals allowed)."""
    allowed = [r for r in results if r.market_shortfall <= DEMAND_MARGIN]
    return {"all": summarize(results), "demand_allowed": summarize(allowed)}


def yardstick(results: list[CampaignResult]) -> dict[str, float | int | None]:
    """`kiki bench pacing`'s columns over the campaigns demand allowed (cost, pacing, the
    optimum, life, caps), and overspend over all of them. Costs are totals over the group;
    cost vs optimum is per campaign (median and p90)."""
    allowed = [r for r in results if r.market_shortfall <= DEMAND_MARGIN]
    spend = sum(r.spend_micros for r in allowed)
    clicks = sum(r.clicks or 0 for r in allowed)
    conversions = sum(r.conversions or 0 for r in allowed)
    value = sum((r.roas or 0.0) * r.spend_micros for r in allowed)
    ratios = [r.cost_vs_optimum for r in allowed if r.cost_vs_optimum is not None]
    uniform = [r.uniform_vs_optimum for r in allowed if r.uniform_vs_optimum is not None]
    # The controller against the uniform bid: its ratio to the optimum over the bid's.
    vs_uniform = [
        r.cost_vs_optimum / r.uniform_vs_optimum
        for r in allowed
        if r.cost_vs_optimum is not None and r.uniform_vs_optimum
    ]
    errors = np.array([r.max_pacing_error for r in allowed])
    alive = np.array([r.alive_share or 0.0 for r in allowed])
    budget = sum(r.budget_micros for r in results)
    return {
        "demand_allowed": len(allowed),
        "cost_per_click": spend / clicks / 1e6 if clicks else None,
        "cost_per_conversion": spend / conversions / 1e6 if conversions else None,
        "roas": value / spend if spend else None,
        "vs_optimum_median": float(np.median(ratios)) if ratios else None,
        "vs_optimum_p90": float(np.percentile(ratios, 90)) if ratios else None,
        "uniform_vs_optimum_median": float(np.median(uniform)) if uniform else None,
        "vs_uniform_median": float(np.median(vs_uniform)) if vs_uniform else None,
        "vs_uniform_p90": float(np.percentile(vs_uniform, 90)) if vs_uniform else None,
        "within_2pct": int((errors <= 0.02).sum()),
        "within_5pct": int((errors <= 0.05).sum()),
        "at_least_98pct": sum(r.utilisation >= 0.98 for r in allowed),
        "alive_95pct": int((alive >= 0.95).sum()),
        "alive_median": float(np.median(alive)) if allowed else None,
        "overspend_share": sum(r.overspend_micros for r in results) / budget,
        "overspend_max_share": max(r.overspend_micros / r.budget_micros for r in results),
        "cap_bound_share": float(np.mean([r.cap_bound_share or 0.0 for r in allowed]))
        if allowed
        else None,
    }


REPLAY_TENANT = "00000000-0000-0000-0000-000000000000"


# Spans of the schedule the offline optimum places each share of the budget in.
OPTIMUM_WINDOWS = 20


def replay_pacing(
    options: SimulationOptions, start: datetime, controller: ControllerConfig | None = None
) -> list[CampaignResult]:
    """Pace `options`' synthetic campaigns from `start` with one engine against the sandbox and
    score them: the bid loop's tick without Ray or a database. With the tick cap (the
    sandbox's mode), budget leases are renewed as the bid-loop actor renews them and granted by
    SyncShield's own ledger logic (`BudgetBook`, in memory), so spend and overspend come from
    the same rules `kiki simulate` runs. Without it (the live market's conditions) nothing caps
    a tick: each pool's platform stops only at the daily budget last pushed to it
    (`BidEngine.daily_budgets`, pushed at each report) and spend is what the platform
    delivered, reported to the engine every `report_delay_s`."""
    campaigns = synthetic_campaigns(REPLAY_TENANT, options, start)
    engine = BidEngine(campaigns, controller)
    units = sandbox_units(engine)
    exchange = SandboxExchange(units, options.exchange(), options.seed)
    keys, pool_campaign = engine.campaign_keys(), engine.pool_campaign
    ledger = BudgetBook()
    _execute(ledger, [budget_op(c) for c in campaigns], start)
    leases = LeaseBook(pool_campaign, options.lease_ticks)
    none = np.zeros(len(engine.unit_pool), dtype=np.int64)  # no segment values: defaults
    engine.observe(none, none, none, none)
    tick = timedelta(seconds=options.tick_s)
    ticks = int(np.ceil(options.hours * 3600 / options.tick_s))
    end = start + timedelta(hours=options.hours)
    optimum = OfflineOptimum(
        engine.unit_campaign, _goal_weights(engine, units), _window_budgets(engine, start, end)
    )
    reports = SpendReports(options.report_delay_s, start)
    daily = engine.daily_budgets()
    n = len(campaigns)
    moments: list[datetime] = []
    spent: list[np.ndarray] = []
    reachable: list[np.ndarray] = []
    bound, live_ticks = np.zeros(n), np.zeros(n)
    for k in range(ticks + 1):
        now = start + k * tick
        offered = np.zeros(n, dtype=np.int64)
        if k:
            caps = (
                engine.pool_cap if options.tick_cap else np.maximum(daily - exchange.pool_spent, 0)
            )
            delivered = exchange.run(now - tick, options.tick_s, caps)
            optimum.add((k - 1) * OPTIMUM_WINDOWS // ticks, *exchange.last_auctions)
            bound += np.bincount(pool_campaign, exchange.last_bound, n) > 0
            fresh = reports.add(delivered, now)
            pool_spend = engine.observe(*reports.take() if fresh else (none,) * 4, fresh=fresh)
            leases.spend(pool_spend)
            if fresh:
                daily = engine.daily_budgets()
            offered = sum_micros_by(engine.unit_campaign, delivered.reachable_micros, n)
        plan = engine.decide(now, now + tick, none)
        live_ticks += plan.live
        if options.tick_cap:
            renewals = leases.renewals(
                k, plan.reserve, plan.live[pool_campaign], engine.budget - engine.spent
            )
            commits, reserves = leases.ops(renewals, keys, engine.pool_platform, f"replay:{k}")
            leases.settle(renewals, _execute(ledger, commits + reserves, now)[len(commits) :], k)
            engine.granted(leases.caps(plan.reserve))
        exchange.bids[:] = plan.bids
        exchange.reach_bids[:] = plan.ceiling_bids
        moments.append(now)
        spent.append(sum_micros_by(pool_campaign, exchange.pool_spent, n))
        reachable.append(offered)
    _execute(
        ledger, [commit_op(keys[pool_campaign[p]], *lease) for p, *lease in leases.close_all()], end
    )
    over_time, offered_over_time = np.array(spent), np.array(reachable)
    total = exchange.totals()
    clicks = total.clicks
    own = optimum.own_units(clicks.astype(float))
    best = optimum.cost_per_unit()
    true_spend = over_time[-1]
    committed = [
        ledger.campaigns[keys[i]].committed if options.tick_cap else int(true_spend[i])
        for i in range(n)
    ]
    with np.errstate(divide="ignore", invalid="ignore"):
        vs_optimum = true_spend / own / best
        uniform = optimum.uniform_bid_cost_per_unit() / best
    gone = over_time >= 0.99 * engine.budget  # per moment and campaign: budget spent
    spent_out = np.where(gone.any(axis=0), np.argmax(gone, axis=0), ticks)
    value = sum_micros_by(engine.unit_campaign, total.value_micros, n)
    return [
        campaign_result(
            c,
            moments,
            over_time[:, i].tolist(),
            ledger_committed=committed[i],
            over_delivered=0,
            value_micros=int(value[i]),
            reachable=offered_over_time[:, i].tolist(),
        ).model_copy(
            update={
                "clicks": int(clicks[engine.unit_campaign == i].sum()),
                "conversions": int(total.conversions[engine.unit_campaign == i].sum()),
                "cost_vs_optimum": float(vs_optimum[i]) if np.isfinite(vs_optimum[i]) else None,
                "uniform_vs_optimum": float(uniform[i]) if np.isfinite(uniform[i]) else None,
                "alive_share": min(1.0, spent_out[i] / ticks),
                "cap_bound_share": float(bound[i] / max(live_ticks[i], 1)),
            }
        )
        for i, c in enumerate(campaigns)
    ]


def _goal_weights(engine: BidEngine, units: Units) -> np.ndarray:
    """What a click of each unit is worth to its campaign's goal (the optimum's unit): an
    expected conversion for a CPA goal, expected conversion value for a ROAS goal."""
    roas = engine.is_roas[engine.unit_campaign]
    return np.where(roas, units.true_cvr * units.true_value_micros, units.true_cvr)


def _window_budgets(engine: BidEngine, start: datetime, end: datetime) -> np.ndarray:
    """Per campaign and optimum window: the curve's share of the budget in it (micros)."""
    edges = [start + (end - start) * w / OPTIMUM_WINDOWS for w in range(OPTIMUM_WINDOWS + 1)]
    targets = np.array(
        [
            [curve.target_micros(e, int(b)) for e in edges]
            for curve, b in zip(engine.curves, engine.budget, strict=True)
        ]
    )
    return np.diff(targets, axis=1).astype(float)


def _execute(ledger: BudgetBook, ops: list[BudgetOp], now: datetime) -> list[OpResult]:
    events: list = []
    created: list = []
    results = [ledger.execute(op, now, events, created) for op in ops]
    for result in results:
        result.raise_for_error()
    return results
