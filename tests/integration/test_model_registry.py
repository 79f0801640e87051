"""kiki.model_registry on PostgreSQL, over both tables that use it: dense versions per tenant,
promotion, rollback; A/B candidates for LTV models only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest
from click.testing import CliRunner

from kiki.auth import ensure_tenant
from kiki.db import migrate
from kiki.db.pool import connect
from kiki.engage.registry import CHURN_MODELS
from kiki.errors import Conflict, InvalidInput, NotFound
from kiki.model_registry import ModelRecord, ModelRegistry
from kiki.value.registry import LTV_MODELS, ab_bucket
from launcher.cli import main

Scenario = Callable[[asyncpg.Connection, UUID], Awaitable[None]]


def run(url: str, scenario: Scenario) -> None:
    async def go() -> None:
        conn = await connect(url)
        try:
            await migrate.migrate(conn, migrate.discover())
            await scenario(conn, (await ensure_tenant(conn, "acme")).id)
        finally:
            await conn.close()

    asyncio.run(go())


async def register(models: ModelRegistry, conn: asyncpg.Connection, tenant: UUID) -> ModelRecord:
    return await models.register(
        conn,
        tenant,
        metrics={"score": 0.7},
        feature_schema=["recency"],
        config={},
        calibration_end=date(1997, 9, 30),
        horizon_days=90,
        data_window={},
        artifact_url="/models/x",
    )


@pytest.mark.parametrize("models", [LTV_MODELS, CHURN_MODELS], ids=lambda m: m.table)
def test_versions_promotion_and_rollback(fresh_db: str, models: ModelRegistry) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: UUID) -> None:
        made = [await register(models, conn, tenant) for _ in range(3)]
        assert [m.version for m in made] == [1, 2, 3]
        assert await models.production(conn, tenant) is None
        await models.promote(conn, tenant, 1)
        await models.promote(conn, tenant, 2)
        serving = await models.production(conn, tenant)
        assert serving is not None and (serving.version, serving.traffic_percent) == (2, 100)
        assert [m.status for m in await models.list_models(conn, tenant)] == [
            "retired", "production", "registered",
        ]  # fmt: skip
        with pytest.raises(Conflict, match="already in production"):
            await models.promote(conn, tenant, 2)
        with pytest.raises(NotFound, match=f"no {models.noun} version 9"):
            await models.promote(conn, tenant, 9)
        assert (await models.rollback(conn, tenant)).version == 1
        assert [m.status for m in await models.list_models(conn, tenant)] == [
            "production", "retired", "registered",
        ]  # fmt: skip

    run(fresh_db, scenario)


def test_metrics_that_came_out_infinite_are_stored_as_null(fresh_db: str) -> None:
    """A decile with no spend makes decile MAPE infinite; PostgreSQL's JSON has no Infinity."""

    async def scenario(conn: asyncpg.Connection, tenant: UUID) -> None:
        saved = await LTV_MODELS.register(
            conn, tenant, metrics={"rmse": 3.5, "decile_mape": float("inf"),
                                   "by_decile": [1.0, float("nan")]},
            feature_schema=[], config={}, calibration_end=date(1997, 9, 30), horizon_days=90,
            data_window={}, artifact_url="s3://bucket/models/ltv/x",
        )  # fmt: skip
        assert saved.metrics == {"rmse": 3.5, "decile_mape": None, "by_decile": [1.0, None]}

    run(fresh_db, scenario)


def test_an_ltv_candidate_serves_a_share_beside_production(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: UUID) -> None:
        for _ in range(3):
            await register(LTV_MODELS, conn, tenant)
        await LTV_MODELS.promote(conn, tenant, 1)
        await LTV_MODELS.promote(conn, tenant, 2, traffic_percent=20)
        production, candidate = await LTV_MODELS.serving(conn, tenant)
        assert (production.version, candidate.version, candidate.traffic_percent) == (1, 2, 20)
        await LTV_MODELS.promote(conn, tenant, 3)
        production, candidate = await LTV_MODELS.serving(conn, tenant)
        assert production.version == 3 and candidate.version == 2
        assert (await LTV_MODELS.rollback(conn, tenant)).version == 1
        production, candidate = await LTV_MODELS.serving(conn, tenant)
        assert production.version == 1 and candidate is None
        with pytest.raises(InvalidInput, match="between 1 and 100"):
            await LTV_MODELS.promote(conn, tenant, 2, traffic_percent=0)

    run(fresh_db, scenario)


def test_churn_models_refuse_a_candidate(fresh_db: str) -> None:
    async def scenario(conn: asyncpg.Connection, tenant: UUID) -> None:
        await register(CHURN_MODELS, conn, tenant)
        with pytest.raises(InvalidInput, match="one version at a time"):
            await CHURN_MODELS.promote(conn, tenant, 1, traffic_percent=50)
        assert (await CHURN_MODELS.list_models(conn, tenant))[0].status == "registered"

    run(fresh_db, scenario)


def test_ab_buckets_are_stable_and_even() -> None:
    buckets = [ab_bucket(f"cust_{i}") for i in range(10_000)]
    assert buckets[:50] == [ab_bucket(f"cust_{i}") for i in range(50)]
    assert 0.17 < sum(b < 20 for b in buckets) / len(buckets) < 0.23


@pytest.mark.parametrize(
    ("models", "group"),
    [(LTV_MODELS, ["models"]), (CHURN_MODELS, ["engage"])],
    ids=["ltv", "churn"],
)
def test_the_cli_lists_promotes_and_rolls_back(
    fresh_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: ModelRegistry,
    group: list[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("KIKI_DATABASE_URL", fresh_db)
    monkeypatch.setenv("KIKI_HOME", str(tmp_path))

    async def scenario(conn: asyncpg.Connection, tenant: UUID) -> None:
        for _ in range(2):
            await register(models, conn, tenant)

    run(fresh_db, scenario)
    runner = CliRunner()

    def kiki(*args: str) -> str:
        done = runner.invoke(main, [*group, *args, "--tenant", "acme"])
        assert done.exit_code == 0, done.output
        return done.output

    listing = "list" if group == ["models"] else "models"
    assert "      1  registered" in kiki(listing)
    assert f"{models.noun} version 1 is now production (100%)" in kiki("promote", "1")
    assert f"{models.noun} version 2 is now production (100%)" in kiki("promote", "2")
    assert f"rolled back: {models.noun} version 1 is in production" in kiki("rollback")
    assert "      1  production    100%  1997-09-30          90d" in kiki(listing)
    ab = runner.invoke(main, [*group, "promote", "2", "--traffic", "20", "--tenant", "acme"])
    if models.candidates:
        assert ab.exit_code == 0 and "version 2 is now candidate (20%)" in ab.output
    else:
        assert ab.exit_code == 2 and "No such option '--traffic'" in ab.output
