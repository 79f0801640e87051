"""`kiki train ltv`: a Ray Tune (ASHA) search over the ZILN model, then one final fit.

The search judges each configuration on a window that ends before the calibration end
(kiki.value.training), trains the winner on the latest calibration window, scores every
customer as of the calibration end, and hands back what the registry records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd
from ray import tune

from kiki.artifacts import ArtifactStore
from kiki.value import drift
from kiki.value.features import FEATURE_NAMES, compute_features
from kiki.value.metrics import evaluate
from kiki.value.training import LTVTrainingConfig, examples, fit_ltv_model
from kiki.value.ziln import TrainedLTVModel, ZILNConfig
from training.tuning import asha_search

SEARCH_SPACE: dict[str, Any] = {
    "hidden": tune.choice([(32,), (64, 32), (128, 64)]),
    "dropout": tune.choice([0.0, 0.1, 0.3]),
    "learning_rate": tune.loguniform(3e-4, 3e-3),
    "weight_decay": tune.loguniform(1e-6, 1e-3),
    "batch_size": tune.choice([256, 512, 1024]),
}


@dataclass
class TrainedLTV:
    model: TrainedLTVModel
    config: ZILNConfig
    metrics: dict[str, Any]
    reference: dict[str, drift.Bins]
    data_window: dict[str, str]
    trials: int
    seconds: float


def _trainable(config: dict[str, Any], data: dict[str, Any]) -> None:
    """One trial: one network fit on purchases up to one horizon before the calibration end,
    the method the benchmark uses; ASHA hears its held-out customers' loss every epoch."""
    settings = LTVTrainingConfig(
        horizon_days=data["horizon_days"],
        model=ZILNConfig(**config, members=1, max_epochs=data["max_epochs"]),
    )
    fit_ltv_model(
        data["transactions"],
        data["window_end"],
        settings,
        seed=data["seed"],
        on_epoch=lambda epoch, m: tune.report({"val_loss": m["val_loss"], "epoch": epoch}),
    )


def search(
    transactions: pd.DataFrame,
    calibration_end: date,
    horizon_days: int,
    trials: int,
    seed: int = 0,
    max_epochs: int = 40,
    storage: ArtifactStore | None = None,
    cpus_per_trial: float | None = None,
) -> ZILNConfig:
    """The network settings with the lowest validation loss, each trial trained on data up to
    one horizon before the calibration end (no trial sees a day after it). `cpus_per_trial`:
    see training.tuning.trial_cpus."""
    window_end = calibration_end - timedelta(days=horizon_days)
    data = {
        "transactions": transactions[transactions["ts"] <= pd.Timestamp(window_end)],
        "window_end": window_end,
        "horizon_days": horizon_days,
        "seed": seed,
        "max_epochs": max_epochs,
    }
    best = asha_search(
        _trainable,
        data,
        SEARCH_SPACE,
        metric="val_loss",
        time_attr="epoch",
        max_t=max_epochs,
        grace_period=5,
        trials=trials,
        name=f"ltv-{calibration_end.isoformat()}",
        seed=seed,
        storage=storage,
        cpus_per_trial=cpus_per_trial,
    )
    return ZILNConfig(**best, max_epochs=max_epochs)


def train_ltv(
    transactions: pd.DataFrame,
    calibration_end: date,
    horizon_days: int,
    trials: int,
    seed: int = 0,
    max_epochs: int = 40,
    cpus_per_trial: float | None = None,
    storage: ArtifactStore | None = None,
) -> TrainedLTV:
    """Search (`trials` 0: no search, the default network), then fit the benchmark's model
    (an ensemble over stacked cuts, labels of `horizon_days`) on everything up to
    `calibration_end` and score as of that day. Metrics
    come from the days after `calibration_end` when the data has them, else from the last
    labelled window (which the model trained on, so they flatter it)."""
    started = time.perf_counter()
    calibration = transactions[transactions["ts"] <= pd.Timestamp(calibration_end)]
    best = search(
        calibration, calibration_end, horizon_days, trials, seed, max_epochs,
        storage=storage, cpus_per_trial=cpus_per_trial,
    ) if trials else ZILNConfig(max_epochs=max_epochs)  # fmt: skip
    config = LTVTrainingConfig(
        horizon_days=horizon_days, model=best.model_copy(update={"members": 3})
    )
    model = fit_ltv_model(calibration, calibration_end, config, seed)
    now = compute_features(calibration, calibration_end)
    predicted = model.predict(now)["expected"]
    metrics = evaluate_ltv(model, transactions, calibration_end, horizon_days)
    first = transactions["ts"].min().date()
    return TrainedLTV(
        model=model,
        config=config.model,
        metrics=metrics,
        reference=drift.profile(now, predicted),
        data_window={
            "first_purchase": first.isoformat(),
            "calibration_end": calibration_end.isoformat(),
            "label_days": str(horizon_days),
            "cuts": str(config.cuts),
        },
        trials=trials,
        seconds=round(time.perf_counter() - started, 1),
    )


def evaluate_ltv(
    model: TrainedLTVModel, transactions: pd.DataFrame, calibration_end: date, horizon_days: int
) -> dict[str, Any]:
    """The model's metrics on the `horizon_days` after `calibration_end` when the data has
    them (customers as of that day, spend it never saw), else on the last labelled window
    before it, which a model trained to that day has seen (`evaluated_on` says which)."""
    holdout_end = calibration_end + timedelta(days=horizon_days)
    if transactions["ts"].max() >= pd.Timestamp(holdout_end):
        scored = examples(transactions, calibration_end, horizon_days)
        evaluated_on = f"holdout {calibration_end} .. {holdout_end}"
    else:
        calibration = transactions[transactions["ts"] <= pd.Timestamp(calibration_end)]
        scored = examples(calibration, calibration_end - timedelta(days=horizon_days), horizon_days)
        evaluated_on = f"training window {scored.as_of} .. {calibration_end}"
    metrics: dict[str, Any] = evaluate(scored.labels, model.predict(scored.features)["expected"])
    metrics["evaluated_on"] = evaluated_on
    return metrics


def feature_schema() -> list[str]:
    return list(FEATURE_NAMES)
