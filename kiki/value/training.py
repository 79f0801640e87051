"""Training data for the LTV model, built from the calibration period only.

A training example is a customer's features as of a cut and their spend over the
`horizon_days` after it; cuts lie inside the calibration period so no label looks past it
(kiki.value.ltv_bench stacks several such cuts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from kiki.errors import InvalidInput
from kiki.value.features import compute_features


@dataclass
class Examples:
    features: pd.DataFrame  # indexed by customer_id, columns FEATURE_NAMES
    labels: np.ndarray  # spend over the horizon after `as_of`
    as_of: date
    horizon_days: int


def spend_between(transactions: pd.DataFrame, start: date, end: date) -> pd.Series:
    """Each customer's spend on days start < day <= end."""
    days = transactions["ts"].dt.normalize()
    inside = transactions[(days > pd.Timestamp(start)) & (days <= pd.Timestamp(end))]
    return inside.groupby("customer_id")["amount"].sum()


def examples(transactions: pd.DataFrame, as_of: date, horizon_days: int) -> Examples:
    """Features as of `as_of` and the spend of the next `horizon_days` as the label."""
    features = compute_features(transactions, as_of)
    if len(features) < 50:
        raise InvalidInput(
            f"only {len(features)} customers had bought by {as_of}, the start of a "
            f"{horizon_days}-day training window: use a shorter --horizon-days or a later "
            "--calibration-end"
        )
    later = spend_between(transactions, as_of, as_of + timedelta(days=horizon_days))
    labels = later.reindex(features.index, fill_value=0.0).to_numpy(dtype=np.float64)
    return Examples(features, labels, as_of, horizon_days)
