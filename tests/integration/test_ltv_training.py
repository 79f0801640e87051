"""A tiny Ray Tune search on the session's Ray, and the model registry on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import date

import pandas as pd
import pytest

from kiki.auth import ensure_tenant
from kiki.db import migrate
from kiki.db.pool import connect
from kiki.errors import Conflict
from kiki.value import registry
from kiki.value.features import FEATURE_NAMES
from kiki.value.ziln import ZILNConfig
from tests.integration.conftest import RunningPlatform
from tests.integration.test_value_api import CUT, synthetic_purchases
from training.ltv import search, train_ltv


@pytest.fixture(scope="module")
def purchases() -> pd.DataFrame:
    rows = pd.DataFrame(synthetic_purchases(customers=400, seed=3))
    return rows.assign(ts=pd.to_datetime(rows["occurred_at"]), amount=rows["amount"].astype(float))


def test_a_two_trial_tune_search_and_a_final_fit(
    platform: RunningPlatform, purchases: pd.DataFrame
) -> None:
    # The platform's replicas and actors hold most of this machine's CPUs: small trials.
    config = search(purchases, CUT, horizon_days=60, trials=2, max_epochs=3, cpus_per_trial=0.2)
    assert isinstance(config, ZILNConfig) and config.max_epochs == 3
    # No cpus_per_trial: the trials take a share of the CPUs the cluster has free.
    result = train_ltv(purchases, CUT, horizon_days=60, trials=2, max_epochs=3)
    assert set(result.reference) == {*FEATURE_NAMES, "prediction"}
    assert {"gini", "spearman", "mae", "rmse", "decile_mape", "total_error"} <= set(result.metrics)
    assert result.metrics["evaluated_on"].startswith("training window")  # no data after CUT
    assert result.data_window["calibration_end"] == CUT.isoformat()


def test_registry_versions_promote_ab_and_rollback(fresh_db: str) -> None:
    async def scenario() -> None:
        conn = await connect(fresh_db)
        try:
            await migrate.migrate(conn, migrate.discover())
            tenant = await ensure_tenant(conn, "acme")
            made = [
                await registry.register(
                    conn,
                    tenant.id,
                    metrics={"gini": 0.7},
                    feature_schema=list(FEATURE_NAMES),
                    config={},
                    calibration_end=date(1997, 9, 30),
                    horizon_days=90,
                    data_window={},
                    artifact_path=f"/models/{n}",
                    reference={},
                )
                for n in range(3)
            ]
            assert [m.version for m in made] == [1, 2, 3]
            await registry.promote(conn, tenant.id, 1)
            await registry.promote(conn, tenant.id, 2, traffic_percent=20)
            production, candidate = await registry.serving(conn, tenant.id)
            assert (production.version, candidate.version, candidate.traffic_percent) == (1, 2, 20)
            await registry.promote(conn, tenant.id, 3)
            production, candidate = await registry.serving(conn, tenant.id)
            assert production.version == 3 and candidate.version == 2
            assert (await registry.rollback(conn, tenant.id)).version == 1
            production, candidate = await registry.serving(conn, tenant.id)
            assert production.version == 1 and candidate is None
            with pytest.raises(Conflict):
                await registry.promote(conn, tenant.id, 1)
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_ab_buckets_are_stable_and_even() -> None:
    buckets = [registry.ab_bucket(f"cust_{i}") for i in range(10_000)]
    assert buckets[:50] == [registry.ab_bucket(f"cust_{i}") for i in range(50)]
    assert 0.17 < sum(b < 20 for b in buckets) / len(buckets) < 0.23
