"""Budget pacing: where cumulative spend should be at each moment, and how hard to bid to get it.

Two layers, after LinkedIn's budget pacing (Agarwal et al., KDD 2014):
- the **target curve** says what share of the budget should be spent by time t: even over the
  schedule, or shaped by the expected traffic of each hour of the day in the campaign's time
  zone; a *slow start* holds the first part of the schedule back (little is known yet), and a
  *fast finish* aims to be done a little before the end so late shortfalls can still be made up;
- each tick, the **allowance** for the next tick is what the curve says should be spent by
  then minus what was spent, and a shortfall is carried into the next ticks rather than lost;
  any of the campaign's platforms may spend all of it (the market decides which delivers: a
  share set aside for a platform strands budget when that platform's next click costs more
  than its share), so spending can run ahead of the curve by a few allowances in one tick;
- a **controller** sets each campaign's bid multiplier, one of two (`ControllerConfig.kind`):
  "curve" (the default) paces by price: a PI law on the curve error itself (spend reported so
  far against the target then), so a campaign stays on its curve where nothing caps a tick
  (the live platforms, which report spend a minute or more late); "fill", the earlier one, a
  PI law on how much of the last allowance was filled, which leaves the pacing to the per-tick
  cap (its error is computed on min(fill, 1): a campaign far ahead of its curve moves it
  little). Either shades the bid down when supply is plentiful (cheaper clicks) and raises
  it back towards the full value-based bid when delivery falls short.

Everything here is arithmetic on numbers: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

# Share of a day's auctions in each local hour: a typical consumer-traffic shape (low at night,
# peaks at lunch and in the evening). Normalised to sum to 1.
_HOURLY = np.array(
    [1.2, 0.8, 0.6, 0.5, 0.5, 0.7, 1.3, 2.6, 4.0, 4.8, 5.2, 5.6,
     6.0, 5.8, 5.4, 5.2, 5.3, 5.7, 6.2, 6.8, 7.0, 6.4, 4.6, 2.6],
)  # fmt: skip
HOURLY_TRAFFIC: np.ndarray = _HOURLY / _HOURLY.sum()

PacingShape = Literal["even", "traffic"]
PlatformSplit = Literal["whole", "even"]
ControllerKind = Literal["curve", "fill"]


@dataclass(frozen=True, slots=True)
class PacingPlan:
    """The schedule and how to spread the budget over it."""

    start: datetime
    end: datetime
    timezone: str = "UTC"
    shape: PacingShape = "even"
    slow_start: float = 0.05  # first share of the schedule, spent at half the rate
    fast_finish: float = 0.02  # last share of the schedule, by which the curve reaches 100 %

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("schedule times must be timezone-aware")
        if self.end <= self.start:
            raise ValueError("the schedule must end after it starts")
        if not (0 <= self.slow_start < 0.5 and 0 <= self.fast_finish < 0.5):
            raise ValueError("slow_start and fast_finish are shares of the schedule below 0.5")


class TargetCurve:
    """Cumulative target share of the budget, F(t) in [0, 1], F(start) = 0, F(done) = 1.

    The curve is tabulated once per campaign at minute resolution (a 30-day schedule is 43,200
    points) and interpolated, so a tick costs a binary search, not a walk over the schedule.
    """

    def __init__(self, plan: PacingPlan) -> None:
        self.plan = plan
        span = (plan.end - plan.start).total_seconds()
        self._done_s = span * (1 - plan.fast_finish)
        steps = max(2, min(int(self._done_s // 60) + 2, 200_000))
        self._t = np.linspace(0.0, self._done_s, steps)
        rate = self._traffic_rate(self._t) if plan.shape == "traffic" else np.ones(steps)
        slow_until = span * plan.slow_start
        rate = np.where(self._t < slow_until, rate * 0.5, rate)
        # Trapezoid cumulative integral, normalised so the curve ends at exactly 1.
        areas = np.diff(self._t) * (rate[1:] + rate[:-1]) / 2
        cumulative = np.concatenate([[0.0], np.cumsum(areas)])
        self._f = cumulative / cumulative[-1]

    def _traffic_rate(self, offsets_s: np.ndarray) -> np.ndarray:
        zone = ZoneInfo(self.plan.timezone)
        local_start = self.plan.start.astimezone(zone)
        # Local hour of each point; DST shifts of an hour are ignored within one schedule.
        start_hour = local_start.hour + local_start.minute / 60 + local_start.second / 3600
        hours = ((start_hour + offsets_s / 3600.0) % 24).astype(int)
        return HOURLY_TRAFFIC[hours]

    def share(self, moment: datetime) -> float:
        """F(moment): the share of the budget that should be spent by `moment`."""
        offset = (moment - self.plan.start).total_seconds()
        if offset <= 0:
            return 0.0
        if offset >= self._done_s:
            return 1.0
        return float(np.interp(offset, self._t, self._f))

    def target_micros(self, moment: datetime, budget_micros: int) -> int:
        return math.floor(budget_micros * self.share(moment))


def allowance_micros(
    target_micros: np.ndarray, budget_micros: np.ndarray, spent_micros: np.ndarray
) -> np.ndarray:
    """What each campaign may spend before the tick ends: the curve's target then minus what
    was spent, never negative and never past the budget."""
    return np.maximum(0, np.minimum(target_micros, budget_micros) - spent_micros)


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Which controller, its PI gains, and the multiplier's range (1.0 = the full value bid)."""

    kind: ControllerKind = "curve"
    # "fill": gains on the fill error of the last allowance, stepped every tick.
    kp: float = 0.6
    ki: float = 0.15
    target_fill: float = 0.95  # aim a little under a full allowance: a full one hides demand
    min_multiplier: float = 0.1
    max_multiplier: float = 1.0  # while the goal is not yet shown to be met
    # Second-price auctions charge less than the bid, so a campaign beating its goal may bid
    # above its value-based bid, up to this, while the goal keeps being met.
    max_multiplier_goal_met: float = 3.0
    integral_limit: float = 3.0
    # "whole": any platform may spend the campaign's whole allowance for the tick; "even": each
    # gets an equal part of it (no platform can run the campaign ahead of its curve).
    platform_split: PlatformSplit = "whole"
    # "curve": at each spend report, the spend the curve wanted since the last report (its
    # increment, plus what the campaign is behind, caught up over curve_catchup_min) against
    # the spend reported; the multiplier moves by the log of their ratio / curve_elasticity
    # (spend grows about as multiplier^elasticity where a campaign wins a few % of auctions).
    # It steps every curve_step_min (each campaign on its own staggered grid: the engine),
    # reports in between adding up (one tick's few auctions are noise, and a bid held steady
    # buys cheaper than one that jitters); sooner when curve_behind_now behind, and at every
    # report until the campaign's first click (waiting teaches it nothing then). Aiming
    # curve_lag (share of budget) behind the curve leaves a tick's cap (target - spent) above
    # what the controller means to spend, so the cap rarely binds.
    curve_elasticity: float = 3.0
    curve_catchup_min: float = 0.25
    curve_step_min: float = 0.25
    curve_lag: float = 0.003
    # Where every tick is capped at the curve (the sandbox's own mode) it aims ahead instead,
    # by this share of what the curve added since its last step: the cap holds it on the
    # curve, and a campaign aiming behind dipped past 2 % on a few thin ticks of a 15-minute
    # schedule. (A fixed share of budget is 5 ticks' spend of an hour-long schedule: the cap
    # then bound nearly every tick, and paced instead of the price.)
    tick_capped: bool = False
    curve_lead_capped: float = 0.18
    curve_max_step: float = 1.0  # |log step| of one report at most
    curve_capped_step: float = 0.25
    # Behind by this share of budget: step at the next report, not at the next step's time.
    curve_behind_now: float = 0.01
    # The bid multiplier before any report: the floor, as nothing caps the first minute's
    # spend on a live platform; the controller raises it while the campaign is behind.
    start_multiplier: float = 0.1

    def initial_multiplier(self) -> float:
        return self.start_multiplier if self.kind == "curve" else self.max_multiplier


