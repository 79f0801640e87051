"""EngageService without a database: the registries re-read every few seconds (a tenant with
no model included), and the errors that say what to do when no model serves."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from kiki.artifacts import ArtifactStore
from kiki.config import Settings
from kiki.engage import messaging
from kiki.engage.churn import TrainedChurnModel
from kiki.engage.registry import NO_CHURN_MODEL
from kiki.engage.service import REGISTRY_TTL_S, EngageService
from kiki.errors import FailedPrecondition
from tests.conftest import SUPPRESSIONS


async def _no_pool() -> asyncpg.Pool:
    raise AssertionError("these tests never reach the database")


class Registries(EngageService):
    """The service over registries held in memory, counting the reads."""

    def __init__(self, records: dict[str, Any]) -> None:
        self.now = 0.0
        settings = Settings()
        store = ArtifactStore.from_settings(settings)
        super().__init__(
            _no_pool, httpx.AsyncClient(), settings, messaging.Caps(), store, SUPPRESSIONS,
            timer=lambda: self.now,
        )  # fmt: skip
        self.records = records
        self.reads = 0

    async def _read_record(self, kind: str, tenant_id: UUID) -> Any:
        self.reads += 1
        return self.records[kind]


def test_the_registry_is_read_again_once_its_entry_expires() -> None:
    async def main() -> None:
        service = Registries({"churn": None, "churn_job": None, "ltv": None})
        tenant = uuid4()
        for _ in range(3):
            with pytest.raises(FailedPrecondition, match=NO_CHURN_MODEL):
                await service.models(tenant)
        assert service.reads == 2  # "no model" and "no job training one" are kept as well
        service.now += REGISTRY_TTL_S + 0.1
        with pytest.raises(FailedPrecondition):
            await service.models(tenant)
        assert service.reads == 4

    asyncio.run(main())


def test_missing_model_files_say_what_to_do(tmp_path: Path) -> None:
    service = Registries({})
    with pytest.raises(FailedPrecondition, match=r"model files are missing at .*retrain the model"):
        service._load(str(tmp_path / "gone"), TrainedChurnModel)


def test_without_a_churn_model_personalizing_uses_the_profile_alone() -> None:
    profile = messaging.Profile(
        customer_id="c1", first_name="Ada", updated_at=datetime(2026, 1, 1, tzinfo=UTC)
    )

    async def main() -> dict[str, Any]:
        return await Registries({"churn": None}).personalize(uuid4(), "c1", profile)

    context = asyncio.run(main())
    assert context["first_name"] == "Ada" and "churn_risk" not in context
