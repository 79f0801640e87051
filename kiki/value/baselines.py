"""The forecasts our model must beat: BG/NBD + Gamma-Gamma (the classic probabilistic CLV
model, via `lifetimes`) and a naive run-rate extrapolation.

Both read their RFM numbers from `features.compute_features`, so every model sees the same
purchases. BG/NBD counts in whole weeks, as `lifetimes`' summaries do by convention on CDNOW
(that is what the published reference figures use, and it ranks better than days here).
"""

from __future__ import annotations

from datetime import date

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter

from kiki.value.features import compute_features

PENALIZER = 0.0  # unpenalised: the textbook fit, which reproduces the reference figures
DAYS_PER_WEEK = 7.0


def bgnbd_gamma_gamma(
    transactions: pd.DataFrame,
    calibration_end: date | pd.Timestamp | str,
    holdout_days: int,
    penalizer: float = PENALIZER,
) -> pd.Series:
    """Expected spend per customer over the `holdout_days` days after calibration_end.

    BG/NBD's expected number of purchase weeks × Gamma-Gamma's conditional mean spend per
    purchase week, both fitted on calibration data only. Gamma-Gamma is fitted on customers
    with a repeat purchase worth more than 0; everyone else gets its population mean (what
    its formula gives at frequency 0).
    """
    cut = pd.Timestamp(calibration_end).normalize()
    past = transactions.loc[transactions["ts"].dt.normalize() <= cut]
    # Each purchase moved to the Monday of its week (pandas' "W" period, as in lifetimes),
    # so the features' same-day merge becomes a same-week merge.
    weekly = past.assign(ts=past["ts"].dt.to_period("W").dt.start_time)
    rfm = compute_features(weekly, pd.Period(cut, "W").start_time)
    frequency = rfm["frequency"]
    recency = rfm["recency_days"] / DAYS_PER_WEEK
    tenure = rfm["tenure_days"] / DAYS_PER_WEEK
    monetary = rfm["monetary_repeat_mean"]

    bgf = BetaGeoFitter(penalizer_coef=penalizer)
    bgf.fit(frequency, recency, tenure)
    purchases = bgf.conditional_expected_number_of_purchases_up_to_time(
        holdout_days / DAYS_PER_WEEK, frequency, recency, tenure
    )

    repeat = (frequency > 0) & (monetary > 0)
    ggf = GammaGammaFitter(penalizer_coef=penalizer)
    ggf.fit(frequency[repeat], monetary[repeat])
    value = ggf.conditional_expected_average_profit(frequency.where(repeat, 0.0), monetary)
    return (purchases * value).rename("bgnbd_gg")


def naive_extrapolation(
    transactions: pd.DataFrame, calibration_end: date | pd.Timestamp | str, holdout_days: int
) -> pd.Series:
    """Calibration spend per day since the first purchase (first day included) × holdout_days:
    what a spreadsheet would forecast, assuming nobody ever leaves."""
    rfm = compute_features(transactions, calibration_end)
    return (rfm["spend_rate"] * holdout_days).rename("naive")