def pool_caps(
    allowance: np.ndarray,
    pool_campaign: np.ndarray,
    remaining: np.ndarray,
    split: PlatformSplit = "whole",
) -> np.ndarray:
    """Micros each pool (campaign x platform) may spend next tick: the campaign's whole
    allowance, or with split="even" an equal part of it; either way a campaign's pools together
    never more than its `remaining` budget (an equal part each when they would be)."""
    pools = np.maximum(np.bincount(pool_campaign, minlength=len(allowance)), 1)
    each = allowance // pools if split == "even" else allowance
    return np.minimum(each, remaining // pools)[pool_campaign].astype(np.int64)


def update_multipliers(
    multiplier: np.ndarray,
    integral: np.ndarray,
    allowance: np.ndarray,
    spend: np.ndarray,
    ceiling: np.ndarray,
    config: ControllerConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of the fill controller for many campaigns at once. Fill = spend / allowance of
    the last tick; the error (target_fill - fill) moves the multiplier multiplicatively, so a
    campaign bidding $0.10 and one bidding $10 react alike. Campaigns that had no allowance
    keep their state. `ceiling` is each campaign's highest multiplier. Returns (multiplier,
    integral, error)."""
    active = allowance > 0
    fill = np.divide(spend, allowance, out=np.ones_like(multiplier), where=active)
    error = np.where(active, config.target_fill - np.minimum(fill, 1.0), 0.0)
    integral = np.clip(integral + error, -config.integral_limit, config.integral_limit)
    step = np.exp(config.kp * error + config.ki * integral * active)
    multiplier = np.clip(multiplier * step, config.min_multiplier, ceiling)
    return multiplier, integral, error


def update_multipliers_on_curve(
    multiplier: np.ndarray,
    behind: np.ndarray,
    wanted: np.ndarray,
    got: np.ndarray,
    capped: np.ndarray,
    budget: np.ndarray,
    minutes: np.ndarray,
    ceiling: np.ndarray,
    config: ControllerConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of the curve controller for many campaigns at once, at a spend report.

    `behind` is the curve's target now minus the spend reported (micros; negative = ahead),
    `wanted` what the curve added since the last report, `got` the spend reported since,
    `capped` the share of ticks since in which a cap held the campaign (what it got understates
    what it would have bought: each such tick counts as curve_capped_step down),
    `minutes` the time since each campaign's last step (0 = no step: it keeps its state).
    Multiplicative, so a campaign bidding $0.10 and one bidding $10 react alike; the
    multiplier's range bounds it (nothing winds up). Returns (multiplier, error), the error
    being how far behind the curve (share of budget, less the lag aimed at)."""
    active = (minutes > 0) & (budget > 0)
    error = np.divide(behind, budget, out=np.zeros(len(budget)), where=budget > 0)
    share = np.divide(wanted, budget, out=np.zeros(len(budget)), where=budget > 0)
    lag = -config.curve_lead_capped * share if config.tick_capped else config.curve_lag
    error = np.where(active, error - lag, 0.0)
    catchup = np.minimum(minutes / config.curve_catchup_min, 1.0)
    want = wanted + error * budget * catchup
    # Spend wanted and got, floored at a tenth of the curve's increment: no log of 0, and a
    # campaign far ahead steps down by the most allowed, not by an infinite amount.
    floor = np.maximum(wanted * 0.1, 1.0)
    ratio = np.log(np.maximum(want, floor) / np.maximum(got, floor))
    step = ratio / config.curve_elasticity - capped * config.curve_capped_step
    step = np.clip(step, -config.curve_max_step, config.curve_max_step)
    moved = np.clip(multiplier * np.exp(step), config.min_multiplier, ceiling)
    return np.where(active, moved, multiplier), error


def pace_reasons(
    config: ControllerConfig, error: np.ndarray, multiplier: np.ndarray, ceiling: np.ndarray
) -> np.ndarray:
    """Per campaign, why its multiplier is where it is (the decision log's `pace:` part):
    where its controller's last error put it, and whether the multiplier is held at its floor
    or ceiling."""
    if config.kind == "curve":
        high, low, names = 0.005, -0.005, ("behind_curve", "ahead_of_curve", "on_curve")
    else:
        high, low, names = 0.05, -0.05, ("allowance_unfilled", "allowance_filled", "on_fill")
    why = np.where(error > high, names[0], np.where(error < low, names[1], names[2])).astype(object)
    why[multiplier >= ceiling * 0.999] += ":at_ceiling"
    why[multiplier <= config.min_multiplier * 1.001] += ":at_floor"
    return why


def pacing_error(
    curve: TargetCurve, budget_micros: int, moments: list[datetime], cumulative: list[int]
) -> float:
    """max |cumulative spend - target| / budget over the given moments."""
    if budget_micros <= 0:
        return 0.0
    pairs = zip(moments, cumulative, strict=True)
    worst = max((abs(s - curve.target_micros(m, budget_micros)) for m, s in pairs), default=0)
    return worst / budget_micros


def market_shortfall(
    curve: TargetCurve, budget_micros: int, moments: list[datetime], reachable: list[int]
) -> float:
    """How far behind the curve (share of budget) even a bidder who saw every auction in
    advance would have fallen, buying up to the curve what the market offered at the highest
    bids the goal allowed: `reachable[k]` micros in the interval ending at `moments[k]`. Above
    the pacing target, demand (at the goal's prices) did not allow keeping to the curve."""
    if budget_micros <= 0:
        return 0.0
    bought = worst = 0
    for moment, offered in zip(moments, reachable, strict=True):
        target = curve.target_micros(moment, budget_micros)
        bought += min(offered, max(0, target - bought))
        worst = max(worst, target - bought)
    return worst / budget_micros
