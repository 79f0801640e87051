"""The bid engine of one bid-loop shard: every decision of a tick, for all its campaigns at once.

State lives in numpy columns, one row per bidding unit (campaign x ad group x platform) or per
budget pool (campaign x platform), so a tick over 20,000 units is array arithmetic. The actor
around it does the I/O (SyncValue, budget actors, connectors, the audit trail) and calls:

    observe(spend, clicks, conversions)  what the platforms delivered since the last tick
    decide(now, tick_end, values)         allowance, reservations and bids for the next tick
    granted(pool, micros, rules)          what SyncShield granted: the pools' spend caps
    pushed(units, ok)                     which bid changes reached the platforms

Bids: value per click = estimated conversion rate x value per conversion; target ROAS divides
it by the target, target CPA multiplies the conversion rate by the target; then the campaign's
pacing multiplier, then the campaign's max bid. The conversion rate is estimated per unit from
its own clicks and conversions with a prior (a beta-binomial mean), so a new unit bids sanely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from kiki.flow.campaigns import Campaign
from kiki.flow.pacing import (
    ControllerConfig,
    TargetCurve,
    allowance_micros,
    pool_caps,
    update_multipliers,
)
from kiki.money import decimal_to_micros, minor_unit_micros, sum_micros_by

PRIOR_CVR = 0.05
PRIOR_CLICKS = 50.0
MIN_GOAL_CONVERSIONS = 20  # evidence needed before bidding above the value-based bid


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What the engine decided for the next tick."""

    allowance: np.ndarray  # per campaign: may be spent before tick_end
    target: np.ndarray  # per campaign: the curve's cumulative target at tick_end
    reserve: np.ndarray  # per pool: micros to reserve (0 = none)
    bids: np.ndarray  # per unit: the bid for the next tick, micros
    push: np.ndarray  # per unit: bool, moved more than the threshold since the last push
    ceiling_bids: np.ndarray  # per unit: the highest bid the goal allows now, micros
    cvr: np.ndarray  # per unit: conversion-rate estimate used
    value: np.ndarray  # per unit: value per conversion used, micros
    live: np.ndarray  # per campaign: bool


