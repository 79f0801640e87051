"""Churn risk per customer with its reasons, LTV and last purchase: what the churn-risk API and
retention rules read.

Reasons are the features that push a customer's log-odds of churn up the most (XGBoost's
exact tree SHAP values, `pred_contribs=True`), each with the customer's value of it, so an
analyst sees *why* as well as *how likely*.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd
from pydantic import BaseModel

from kiki.engage.churn import TrainedChurnModel
from kiki.value import FEATURE_NAMES

if TYPE_CHECKING:  # torch is imported only where an LTV model is loaded
    from kiki.value import TrainedLTVModel

TOP_REASONS = 3
DESCRIPTIONS: dict[str, str] = {
    "frequency": "repeat purchase days",
    "recency_days": "days between first and last purchase",
    "tenure_days": "days since the first purchase",
    "days_since_last": "days since the last purchase",
    "monetary_total": "total spend",
    "monetary_mean": "mean spend per purchase day",
    "monetary_max": "largest purchase day",
    "monetary_std": "spread of spend per purchase day",
    "monetary_first": "first purchase's spend",
    "monetary_last": "last purchase's spend",
    "monetary_repeat_mean": "mean spend of repeat purchases",
    "gap_mean": "mean days between purchases",
    "gap_std": "spread of days between purchases",
    "gap_last": "days between the last two purchases",
    "overdue": "days since the last purchase over the usual gap",
    "purchase_rate": "repeat purchases per day of tenure",
    "spend_rate": "spend per day of tenure",
    "count_30d": "purchase days in the last 30 days",
    "count_90d": "purchase days in the last 90 days",
    "count_180d": "purchase days in the last 180 days",
    "spend_30d": "spend in the last 30 days",
    "spend_90d": "spend in the last 90 days",
    "spend_180d": "spend in the last 180 days",
    "count_prev_90d": "purchase days 90 to 180 days ago",
    "spend_prev_90d": "spend 90 to 180 days ago",
    "bgnbd_p_alive": "probability the customer is still active (BG/NBD)",
    "bgnbd_rate_per_week": "expected purchase weeks per week while active (BG/NBD)",
    "bgnbd_p_no_purchase": "BG/NBD's probability of no purchase in the window",
    "bgnbd_expected_purchases": "purchase weeks BG/NBD expects in the window",
}


class Reason(BaseModel):
    feature: str
    description: str
    value: float
    contribution: float  # added log-odds of churn


@dataclass
class RiskTable:
    """Every customer seen by as_of, by descending churn risk (then as given)."""

    as_of: date
    horizon_days: int
    frame: pd.DataFrame  # index customer_id; churn_risk, last_purchase, ltv_expected (or absent)
    features: pd.DataFrame
    # Per-feature log-odds pushes of some rows of `features`: explained when asked, for the
    # page shown, since explaining the whole book costs more than scoring it.
    explain: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    scored_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def empty(cls, as_of: date, horizon_days: int) -> RiskTable:
        """The table of a tenant without purchases by as_of."""
        none = pd.DataFrame(index=pd.Index([], name="customer_id"))
        frame = none.assign(churn_risk=pd.Series(dtype="float64"), last_purchase=None)
        return cls(as_of, horizon_days, frame, none)

    def reasons(
        self, customer_ids: Sequence[str], top: int = TOP_REASONS
    ) -> dict[str, list[Reason]]:
        """For each customer, the features that raise their risk the most, largest first."""
        if self.explain is None or not customer_ids:
            return {c: [] for c in customer_ids}
        values = self.features.loc[list(customer_ids)]
        pushes = self.explain(values)
        return {
            customer_id: [
                Reason(
                    feature=name,
                    description=DESCRIPTIONS.get(name, name),
                    value=round(float(values.at[customer_id, name]), 4),
                    contribution=round(float(push), 4),
                )
                for name, push in row.sort_values(ascending=False).head(top).items()
                if push > 0
            ]
            for customer_id, row in pushes.iterrows()
        }


def risk_table(
    model: TrainedChurnModel,
    history: pd.DataFrame,
    as_of: date,
    horizon_days: int,
    ltv: TrainedLTVModel | None = None,
) -> RiskTable:
    """Scores every customer with purchases by as_of; `ltv`, when given, is SyncValue's model
    fed the same features as of the same day."""
    inputs = model.inputs(history, as_of, horizon_days)
    features = inputs.features
    frame = pd.DataFrame(
        {
            "churn_risk": model.predict(inputs),
            "last_purchase": [
                as_of - timedelta(days=int(d)) for d in features["days_since_last"].to_numpy()
            ],
        },
        index=features.index,
    )
    if ltv is not None:
        frame["ltv_expected"] = ltv.expected(features[list(FEATURE_NAMES)])
    return RiskTable(
        as_of=as_of,
        horizon_days=horizon_days,
        frame=frame.sort_values("churn_risk", ascending=False, kind="stable"),
        features=features,
        explain=model.feature_contributions,
    )
