"""Training the LTV model on the calibration period only.

A training example is a customer's features as of a cut and their spend over the
`horizon_days` after it; cuts lie inside the calibration period so no label looks past it,
several cuts stacked, the newest ending on the calibration end. A short label window keeps
the newest cut close to the forecast date, where customers look like those being scored
(90-day windows, whose stacked cuts reach back to the months when the cohort was still being
acquired, had the worse MAE on most backtests inside the calibration period).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from kiki.errors import InvalidInput
from kiki.value.features import compute_features
from kiki.value.ziln import EpochCallback, TrainedLTVModel, ZILNConfig, train_ziln


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


class LTVTrainingConfig(BaseModel):
    """How training examples are cut from the calibration period, and the network to fit."""

    model_config = ConfigDict(frozen=True)

    horizon_days: int = Field(30, ge=1)  # label window: spend in the next horizon_days
    cuts: int = Field(6, ge=1)  # stacked training cuts, the newest horizon_days before the end
    cut_step_days: int = Field(30, ge=1)  # days between consecutive cuts
    model: ZILNConfig = ZILNConfig(members=3)


def training_examples(
    transactions: pd.DataFrame, end: date | pd.Timestamp, config: LTVTrainingConfig
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """`config.cuts` windows of `examples` stacked, newest first: features
    as of each cut, labels = spend in the `horizon_days` after it, no window past `end`.
    Stacking stops early at a cut with too few customers. Returns (X, y, customer per row)."""
    end = pd.Timestamp(end).normalize()
    frames, labels = [], []
    for k in range(config.cuts):
        cut = end - pd.Timedelta(days=config.horizon_days + k * config.cut_step_days)
        try:
            window = examples(transactions, cut.date(), config.horizon_days)
        except InvalidInput:
            if not frames:
                raise
            break
        frames.append(window.features)
        labels.append(window.labels)
    x = pd.concat(frames)
    return x, np.concatenate(labels), x.index.to_numpy()


def fit_ltv_model(
    transactions: pd.DataFrame,
    calibration_end: date | pd.Timestamp,
    config: LTVTrainingConfig | None = None,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
) -> TrainedLTVModel:
    """Trains on calibration data only (see the module docstring); each network stops early on
    its own held-out customers (all their stacked cuts) from the same examples."""
    config = config or LTVTrainingConfig()
    x, y, customers = training_examples(transactions, calibration_end, config)
    return train_ziln(
        x,
        y,
        config.model,
        seed,
        on_epoch=on_epoch,
        horizon_days=config.horizon_days,
        groups=customers,
    )