class BidEngine:
    """Columns for a fixed set of campaigns; rebuild with `carry_from` when the set changes."""

    def __init__(
        self,
        campaigns: Sequence[Campaign],
        controller: ControllerConfig | None = None,
        push_threshold: float = 0.05,
    ) -> None:
        self.campaigns = list(campaigns)
        self.controller = controller = controller or ControllerConfig()
        self.push_threshold = push_threshold
        self.curves = [TargetCurve(c.pacing_plan()) for c in self.campaigns]
        n = len(self.campaigns)
        self.budget = np.array([c.budget_micros for c in self.campaigns], dtype=np.int64)
        self.spent = np.zeros(n, dtype=np.int64)
        self.value_total = np.zeros(n, dtype=np.int64)
        self.multiplier = np.full(n, controller.max_multiplier)
        self.integral = np.zeros(n)
        self.last_allowance = np.zeros(n, dtype=np.int64)
        self.max_bid = np.array(
            [c.max_bid_micros or np.iinfo(np.int64).max for c in self.campaigns], dtype=np.int64
        )
        self.bid_step = np.array(
            [minor_unit_micros(c.currency) for c in self.campaigns], dtype=np.int64
        )
        roas = [c.goal_kind == "roas" for c in self.campaigns]
        self.is_roas = np.array(roas, dtype=bool)
        self.goal = np.array([float(c.goal_target) for c in self.campaigns])

        pools: list[tuple[int, str]] = []
        unit_rows: list[tuple[int, int, str, str, str, int]] = []
        for ci, campaign in enumerate(self.campaigns):
            for platform in campaign.platforms:
                pools.append((ci, platform))
                for group in campaign.ad_groups:
                    default = decimal_to_micros(group.value_per_conversion)
                    unit_rows.append(
                        (ci, len(pools) - 1, platform, group.ad_group_id, group.segment, default)
                    )
        self.pool_campaign = np.array([p[0] for p in pools], dtype=np.int64)
        self.pool_platform = [p[1] for p in pools]
        self.pool_cap = np.zeros(len(pools), dtype=np.int64)
        self.unit_campaign = np.array([u[0] for u in unit_rows], dtype=np.int64)
        self.unit_pool = np.array([u[1] for u in unit_rows], dtype=np.int64)
        # Labels per unit, built once: the audit trail writes them on every row of every tick.
        self.unit_tenant = [self.campaigns[u[0]].tenant_id for u in unit_rows]
        self.unit_campaign_id = [self.campaigns[u[0]].campaign_id for u in unit_rows]
        self.unit_platform = [u[2] for u in unit_rows]
        self.unit_ad_group = [u[3] for u in unit_rows]
        self.unit_segment = [u[4] for u in unit_rows]
        self.unit_default_value = np.array([u[5] for u in unit_rows], dtype=np.int64)
        units = len(unit_rows)
        self.clicks = np.zeros(units, dtype=np.int64)
        self.conversions = np.zeros(units, dtype=np.int64)
        self.bids = np.zeros(units, dtype=np.int64)
        self.pushed_bids = np.zeros(units, dtype=np.int64)

    # --- keys, so state survives a rebuild -------------------------------------------------

    def campaign_keys(self) -> list[tuple[str, str]]:
        return [(c.tenant_id, c.campaign_id) for c in self.campaigns]

    def unit_keys(self) -> list[tuple[str, str, str, str]]:
        keys = self.campaign_keys()
        return [
            (*keys[c], g, p)
            for c, g, p in zip(
                self.unit_campaign, self.unit_ad_group, self.unit_platform, strict=True
            )
        ]

    def carry_from(self, old: BidEngine) -> None:
        """Keep spend, controller state and bids of the campaigns and units both engines have."""
        old_c = {k: i for i, k in enumerate(old.campaign_keys())}
        for i, key in enumerate(self.campaign_keys()):
            j = old_c.get(key)
            if j is not None:
                self.spent[i], self.value_total[i] = old.spent[j], old.value_total[j]
                self.multiplier[i], self.integral[i] = old.multiplier[j], old.integral[j]
        old_u = {k: i for i, k in enumerate(old.unit_keys())}
        for i, key in enumerate(self.unit_keys()):
            j = old_u.get(key)
            if j is not None:
                self.clicks[i], self.conversions[i] = old.clicks[j], old.conversions[j]
                self.bids[i], self.pushed_bids[i] = old.bids[j], old.pushed_bids[j]

    # --- the tick --------------------------------------------------------------------------

    def observe(
        self, spend: np.ndarray, clicks: np.ndarray, conversions: np.ndarray, value: np.ndarray
    ) -> np.ndarray:
        """Take in what each unit delivered since the last tick; update the pacing
        controllers. Returns spend per pool (what to commit)."""
        self.clicks += clicks
        self.conversions += conversions
        pools = len(self.pool_campaign)
        pool_spend = sum_micros_by(self.unit_pool, spend, pools)
        campaigns = len(self.campaigns)
        campaign_spend = sum_micros_by(self.pool_campaign, pool_spend, campaigns)
        self.spent += campaign_spend
        self.value_total += sum_micros_by(self.unit_campaign, value, campaigns)
        self.multiplier, self.integral = update_multipliers(
            self.multiplier,
            self.integral,
            self.last_allowance,
            campaign_spend,
            self.multiplier_ceiling(),
            self.controller,
        )
        return pool_spend

    def multiplier_ceiling(self) -> np.ndarray:
        """Per campaign: the highest pacing multiplier its goal allows now."""
        return np.where(
            self.goal_met(), self.controller.max_multiplier_goal_met, self.controller.max_multiplier
        )

    def goal_met(self) -> np.ndarray:
        """Per campaign: has it shown (over MIN_GOAL_CONVERSIONS) that it meets its goal?
        ROAS: value >= target x spend; CPA: spend <= target x conversions."""
        conversions = np.bincount(
            self.unit_campaign, weights=self.conversions, minlength=len(self.campaigns)
        )
        roas_ok = self.value_total >= self.goal * self.spent
        cpa_ok = self.spent <= self.goal * conversions
        return (conversions >= MIN_GOAL_CONVERSIONS) & np.where(self.is_roas, roas_ok, cpa_ok)

    def decide(self, now: datetime, tick_end: datetime, values: np.ndarray) -> TickPlan:
        """Allowance per campaign, reservation per pool and bid per unit for [now, tick_end).

        `values` is the value per conversion of each unit's segment (micros; <= 0 = unknown,
        use the ad group's default)."""
        live = np.array([c.live(now) for c in self.campaigns], dtype=bool)
        target = np.array(
            [
                curve.target_micros(tick_end, int(b))
                for curve, b in zip(self.curves, self.budget, strict=True)
            ],
            dtype=np.int64,
        )
        allowance = np.where(live, allowance_micros(target, self.budget, self.spent), 0)
        self.last_allowance = allowance
        reserve = pool_caps(
            allowance,
            self.pool_campaign,
            np.maximum(self.budget - self.spent, 0),
            self.controller.platform_split,
        )

        value = np.where(values > 0, values, self.unit_default_value).astype(float)
        cvr = (self.conversions + PRIOR_CLICKS * PRIOR_CVR) / (self.clicks + PRIOR_CLICKS)
        c = self.unit_campaign
        base = np.where(self.is_roas[c], cvr * value / self.goal[c], cvr * self.goal[c])
        bids = self._whole_bids(base * self.multiplier[c], live)
        moved = np.abs(bids - self.pushed_bids) > self.push_threshold * self.pushed_bids
        self.bids = bids
        ceiling_bids = self._whole_bids(base * self.multiplier_ceiling()[c], live)
        return TickPlan(
            allowance, target, reserve, bids, moved, ceiling_bids, cvr, value.astype(np.int64), live
        )

    def _whole_bids(self, raw: np.ndarray, live: np.ndarray) -> np.ndarray:
        """Per unit: capped at the max bid and rounded down to whole minor units (cents, as
        the platforms take them: never above the bid); 0 where the campaign is not live."""
        c = self.unit_campaign
        bids = np.minimum(np.floor(raw), self.max_bid[c]).astype(np.int64)
        bids -= bids % self.bid_step[c]
        return np.where(live[c], bids, 0)

    def granted(self, pool_caps: np.ndarray) -> None:
        """What SyncShield granted each pool for this tick: the most it may spend."""
        self.pool_cap = pool_caps.astype(np.int64)

    def pushed(self, units: np.ndarray, ok: np.ndarray) -> None:
        """Record which bid changes the platforms accepted."""
        accepted = units[ok]
        self.pushed_bids[accepted] = self.bids[accepted]
