"""The retraining actor on the session's Ray: a tenant's LTV model retrained on newer data,
registered as a challenger, served to a share of customers, and promoted only when it beats
the champion on days neither saw; the verdict's numbers in the registry. The same loop for a
churn model, which serves one version at a time. Models in S3."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import ray
import torch

from actors.retrain import retrainer
from kiki.artifacts import ArtifactStore
from kiki.auth import ensure_tenant
from kiki.config import Settings
from kiki.db import migrate
from kiki.db.pool import connect
from kiki.engage.churn import MODEL_FEATURES, fit_churn_model
from kiki.engage.registry import CHURN_MODELS
from kiki.value import drift, registry, transactions
from kiki.value.cdnow import load_cdnow
from kiki.value.features import FEATURE_NAMES, compute_features
from kiki.value.scoring import LocalScorer
from kiki.value.ziln import ZILNConfig, train_ziln
from tests.conftest import SUPPRESSIONS, store_in
from tests.integration.conftest import RunningPlatform
from tests.unit.test_engage_churn import END, SMALL, simulate

HORIZON = 90
# 3,000 CDNOW customers (9,481 purchases, 1997-01 .. 1998-06): real buying, small enough to
# train in seconds.
_CDNOW = load_cdnow()
PURCHASES = _CDNOW[_CDNOW["customer_id"].isin(sorted(_CDNOW["customer_id"].unique())[:3000])]
LAST_DAY = PURCHASES["ts"].max().date()
CHAMPION_CUT = date(1997, 12, 31)


async def tenant_with_a_champion(url: str, settings: Settings, folder: Path) -> uuid.UUID:
    """The purchases and a production LTV model trained to CHAMPION_CUT whose forecasts are
    then made 10,000 times too high (its mu's bias raised by ln 10,000): a champion any sane
    challenger beats on squared error."""
    frame = PURCHASES
    mid = CHAMPION_CUT - timedelta(days=HORIZON)
    x = compute_features(frame[frame["ts"] <= pd.Timestamp(CHAMPION_CUT)], mid)
    later = frame[(frame["ts"] > pd.Timestamp(mid)) & (frame["ts"] <= pd.Timestamp(CHAMPION_CUT))]
    y = later.groupby("customer_id")["amount"].sum().reindex(x.index, fill_value=0.0)
    model = train_ziln(x, y.to_numpy(), ZILNConfig(hidden=(8,), max_epochs=5), seed=0)
    with torch.no_grad():
        for network in model.networks:
            network.net[-1].bias[1] += math.log(10_000)
    reference = drift.profile(x, model.predict(x)["expected"])
    conn = await connect(url)
    try:
        await migrate.migrate(conn, migrate.discover())
        tenant = await ensure_tenant(conn, "retrain")
        async with conn.transaction():
            await transactions.insert(
                conn, tenant.id, transactions.from_frame(frame, "r-"), SUPPRESSIONS
            )
        champion = await registry.register(
            conn, tenant.id, metrics={}, feature_schema=list(FEATURE_NAMES),
            config={"currency": "USD"}, calibration_end=CHAMPION_CUT, horizon_days=HORIZON,
            data_window={}, artifact_url=store_in(settings, model.save(folder), "ltv"),
            reference={k: v.model_dump() for k, v in reference.items()},
        )  # fmt: skip
        await registry.promote(conn, tenant.id, champion.version)
        return tenant.id
    finally:
        await conn.close()


async def versions(url: str, tenant_id: uuid.UUID) -> list[Any]:
    conn = await connect(url)
    try:
        return await registry.list_models(conn, tenant_id)
    finally:
        await conn.close()


@pytest.fixture
def actor_settings(platform: RunningPlatform, tmp_path: Path) -> Settings:
    return platform.settings.model_copy(
        update={"home": tmp_path, "retrain_trials": 1, "retrain_challenger_percent": 20}
    )


def test_a_better_challenger_is_promoted_and_a_repeat_finds_no_newer_data(
    platform: RunningPlatform, fresh_db: str, actor_settings: Settings, tmp_path: Path
) -> None:
    tenant_id = asyncio.run(tenant_with_a_champion(fresh_db, actor_settings, tmp_path / "m"))
    actor = retrainer(fresh_db, actor_settings, name=f"retrain-{uuid.uuid4().hex[:6]}",
                      detached=False)  # fmt: skip
    try:
        [outcome] = ray.get(actor.run_once.remote(str(tenant_id)), timeout=280)
        assert outcome["family"] == "ltv" and outcome["reason"] == "asked", outcome
        verdict = outcome["verdict"]
        assert verdict["promote"] and outcome["status"] == "production", verdict
        assert verdict["champion_version"] == 1 and verdict["metric"] == "rmse"
        assert verdict["challenger"] <= verdict["champion"] * 0.99

        champion, challenger = asyncio.run(versions(fresh_db, tenant_id))
        assert (champion.status, challenger.status) == ("retired", "production")
        assert challenger.calibration_end == LAST_DAY - timedelta(days=HORIZON)
        assert challenger.artifact_url.startswith(f"{actor_settings.artifacts_url}/models/ltv/")
        kept = challenger.metrics["retrain"]
        assert kept["rule"] == verdict["rule"] and kept["challenger"] == challenger.metrics["rmse"]
        assert challenger.metrics["evaluated_on"].startswith(
            f"holdout {challenger.calibration_end}"
        )

        # The new champion has seen every labelled day there is: nothing to retrain on.
        [again] = ray.get(actor.run_once.remote(str(tenant_id)), timeout=120)
        assert again["version"] is None and "no purchases after" in again["skipped"]
    finally:
        ray.kill(actor)


def test_a_challenger_that_does_not_win_by_the_margin_stays_a_candidate(
    platform: RunningPlatform, fresh_db: str, actor_settings: Settings, tmp_path: Path
) -> None:
    tenant_id = asyncio.run(tenant_with_a_champion(fresh_db, actor_settings, tmp_path / "m"))
    demanding = actor_settings.model_copy(update={"retrain_min_gain": 0.999})
    actor = retrainer(fresh_db, demanding, name=f"retrain-{uuid.uuid4().hex[:6]}",
                      detached=False)  # fmt: skip
    try:
        [outcome] = ray.get(actor.run_once.remote(str(tenant_id)), timeout=280)
        assert not outcome["verdict"]["promote"] and outcome["status"] == "candidate", outcome
        champion, challenger = asyncio.run(versions(fresh_db, tenant_id))
        assert (champion.status, champion.traffic_percent) == ("production", 100)
        assert (challenger.status, challenger.traffic_percent) == ("candidate", 20)
    finally:
        ray.kill(actor)


async def tenant_with_a_churn_champion(url: str, settings: Settings, folder: Path) -> uuid.UUID:
    """Simulated purchases and a churn model of one boosting round trained to END."""
    history = simulate()
    config = SMALL.model_copy(update={"rounds": 1})
    model = fit_churn_model(history[history["ts"] <= END], END, config)
    conn = await connect(url)
    try:
        await migrate.migrate(conn, migrate.discover())
        tenant = await ensure_tenant(conn, "retrain-churn")
        rows = transactions.from_frame(history.assign(quantity=1), "sim-")
        async with conn.transaction():
            await transactions.insert(conn, tenant.id, rows, SUPPRESSIONS)
        champion = await CHURN_MODELS.register(
            conn, tenant.id, metrics={}, feature_schema=list(MODEL_FEATURES),
            config=config.model_dump(), calibration_end=END.date(),
            horizon_days=config.horizon_days, data_window={},
            artifact_url=store_in(settings, model.save(folder), "churn"),
        )  # fmt: skip
        await CHURN_MODELS.promote(conn, tenant.id, champion.version)
        return tenant.id
    finally:
        await conn.close()


def test_a_churn_challenger_short_of_the_margin_stays_registered(
    platform: RunningPlatform, fresh_db: str, actor_settings: Settings, tmp_path: Path
) -> None:
    """Churn models serve one version at a time: no traffic share, and a challenger that does
    not beat the champion by the margin (20 % here) is kept as a registered version."""
    tenant_id = asyncio.run(tenant_with_a_churn_champion(fresh_db, actor_settings, tmp_path))
    demanding = actor_settings.model_copy(update={"retrain_min_gain": 0.2})
    actor = retrainer(fresh_db, demanding, name=f"retrain-{uuid.uuid4().hex[:6]}",
                      detached=False)  # fmt: skip
    try:
        [outcome] = ray.get(actor.run_once.remote(str(tenant_id)), timeout=280)
    finally:
        ray.kill(actor)
    verdict = outcome["verdict"]
    assert outcome["family"] == "churn" and verdict["metric"] == "brier", outcome
    assert not verdict["promote"] and outcome["status"] == "registered", verdict
    assert verdict["challenger"] > verdict["champion"] * 0.8

    async def read() -> list[Any]:
        conn = await connect(fresh_db)
        try:
            return await CHURN_MODELS.list_models(conn, tenant_id)
        finally:
            await conn.close()

    champion, challenger = asyncio.run(read())
    assert (champion.status, champion.traffic_percent) == ("production", 100)
    assert (challenger.status, challenger.traffic_percent) == ("registered", 0)
    assert challenger.metrics["retrain"]["rule"] == verdict["rule"]
    assert challenger.calibration_end > champion.calibration_end


def _stale_gauge(metrics_url: str, tenant_id: uuid.UUID) -> float | None:
    for line in httpx.get(metrics_url, timeout=5).text.splitlines():
        if line.startswith("ray_kiki_ltv_model_stale{") and f'tenant="{tenant_id}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait_for_stale(metrics_url: str, tenant_id: uuid.UUID, expected: float) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if _stale_gauge(metrics_url, tenant_id) == expected:
            return
        time.sleep(1)
    pytest.fail(f"kiki_ltv_model_stale of {tenant_id} never showed {expected}")


async def rebase_reference(url: str, settings: Settings, tenant_id: uuid.UUID) -> None:
    """Make today's customers and predictions the production model's training reference:
    nothing has moved from it any more."""
    conn = await connect(url)
    try:
        model = await registry.LTV_MODELS.production(conn, tenant_id)
        assert model is not None
        today = datetime.now(UTC).date()
        history = await transactions.history(conn, tenant_id, transactions.end_of(today))
        features = compute_features(history, today)
        scorer = LocalScorer(ArtifactStore.from_settings(settings))
        expected = (await scorer.score(model.artifact_url, features.reset_index()))["expected"]
        reference = {k: v.model_dump() for k, v in drift.profile(features, expected).items()}
        await conn.execute(
            "UPDATE ltv_models SET reference = $3 WHERE tenant_id = $1 AND version = $2",
            tenant_id, model.version, json.dumps(reference),
        )  # fmt: skip
    finally:
        await conn.close()


def test_the_drift_gauges_follow_the_schedule_without_a_drift_call(
    platform: RunningPlatform, fresh_db: str, actor_settings: Settings, tmp_path: Path
) -> None:
    tenant_id = asyncio.run(tenant_with_a_champion(fresh_db, actor_settings, tmp_path / "m"))
    assert _stale_gauge(platform.metrics_url, tenant_id) is None
    every_second = actor_settings.model_copy(update={"drift_check_s": 1.0})
    actor = retrainer(fresh_db, every_second, name=f"retrain-{uuid.uuid4().hex[:6]}",
                      detached=False)  # fmt: skip
    try:
        assert ray.get(actor.ready.remote(), timeout=60)
        # A model trained on 1997 customers, asked about today's: stale, with nobody asking.
        _wait_for_stale(platform.metrics_url, tenant_id, 1.0)
        asyncio.run(rebase_reference(fresh_db, every_second, tenant_id))
        _wait_for_stale(platform.metrics_url, tenant_id, 0.0)
    finally:
        ray.kill(actor)
