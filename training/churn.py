"""`kiki train churn`: a Ray Tune (ASHA) search over the churn model's trees, then one final fit.

Each trial trains on windows that end one horizon before the calibration end and is judged
on that last horizon (the log loss of its centred scores, as the benchmark's `choose_config`
judges); ASHA hears the loss every REPORT_EVERY boosting rounds and stops weak trials early.
The winner is fitted on every window of the calibration period.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd
import xgboost as xgb
from ray import tune

from kiki.artifacts import ArtifactStore
from kiki.engage.churn import (
    ChurnConfig,
    TrainedChurnModel,
    churn_inputs,
    churned,
    fit_booster,
    fit_churn_model,
    scoring_matrix,
    training_set,
)
from kiki.engage.metrics import (
    brier,
    calibration_error,
    calibration_table,
    log_loss,
    pr_auc,
    roc_auc,
)
from training.tuning import asha_search

REPORT_EVERY = 25
SEARCH_SPACE: dict[str, Any] = {
    "max_depth": tune.choice([2, 3, 4, 6]),
    "learning_rate": tune.loguniform(0.02, 0.2),
    "min_child_weight": tune.choice([5.0, 20.0, 50.0, 100.0]),
    "subsample": tune.uniform(0.6, 1.0),
    "colsample_bytree": tune.uniform(0.5, 1.0),
}


@dataclass
class TrainedChurn:
    model: TrainedChurnModel
    config: ChurnConfig
    metrics: dict[str, Any]
    data_window: dict[str, str]
    trials: int
    seconds: float


def _trainable(config: dict[str, Any], data: dict[str, Any]) -> None:
    """One trial: trees on the earlier windows, the validation window's log loss reported
    every REPORT_EVERY rounds."""
    settings = ChurnConfig(**config, horizon_days=data["horizon_days"], rounds=data["rounds"])
    train, val, labels = data["train"], data["val"], data["labels"]

    def report(done: int, booster: xgb.Booster) -> None:
        if done % REPORT_EVERY and done != settings.rounds:
            return
        p = booster.predict(scoring_matrix(booster, val))
        tune.report({"val_logloss": log_loss(labels, p), "round": done})

    fit_booster(train, settings, seed=data["seed"], on_round=report)


def search(
    transactions: pd.DataFrame,
    calibration_end: date,
    horizon_days: int,
    trials: int,
    seed: int = 0,
    rounds: int = 300,
    storage: ArtifactStore | None = None,
    cpus_per_trial: float | None = None,
) -> ChurnConfig:
    """The tree settings with the lowest validation log loss; no trial sees a day after
    calibration_end, and none trains on the validation window. `cpus_per_trial`: see
    training.tuning.trial_cpus."""
    known = transactions[transactions["ts"].dt.normalize() <= pd.Timestamp(calibration_end)]
    window_start = calibration_end - timedelta(days=horizon_days)
    base = ChurnConfig(horizon_days=horizon_days, rounds=rounds)
    val = churn_inputs(known, window_start, horizon_days)  # BG/NBD fitted as of its start
    data = {
        "train": training_set(known, window_start, base),
        "val": val,
        "labels": churned(known, val),
        "horizon_days": horizon_days,
        "rounds": rounds,
        "seed": seed,
    }
    best = asha_search(
        _trainable,
        data,
        SEARCH_SPACE,
        metric="val_logloss",
        time_attr="round",
        max_t=rounds,
        grace_period=2 * REPORT_EVERY,
        trials=trials,
        name=f"churn-{calibration_end.isoformat()}",
        seed=seed,
        storage=storage,
        cpus_per_trial=cpus_per_trial,
    )
    return base.model_copy(update=best)


def train_churn(
    transactions: pd.DataFrame,
    calibration_end: date,
    horizon_days: int,
    trials: int,
    seed: int = 0,
    rounds: int = 300,
    cpus_per_trial: float | None = None,
    storage: ArtifactStore | None = None,
) -> TrainedChurn:
    """Search (`trials` 0: no search, the default trees), then fit on every window up to
    calibration_end. Metrics come from the
    horizon after calibration_end when the data has it, else from the last labelled window
    (which the model trained on, so they flatter it)."""
    started = time.perf_counter()
    cut = pd.Timestamp(calibration_end)
    calibration = transactions[transactions["ts"].dt.normalize() <= cut]
    config = search(
        calibration, calibration_end, horizon_days, trials, seed, rounds,
        storage=storage, cpus_per_trial=cpus_per_trial,
    ) if trials else ChurnConfig(horizon_days=horizon_days, rounds=rounds)  # fmt: skip
    model = fit_churn_model(calibration, calibration_end, config, seed)
    return TrainedChurn(
        model=model,
        config=config,
        metrics=evaluate_churn(model, transactions, calibration_end, horizon_days),
        data_window={
            "first_purchase": transactions["ts"].min().date().isoformat(),
            "calibration_end": calibration_end.isoformat(),
            "label_days": str(horizon_days),
            "cuts": str(config.cuts),
        },
        trials=trials,
        seconds=round(time.perf_counter() - started, 1),
    )


def evaluate_churn(
    model: TrainedChurnModel, transactions: pd.DataFrame, calibration_end: date, horizon_days: int
) -> dict[str, Any]:
    """The model's metrics on the `horizon_days` after `calibration_end` when the data has
    them (who bought again, which it never saw), else on the last labelled window before it,
    which a model trained to that day has seen (`evaluated_on` says which)."""
    calibration = transactions[transactions["ts"].dt.normalize() <= pd.Timestamp(calibration_end)]
    holdout_end = calibration_end + timedelta(days=horizon_days)
    if transactions["ts"].max() >= pd.Timestamp(holdout_end):
        scored = model.inputs(calibration, calibration_end, horizon_days)
        evaluated_on, outcomes = f"holdout {calibration_end} .. {holdout_end}", transactions
    else:
        start = calibration_end - timedelta(days=horizon_days)
        scored = model.inputs(calibration, start, horizon_days)
        evaluated_on, outcomes = f"training window {start} .. {calibration_end}", calibration
    labels = churned(outcomes, scored)
    p = model.predict(scored)
    return {
        "roc_auc": roc_auc(labels, p),
        "pr_auc": pr_auc(labels, p),
        "brier": brier(labels, p),
        "calibration_error": calibration_error(calibration_table(labels, p)),
        "churn_rate": float(labels.mean()),
        "evaluated_on": evaluated_on,
    }
