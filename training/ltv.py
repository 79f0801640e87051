"""`kiki train ltv`: a Ray Tune (ASHA) search over the ZILN model, then one final fit.

The search judges each configuration on a window that ends before the calibration end
(kiki.value.training), trains the winner on the latest calibration window, scores every
customer as of the calibration end, and hands back what the registry records.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from kiki.value import drift
from kiki.value.features import FEATURE_NAMES, compute_features
from kiki.value.metrics import evaluate
from kiki.value.training import examples, training_window
from kiki.value.ziln import TrainedLTVModel, ZILNConfig, train_ziln

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
    """One trial: fit on the tuning window, report validation loss every epoch to ASHA."""
    fit, valid = data["fit"], data["valid"]
    settings = ZILNConfig(**config, max_epochs=data["max_epochs"])
    train_ziln(
        fit.features,
        fit.labels,
        settings,
        seed=data["seed"],
        X_val=valid.features,
        y_val=valid.labels,
        on_epoch=lambda epoch, m: tune.report({"val_loss": m["val_loss"], "epoch": epoch}),
    )


def search(
    transactions: pd.DataFrame,
    calibration_end: date,
    horizon_days: int,
    trials: int,
    seed: int = 0,
    max_epochs: int = 40,
    storage: Path | None = None,
) -> ZILNConfig:
    """The configuration with the lowest validation loss on the window one horizon before
    the training window (no trial sees a day after the calibration end)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    fit = examples(transactions, training_window(calibration_end, horizon_days, 2), horizon_days)
    valid = examples(transactions, training_window(calibration_end, horizon_days, 1), horizon_days)
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(
                _trainable,
                data={"fit": fit, "valid": valid, "seed": seed, "max_epochs": max_epochs},
            ),
            {"cpu": 1},
        ),
        param_space=SEARCH_SPACE,
        tune_config=tune.TuneConfig(
            metric="val_loss",
            mode="min",
            num_samples=trials,
            scheduler=ASHAScheduler(
                time_attr="epoch", max_t=max_epochs, grace_period=min(5, max_epochs)
            ),
        ),
        run_config=tune.RunConfig(
            storage_path=str(storage or Path(tempfile.gettempdir()) / "kiki-tune"),
            name=f"ltv-{calibration_end.isoformat()}-{int(time.time())}",
            verbose=0,
        ),
    )
    best = tuner.fit().get_best_result()
    if best.config is None:
        raise RuntimeError("no Ray Tune trial finished; see the Tune logs")
    return ZILNConfig(**best.config, max_epochs=max_epochs)


def train_ltv(
    transactions: pd.DataFrame,
    calibration_end: date,
    horizon_days: int,
    trials: int,
    seed: int = 0,
    max_epochs: int = 40,
) -> TrainedLTV:
    """Search, fit the winner on the latest window, score as of `calibration_end`. Metrics
    come from the days after `calibration_end` when the data has them, else from the
    validation window."""
    started = time.perf_counter()
    config = search(transactions, calibration_end, horizon_days, trials, seed, max_epochs)
    latest = examples(transactions, training_window(calibration_end, horizon_days, 1), horizon_days)
    model = train_ziln(latest.features, latest.labels, config, seed=seed)
    now = compute_features(transactions, calibration_end)
    predicted = model.predict(now)["expected"]
    holdout_end = calibration_end + timedelta(days=horizon_days)
    if transactions["ts"].max() >= pd.Timestamp(holdout_end):
        scored = examples(transactions, calibration_end, horizon_days)
        metrics = evaluate(scored.labels, model.predict(scored.features)["expected"])
        metrics["evaluated_on"] = f"holdout {calibration_end} .. {holdout_end}"
    else:
        metrics = evaluate(latest.labels, model.predict(latest.features)["expected"])
        metrics["evaluated_on"] = f"training window {latest.as_of} .. {calibration_end}"
    first = transactions["ts"].min().date()
    return TrainedLTV(
        model=model,
        config=config,
        metrics=metrics,
        reference=drift.profile(now, predicted),
        data_window={
            "first_purchase": first.isoformat(),
            "calibration_end": calibration_end.isoformat(),
            "training_cut": latest.as_of.isoformat(),
        },
        trials=trials,
        seconds=round(time.perf_counter() - started, 1),
    )


def feature_schema() -> list[str]:
    return list(FEATURE_NAMES)
