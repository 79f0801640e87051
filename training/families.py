"""The two model families KIKI trains (LTV, churn): how each is trained, judged on days it
never saw, saved to the artifact store and registered. `kiki train` and the retraining actor
both go through here."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pandas as pd

from kiki.artifacts import ArtifactStore, Loadable
from kiki.engage.churn import TrainedChurnModel
from kiki.engage.registry import CHURN_MODELS
from kiki.model_registry import ModelRecord, ModelRegistry
from kiki.value.registry import LTV_MODELS
from kiki.value.ziln import TrainedLTVModel
from training.churn import evaluate_churn, train_churn
from training.ltv import evaluate_ltv, train_ltv

MIN_CUSTOMERS = 50  # fewer customers by the cut: too few to learn from


@dataclass(frozen=True)
class TrainOptions:
    horizon_days: int = 90
    trials: int = 6  # 0: no search, the family's default configuration
    seed: int = 0
    size: int | None = None  # LTV: max epochs (40); churn: boosting rounds (300)
    cpus_per_trial: float | None = None


@dataclass(frozen=True)
class Family:
    kind: str  # "ltv" or "churn": the store's models/<kind>/ and the retrainer's logs
    models: ModelRegistry
    model_type: type[Loadable]
    promote_command: str
    metric: str  # what the retrainer compares on the holdout
    higher_is_better: bool
    train: Callable[[pd.DataFrame, date, TrainOptions, ArtifactStore], Any]
    evaluate: Callable[[Any, pd.DataFrame, date, int], dict[str, Any]]
    fields: Callable[[Any, TrainOptions], dict[str, Any]]  # feature_schema, config, reference


def _train_ltv(history: pd.DataFrame, cut: date, o: TrainOptions, store: ArtifactStore) -> Any:
    return train_ltv(
        history, cut, o.horizon_days, o.trials, o.seed, o.size or 40,
        cpus_per_trial=o.cpus_per_trial, storage=store,
    )  # fmt: skip


def _train_churn(history: pd.DataFrame, cut: date, o: TrainOptions, store: ArtifactStore) -> Any:
    return train_churn(
        history, cut, o.horizon_days, o.trials, o.seed, o.size or 300,
        cpus_per_trial=o.cpus_per_trial, storage=store,
    )  # fmt: skip


LTV = Family(
    kind="ltv",
    models=LTV_MODELS,
    model_type=TrainedLTVModel,
    promote_command="kiki models promote",
    # The model predicts expected spend, which squared error rewards; absolute error rewards
    # the median, which is 0 for most customers, so a model predicting 0 would win on it.
    metric="rmse",
    higher_is_better=False,
    train=_train_ltv,
    evaluate=evaluate_ltv,
    fields=lambda r, o: {
        "feature_schema": list(r.model.feature_names),
        "config": {**r.config.model_dump(), "currency": "USD", "seed": o.seed, "trials": o.trials},
        "reference": {k: v.model_dump() for k, v in r.reference.items()},
    },
)
CHURN = Family(
    kind="churn",
    models=CHURN_MODELS,
    model_type=TrainedChurnModel,
    promote_command="kiki engage promote",
    metric="brier",
    higher_is_better=False,
    train=_train_churn,
    evaluate=evaluate_churn,
    fields=lambda r, o: {
        "feature_schema": list(r.model.meta.feature_names),
        "config": {**r.config.model_dump(), "seed": o.seed, "trials": o.trials},
    },
)
FAMILIES: dict[str, Family] = {f.kind: f for f in (LTV, CHURN)}


def customers_by(history: pd.DataFrame, cut: date) -> int:
    """Customers with a purchase by the end of `cut`."""
    known = history[history["ts"] < pd.Timestamp(cut) + pd.Timedelta(days=1)]
    return int(known["customer_id"].nunique())


async def register_trained(
    conn: asyncpg.Connection,
    store: ArtifactStore,
    family: Family,
    tenant_id: UUID,
    result: Any,
    cut: date,
    options: TrainOptions,
    metrics: dict[str, Any] | None = None,
) -> ModelRecord:
    """Save the trained model to the artifact store and record it as the tenant's next
    version (status `registered`); `metrics` replaces the training run's own."""

    def upload() -> str:
        with tempfile.TemporaryDirectory(prefix="kiki-model-") as folder:
            result.model.save(Path(folder))
            return store.put_folder(Path(folder), family.kind)

    url = await asyncio.to_thread(upload)
    return await family.models.register(
        conn,
        tenant_id,
        metrics=metrics if metrics is not None else result.metrics,
        calibration_end=cut,
        horizon_days=options.horizon_days,
        data_window=result.data_window,
        artifact_url=url,
        **family.fields(result, options),
    )
