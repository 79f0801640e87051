"""CDNOW churn benchmark: our model against BG/NBD and a recency-only rule.

Churn = no purchase from the day after `calibration_end` to `holdout_end`; the population is
every customer with a purchase by calibration_end. Nothing after calibration_end is seen before
scoring: our model trains on 90-day windows cut inside the calibration period (see
kiki.engage.churn), and its hyper-parameters are judged on the last 90 days of that period by
a model trained only on what came before them.

The baselines, fitted on the same purchases:
- BG/NBD ranks by expected purchase weeks in the holdout (P(alive) alone would put every
  one-time buyer at 1). Its probability of churn, for the Brier score and the calibration
  table, is P(no purchase in the holdout) from the same fit (kiki.engage.churn.bgnbd_scores).
- recency ranks by days since the last purchase; a rule without a probability, so it has
  no Brier score or calibration table.

    kiki bench churn --calibration-end 1997-09-30 --holdout-end 1998-06-30
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from kiki.engage.churn import (
    ChurnConfig,
    bgnbd_scores,
    churned,
    fit_bgnbd,
    fit_churn_model,
    training_set,
    weekly_rfm,
)
from kiki.engage.metrics import (
    CalibrationBin,
    brier,
    calibration_error,
    calibration_table,
    log_loss,
    pr_auc,
    roc_auc,
)
from kiki.value.cdnow import split

STANDARD_CALIBRATION_END = date(1997, 9, 30)
STANDARD_HOLDOUT_END = date(1998, 6, 30)
METRICS = ("roc_auc", "pr_auc", "brier", "calibration_error")
MODELS = ("xgboost", "bgnbd", "recency")

# The grid `choose_config` searches; ChurnConfig's defaults are its winner on the standard split.
DEFAULT_GRID: dict[str, Sequence[object]] = {
    "max_depth": [2, 3, 4],
    "learning_rate": [0.03, 0.1],
    "min_child_weight": [20.0, 50.0],
}


def choose_config(
    transactions: pd.DataFrame,
    calibration_end: date | pd.Timestamp,
    base: ChurnConfig | None = None,
    grid: dict[str, Sequence[object]] | None = None,
    seed: int = 0,
) -> tuple[ChurnConfig, list[tuple[float, ChurnConfig]]]:
    """The tree settings with the lowest log loss on the last `horizon_days` of the calibration
    period, each candidate trained only on windows that end before that stretch begins.
    Returns the winner and every (log loss, config), best first. The holdout is never read."""
    base = base or ChurnConfig()
    end = pd.Timestamp(calibration_end).normalize()
    known = transactions.loc[transactions["ts"].dt.normalize() <= end]
    window_start = end - pd.Timedelta(days=base.horizon_days)
    data = training_set(known, window_start, base)
    grid = grid or DEFAULT_GRID
    scored = []
    for values in itertools.product(*grid.values()):
        config = base.model_copy(update=dict(zip(grid, values, strict=True)))
        model = fit_churn_model(known, window_start, config, seed, data=data)
        inputs = model.inputs(known, window_start, base.horizon_days)
        scored.append((log_loss(churned(known, inputs), model.predict(inputs)), config))
    scored.sort(key=lambda pair: pair[0])
    return scored[0][1], scored


@dataclass
class ChurnBenchResult:
    """Metrics per model (None where a model has no probability), the calibration table per
    model with probabilities, fit seconds, and per customer: churned (0/1), our p_churn, BG/NBD's
    expected purchases and P(no purchase), days since the last purchase."""

    calibration_end: date
    holdout_end: date
    holdout_days: int
    customers: int
    churn_rate: float
    config: ChurnConfig
    metrics: dict[str, dict[str, float | None]]
    calibration: dict[str, list[CalibrationBin]]
    fit_seconds: dict[str, float]
    predictions: pd.DataFrame

    def table(self) -> str:
        """Metrics as a Markdown table, one row per model, then the calibration tables."""
        rows = ["| model | " + " | ".join(METRICS) + " | fit s |", "|" + " --- |" * 6]
        for name, values in self.metrics.items():
            cells = ["—" if values[m] is None else f"{values[m]:.4f}" for m in METRICS]
            rows.append(f"| {name} | " + " | ".join(cells) + f" | {self.fit_seconds[name]:.1f} |")
        rows += ["", "calibration by decile of predicted churn (mean predicted / observed):", ""]
        names = list(self.calibration)
        rows.append("| decile | customers | " + " | ".join(names) + " |")
        rows.append("|" + " --- |" * (2 + len(names)))
        for i, first in enumerate(self.calibration[names[0]]):
            bins = [self.calibration[n][i] for n in names]
            cells = [f"{b.mean_predicted:.3f} / {b.observed:.3f}" for b in bins]
            rows.append(f"| {first.decile} | {first.customers} | " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def to_json(self) -> dict[str, object]:
        return {
            "calibration_end": str(self.calibration_end),
            "holdout_end": str(self.holdout_end),
            "customers": self.customers,
            "churn_rate": self.churn_rate,
            "config": self.config.model_dump(),
            "metrics": self.metrics,
            "calibration": {k: [b.model_dump() for b in v] for k, v in self.calibration.items()},
            "fit_seconds": self.fit_seconds,
        }


def _probability_metrics(y: np.ndarray, p: np.ndarray) -> tuple[dict[str, float], list]:
    table = calibration_table(y, p)
    metrics = {
        "roc_auc": roc_auc(y, p),
        "pr_auc": pr_auc(y, p),
        "brier": brier(y, p),
        "calibration_error": calibration_error(table),
    }
    return metrics, table


def run_churn_benchmark(
    calibration_end: date | str = STANDARD_CALIBRATION_END,
    holdout_end: date | str = STANDARD_HOLDOUT_END,
    config: ChurnConfig | None = None,
    seed: int = 0,
    transactions: pd.DataFrame | None = None,
) -> ChurnBenchResult:
    """Fits every model on purchases up to calibration_end and scores whether each customer
    bought again by holdout_end."""
    config = config or ChurnConfig()
    cut = split(calibration_end, holdout_end, transactions)
    data, calibration, cal, end = cut.data, cut.calibration, cut.calibration_end, cut.holdout_end
    holdout_days = cut.holdout_days  # nothing after cal is ever passed to a model

    started = time.perf_counter()
    model = fit_churn_model(calibration, cal, config, seed)
    inputs = model.inputs(calibration, cal, holdout_days)
    ours = model.predict(inputs)
    fit_seconds = {"xgboost": time.perf_counter() - started}

    started = time.perf_counter()
    params = fit_bgnbd(calibration, cal)
    bgnbd = bgnbd_scores(params, weekly_rfm(calibration, cal), holdout_days)
    bgnbd = bgnbd.reindex(inputs.features.index)
    fit_seconds["bgnbd"] = time.perf_counter() - started
    fit_seconds["recency"] = 0.0

    y = churned(data, inputs)
    predictions = pd.DataFrame(
        {
            "churned": y,
            "xgboost_p_churn": ours,
            "bgnbd_expected_purchases": bgnbd["bgnbd_expected_purchases"],
            "bgnbd_p_no_purchase": bgnbd["bgnbd_p_no_purchase"],
            "days_since_last": inputs.features["days_since_last"],
        },
        index=inputs.features.index,
    )
    metrics: dict[str, dict[str, float | None]] = {}
    calibration_bins = {}
    metrics["xgboost"], calibration_bins["xgboost"] = _probability_metrics(y, ours)
    metrics["bgnbd"], calibration_bins["bgnbd"] = _probability_metrics(
        y, predictions["bgnbd_p_no_purchase"].to_numpy()
    )
    # BG/NBD's ranking is by expected purchases, not by its P(no purchase).
    expected = predictions["bgnbd_expected_purchases"].to_numpy()
    metrics["bgnbd"]["roc_auc"] = roc_auc(y, -expected)
    metrics["bgnbd"]["pr_auc"] = pr_auc(y, -expected)
    recency = predictions["days_since_last"].to_numpy()
    metrics["recency"] = {
        "roc_auc": roc_auc(y, recency),
        "pr_auc": pr_auc(y, recency),
        "brier": None,
        "calibration_error": None,
    }
    return ChurnBenchResult(
        calibration_end=cal.date(),
        holdout_end=end.date(),
        holdout_days=holdout_days,
        customers=len(predictions),
        churn_rate=float(y.mean()),
        config=config,
        metrics=metrics,
        calibration=calibration_bins,
        fit_seconds=fit_seconds,
        predictions=predictions,
    )
