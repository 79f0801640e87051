"""The bid engine of one bid-loop shard: every decision of a tick, for all its campaigns at once.

State lives in numpy columns, one row per bidding unit (campaign x ad group x platform) or per
budget pool (campaign x platform), so a tick over 20,000 units is array arithmetic. The actor
around it does the I/O (SyncValue, budget actors, connectors, the audit trail) and calls:

    observe(spend, clicks, ..., fresh)    what the platforms delivered since the last tick
                                          (fresh: a spend report arrived, the controller steps)
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
    pace_reasons,
    pool_caps,
    update_multipliers,
    update_multipliers_on_curve,
)
from kiki.money import decimal_to_micros, minor_unit_micros, sum_micros_by

PRIOR_CVR = 0.05
PRIOR_CLICKS = 50.0
MIN_GOAL_CONVERSIONS = 20  # evidence needed before bidding above the value-based bid
CAPPED_FILL = 0.98  # a tick that spent this share of its allowance was held by the cap
STEP_PHASES = 0.6180339887  # campaign i's step phase: i x this, mod 1 (evenly spread for any n)


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
        self.multiplier = np.full(n, controller.initial_multiplier())
        self.integral = np.zeros(n)
        self.pace_error = np.zeros(n)  # the controller's last error, for the decision log
        self.last_allowance = np.zeros(n, dtype=np.int64)
        # The last decide's target (at its tick's end), live campaigns and that moment: what a
        # report observed then is compared with. And when the curve controller last stepped.
        self.last_target = np.zeros(n, dtype=np.int64)
        self.last_live = np.zeros(n, dtype=bool)
        self.decided_until: datetime | None = None
        # When the curve controller last stepped each campaign (POSIX seconds; nan: not yet
        # decided), and its target and spend then. Campaigns step on a grid of their own,
        # shifted by a phase (STEP_PHASES): stepped together, nearly every bid moved past the
        # push threshold on the same tick, and that tick's pushes set the loop's p99.
        self.stepped_s = np.full(n, np.nan)
        self.phase_s = np.zeros(n)
        self.stepped_target = np.zeros(n, dtype=np.int64)
        self.stepped_spent = np.zeros(n, dtype=np.int64)
        # Since then, per campaign: ticks observed and ticks whose allowance was all spent
        # (the cap bound: it would have spent more).
        self.ticks_seen = np.zeros(n)
        self.ticks_capped = np.zeros(n)
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
        self.pool_spent = np.zeros(len(pools), dtype=np.int64)
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

    def pool_keys(self) -> list[tuple[tuple[str, str], str]]:
        keys = self.campaign_keys()
        return [(keys[c], p) for c, p in zip(self.pool_campaign, self.pool_platform, strict=True)]

    def unit_keys(self) -> list[tuple[str, str, str, str]]:
        keys = self.campaign_keys()
        return [
            (*keys[c], g, p)
            for c, g, p in zip(
                self.unit_campaign, self.unit_ad_group, self.unit_platform, strict=True
            )
        ]

    def carry_from(self, old: BidEngine) -> None:
        """Keep spend, controller state and bids of the campaigns and units both engines have.
        The last decide's target, allowance and liveness come too: the controller's next step
        compares the spend reported with them (zeros would read as a campaign far ahead)."""
        new_c, old_c = _matches(self.campaign_keys(), old.campaign_keys())
        for name in (
            "spent", "value_total", "multiplier", "integral", "pace_error", "stepped_target",
            "stepped_spent", "stepped_s", "phase_s", "last_target", "last_allowance", "last_live",
            "ticks_seen", "ticks_capped",
        ):  # fmt: skip
            getattr(self, name)[new_c] = getattr(old, name)[old_c]
        new_p, old_p = _matches(self.pool_keys(), old.pool_keys())
        self.pool_spent[new_p] = old.pool_spent[old_p]
        self.decided_until = old.decided_until
        new_u, old_u = _matches(self.unit_keys(), old.unit_keys())
        for name in ("clicks", "conversions", "bids", "pushed_bids"):
            getattr(self, name)[new_u] = getattr(old, name)[old_u]

    # --- the tick --------------------------------------------------------------------------

    def observe(
        self,
        spend: np.ndarray,
        clicks: np.ndarray,
        conversions: np.ndarray,
        value: np.ndarray,
        fresh: bool = True,
    ) -> np.ndarray:
        """Take in what each unit delivered since the last tick; update the pacing
        controllers. `fresh`: a spend report arrived (a live platform's poll; in the sandbox,
        every tick unless reports are delayed): the curve controller steps only then, as
        between reports the spend it knows of is stale. Returns spend per pool (to commit)."""
        self.clicks += clicks
        self.conversions += conversions
        pools = len(self.pool_campaign)
        pool_spend = sum_micros_by(self.unit_pool, spend, pools)
        campaigns = len(self.campaigns)
        campaign_spend = sum_micros_by(self.pool_campaign, pool_spend, campaigns)
        self.spent += campaign_spend
        self.pool_spent += pool_spend
        self.value_total += sum_micros_by(self.unit_campaign, value, campaigns)
        n = len(self.campaigns)
        if self.controller.kind == "fill":
            self.multiplier, self.integral, self.pace_error = update_multipliers(
                self.multiplier,
                self.integral,
                self.last_allowance,
                campaign_spend,
                self.multiplier_ceiling(),
                self.controller,
            )
        elif fresh and self.decided_until is not None:
            self.ticks_seen += self.last_live
            self.ticks_capped += (self.last_allowance > 0) & (
                campaign_spend >= CAPPED_FILL * self.last_allowance
            )
            until = self.decided_until.timestamp()
            minutes = (until - self.stepped_s) / 60
            # Due: its grid passed a line since its last step; or, until its first click,
            # every report (a campaign that has bought nothing learns nothing by waiting).
            period = self.controller.curve_step_min * 60
            crossed = np.floor((until + self.phase_s) / period) > np.floor(
                (self.stepped_s + self.phase_s) / period
            )
            behind = self.last_target - self.spent > self.controller.curve_behind_now * self.budget
            due = self.last_live & (minutes > 0) & (crossed | (self.spent == 0) | behind)
            if not due.any():
                return pool_spend
            self.multiplier, error = update_multipliers_on_curve(
                self.multiplier,
                self.last_target - self.spent,
                self.last_target - self.stepped_target,
                self.spent - self.stepped_spent,
                np.divide(
                    self.ticks_capped, self.ticks_seen, out=np.zeros(n), where=self.ticks_seen > 0
                ),
                self.budget,
                np.where(due, minutes, 0.0),
                self.multiplier_ceiling(),
                self.controller,
            )
            self.pace_error = np.where(due, error, self.pace_error)
            self.stepped_s[due] = until
            self.stepped_target = np.where(due, self.last_target, self.stepped_target)
            self.stepped_spent = np.where(due, self.spent, self.stepped_spent)
            self.ticks_seen[due] = self.ticks_capped[due] = 0
        return pool_spend

    def pace_reasons(self) -> np.ndarray:
        """Per campaign: why its multiplier is where it is (the decision log's `pace:`)."""
        return pace_reasons(
            self.controller, self.pace_error, self.multiplier, self.multiplier_ceiling()
        )

    def daily_budgets(self) -> np.ndarray:
        """Per pool: the budget to push to its platform as the day's hard limit where no tick
        can be capped (the live market): what the pool was reported to spend plus all its
        campaign has left. Any one platform may spend the rest, as with a tick's allowance;
        several at once can run past it by what they deliver before the next report."""
        left = np.maximum(self.budget - self.spent, 0)[self.pool_campaign]
        return self.pool_spent + left

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
        self.last_target, self.last_live, self.decided_until = target, live, tick_end
        # A campaign's first decide starts its step clock and sets its phase: each tick steps
        # about tick / curve_step_min of the campaigns.
        new = np.isnan(self.stepped_s)
        if new.any():
            self.stepped_s[new] = now.timestamp()
            period = self.controller.curve_step_min * 60
            self.phase_s[new] = (np.flatnonzero(new) * STEP_PHASES) % 1.0 * period
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


def _matches(new: Sequence, old: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Indices (in `new`, in `old`) of the keys both hold."""
    where = {k: i for i, k in enumerate(old)}
    pairs = [(i, where[k]) for i, k in enumerate(new) if k in where]
    return np.array([p[0] for p in pairs], dtype=np.int64), np.array(
        [p[1] for p in pairs], dtype=np.int64
    )
