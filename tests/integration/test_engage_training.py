"""A two-trial Ray Tune search for the churn model on the session's Ray, and the churn model
registry on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest

from kiki.auth import ensure_tenant
from kiki.db import migrate
from kiki.db.pool import connect
from kiki.engage import registry
from kiki.engage.churn import MODEL_FEATURES, ChurnConfig, TrainedChurnModel
from kiki.errors import Conflict, InvalidInput, NotFound
from tests.integration.conftest import RunningPlatform
from tests.unit.test_engage_churn import END, simulate
from training.churn import train_churn


def test_a_two_trial_tune_search_and_a_final_fit(platform: RunningPlatform, tmp_path: Path) -> None:
    history = simulate()
    # A fraction of a CPU per trial: the session's six Serve apps hold part of this machine.
    result = train_churn(
        history, END.date(), horizon_days=30, trials=2, rounds=50, cpus_per_trial=0.2
    )
    assert isinstance(result.config, ChurnConfig) and result.config.rounds == 50
    assert result.metrics["evaluated_on"].startswith("holdout")  # simulate() runs past END
    assert {"roc_auc", "pr_auc", "brier", "calibration_error"} <= set(result.metrics)
    assert result.metrics["roc_auc"] > 0.6
    loaded = TrainedChurnModel.load(result.model.save(tmp_path / "churn"))
    assert loaded.meta.config == result.config


def test_registry_versions_and_promotion(fresh_db: str) -> None:
    async def scenario() -> None:
        conn = await connect(fresh_db)
        try:
            await migrate.migrate(conn, migrate.discover())
            tenant = await ensure_tenant(conn, "acme")
            made = [
                await registry.register(
                    conn,
                    tenant.id,
                    metrics={"roc_auc": 0.77},
                    feature_schema=list(MODEL_FEATURES),
                    config={},
                    calibration_end=date(1997, 9, 30),
                    horizon_days=90,
                    data_window={},
                    artifact_path=f"/models/{n}",
                )
                for n in range(2)
            ]
            assert [m.version for m in made] == [1, 2]
            assert await registry.production(conn, tenant.id) is None
            await registry.promote(conn, tenant.id, 1)
            await registry.promote(conn, tenant.id, 2)
            serving = await registry.production(conn, tenant.id)
            assert serving is not None and serving.version == 2
            statuses = [m.status for m in await registry.list_models(conn, tenant.id)]
            assert statuses == ["retired", "production"]
            with pytest.raises(Conflict):
                await registry.promote(conn, tenant.id, 2)
            with pytest.raises(NotFound):
                await registry.promote(conn, tenant.id, 9)
            with pytest.raises(InvalidInput, match="one version at a time"):
                await registry.promote(conn, tenant.id, 1, traffic_percent=50)
            assert (await registry.rollback(conn, tenant.id)).version == 1
            assert (await registry.production(conn, tenant.id)).traffic_percent == 100
        finally:
            await conn.close()

    asyncio.run(scenario())
