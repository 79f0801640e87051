"""A tiny Ray Tune search for the LTV model on the session's Ray, and a final fit; the trials'
results land in the platform's artifact store (S3)."""

from __future__ import annotations

import pandas as pd
import pytest

from kiki.artifacts import ArtifactStore
from kiki.value.features import FEATURE_NAMES
from kiki.value.ziln import ZILNConfig
from tests.conftest import S3Server
from tests.integration.conftest import RunningPlatform
from tests.integration.test_value_api import CUT, synthetic_purchases
from training.ltv import search, train_ltv


@pytest.fixture(scope="module")
def purchases() -> pd.DataFrame:
    rows = pd.DataFrame(synthetic_purchases(customers=400, seed=3))
    return rows.assign(ts=pd.to_datetime(rows["occurred_at"]), amount=rows["amount"].astype(float))


def test_a_two_trial_tune_search_and_a_final_fit(
    platform: RunningPlatform, purchases: pd.DataFrame, s3_server: S3Server
) -> None:
    # The platform's replicas and actors hold most of this machine's CPUs: small trials.
    config = search(purchases, CUT, horizon_days=60, trials=2, max_epochs=3, cpus_per_trial=0.2)
    assert isinstance(config, ZILNConfig) and config.max_epochs == 3
    # No cpus_per_trial: the trials take a share of the CPUs the cluster has free.
    store = ArtifactStore.from_settings(platform.settings)
    result = train_ltv(purchases, CUT, horizon_days=60, trials=2, max_epochs=3, storage=store)
    bucket = store.url.removeprefix("s3://").split("/", 1)[0]
    stored = s3_server.keys(bucket, "kiki/tune/ltv-")
    assert sum(key.endswith("/result.json") for key in stored) == 2, stored  # one per trial
    assert set(result.reference) == {*FEATURE_NAMES, "prediction"}
    assert {"gini", "spearman", "mae", "rmse", "decile_mape", "total_error"} <= set(result.metrics)
    assert result.metrics["evaluated_on"].startswith("training window")  # no data after CUT
    assert result.data_window["calibration_end"] == CUT.isoformat()
