"""The retraining rules, pure: when a tenant's model is due, which days a challenger may learn
from, and when it beats the champion. The retraining actor (actors/retrain.py) applies them.

A challenger learns from purchases up to one horizon before the last purchase seen, so the
last horizon is data neither it nor the champion (trained earlier, to an earlier day) has
seen; both are scored there, on the same customers, and the challenger is promoted only when
its error is lower by at least `min_gain` (a share of the champion's).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel

Reason = Literal["schedule", "drift", "asked"]


def due(last_trained: datetime, now: datetime, interval_s: float, stale: bool) -> Reason | None:
    """Why a production model should be retrained now, if it should: drift marked it stale,
    or its family's newest version is older than the interval (0 = drift only)."""
    if stale:
        return "drift"
    if interval_s > 0 and (now - last_trained).total_seconds() >= interval_s:
        return "schedule"
    return None


def challenger_cut(last_purchase: date, champion_cut: date, horizon_days: int) -> date | None:
    """The challenger's calibration end (one horizon before the last purchase, so a holdout
    follows it); None when that is not after the champion's: no newer data to learn from."""
    cut = last_purchase - timedelta(days=horizon_days)
    return cut if cut > champion_cut else None


class Verdict(BaseModel):
    """What the registry and the log keep of one comparison."""

    metric: str
    challenger: float
    champion: float
    champion_version: int
    min_gain: float
    promote: bool
    rule: str


def judge(
    metric: str,
    higher_is_better: bool,
    challenger: float,
    champion: float,
    champion_version: int,
    min_gain: float,
) -> Verdict:
    """Promote when the challenger is better than the champion by at least `min_gain` of the
    champion's value on the holdout."""
    if higher_is_better:
        bar = champion + abs(champion) * min_gain
        promote = challenger >= bar
        rule = f"{metric} >= {bar:.6g} (champion {champion:.6g} + {min_gain:.0%})"
    else:
        bar = champion - abs(champion) * min_gain
        promote = challenger <= bar
        rule = f"{metric} <= {bar:.6g} (champion {champion:.6g} - {min_gain:.0%})"
    return Verdict(
        metric=metric,
        challenger=challenger,
        champion=champion,
        champion_version=champion_version,
        min_gain=min_gain,
        promote=promote,
        rule=rule,
    )
