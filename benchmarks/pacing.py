"""The simulator's pure parts: synthetic campaigns, the per-campaign report, and a replay of
the pacing alone.

`kiki simulate` (launcher/simulate.py) runs the real bid-loop actors, budget actors, audit
trail and sandbox exchange on a virtual clock; this module decides what to run and scores it.
`replay_pacing` runs the same engine, leases and ledger rules against the same sandbox without
Ray or a database, in seconds for 1,000 campaigns: what `kiki bench pacing` compares
controllers with.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
from pydantic import BaseModel, Field

from kiki.flow.campaigns import AdGroup, Campaign, CampaignStatus, PacingSettings, budget_op
from kiki.flow.connectors.base import PLATFORMS
from kiki.flow.engine import BidEngine
from kiki.flow.exchange import ExchangeConfig, SandboxExchange, sandbox_units
from kiki.flow.leases import LeaseBook, commit_op
from kiki.flow.pacing import ControllerConfig, TargetCurve, market_shortfall, pacing_error
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


REPLAY_TENANT = "00000000-0000-0000-0000-000000000000"


def replay_pacing(
    options: SimulationOptions, start: datetime, controller: ControllerConfig | None = None
) -> list[CampaignResult]:
    """Pace `options`' synthetic campaigns from `start` with one engine against the sandbox and
    score them: the bid loop's tick without Ray or a database. Budget leases are renewed as
    the bid-loop actor renews them and granted by SyncShield's own ledger logic (`BudgetBook`,
    in memory), so spend and overspend come from the same rules `kiki simulate` runs."""
    campaigns = synthetic_campaigns(REPLAY_TENANT, options, start)
    engine = BidEngine(campaigns, controller)
    exchange = SandboxExchange(sandbox_units(engine), ExchangeConfig(), options.seed)
    keys, pool_campaign = engine.campaign_keys(), engine.pool_campaign
    ledger = BudgetBook()
    _execute(ledger, [budget_op(c) for c in campaigns], start)
    leases = LeaseBook(pool_campaign, options.lease_ticks)
    none = np.zeros(len(engine.unit_pool), dtype=np.int64)  # no segment values: defaults
    engine.observe(none, none, none, none)
    tick = timedelta(seconds=options.tick_s)
    moments: list[datetime] = []
    spent: list[np.ndarray] = []
    reachable: list[np.ndarray] = []
    nothing_offered = np.zeros(len(campaigns), dtype=np.int64)
    for k in range(int(np.ceil(options.hours * 3600 / options.tick_s)) + 1):
        now = start + k * tick
        offered = nothing_offered
        if k:
            offered = _deliver(exchange, engine, leases, now - tick, options.tick_s)
        plan = engine.decide(now, now + tick, none)
        renewals = leases.renewals(
            k, plan.reserve, plan.live[pool_campaign], engine.budget - engine.spent
        )
        commits, reserves = leases.ops(renewals, keys, engine.pool_platform, f"replay:{k}")
        leases.settle(renewals, _execute(ledger, commits + reserves, now)[len(commits) :], k)
        engine.granted(leases.caps(plan.reserve))
        exchange.bids[:] = plan.bids
        exchange.reach_bids[:] = plan.ceiling_bids
        moments.append(now)
        spent.append(engine.spent.copy())
        reachable.append(offered)
    end = start + timedelta(hours=options.hours)
    _execute(
        ledger, [commit_op(keys[pool_campaign[p]], *lease) for p, *lease in leases.close_all()], end
    )
    over_time, offered_over_time = np.array(spent), np.array(reachable)
    return [
        campaign_result(
            c,
            moments,
            over_time[:, i].tolist(),
            ledger_committed=ledger.campaigns[keys[i]].committed,
            over_delivered=0,
            value_micros=int(engine.value_total[i]),
            reachable=offered_over_time[:, i].tolist(),
        )
        for i, c in enumerate(campaigns)
    ]


def _deliver(
    exchange: SandboxExchange, engine: BidEngine, leases: LeaseBook, since: datetime, tick_s: float
) -> np.ndarray:
    """One interval's auctions, spent from the leases; returns what the market offered each
    campaign at the goal's highest bids."""
    delivered = exchange.run(since, tick_s, engine.pool_cap)
    leases.spend(
        engine.observe(
            delivered.spend_micros, delivered.clicks, delivered.conversions, delivered.value_micros
        )
    )
    return sum_micros_by(engine.unit_campaign, delivered.reachable_micros, len(engine.campaigns))


def _execute(ledger: BudgetBook, ops: list[BudgetOp], now: datetime) -> list[OpResult]:
    events: list = []
    created: list = []
    results = [ledger.execute(op, now, events, created) for op in ops]
    for result in results:
        result.raise_for_error()
    return results
