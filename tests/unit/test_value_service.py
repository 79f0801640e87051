"""SyncValue's use cases without Ray or a database: the registry, purchase history and
segment members are stubbed, the models replaced by a scorer that answers by version."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import pandas as pd
import pytest

from kiki import training_jobs
from kiki.artifacts import ArtifactStore
from kiki.config import Settings
from kiki.errors import FailedPrecondition
from kiki.model_registry import ModelRecord
from kiki.money import micros_to_decimal_str
from kiki.value import registry, service, transactions
from kiki.value.scoring import ModelCache
from kiki.value.service import Customer, Prediction, PredictionError, ValueService

DAY = date(2025, 12, 31)
# The expected LTV each version predicts for every row: tells the A/B arms apart.
EXPECTED = {"v1": 10.0, "v2": 20.0}


def _record(version: int, status: str, traffic: int) -> ModelRecord:
    return ModelRecord(
        version=version,
        status=status,
        traffic_percent=traffic,
        metrics={},
        feature_schema=[],
        config={"currency": "USD"},
        calibration_end=DAY,
        horizon_days=90,
        data_window={},
        artifact_url=f"v{version}",
        reference={},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        promoted_at=None,
    )


class FakeScorer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def score(self, artifact_url: str, features: pd.DataFrame) -> dict[str, np.ndarray]:
        self.calls.append((artifact_url, len(features)))
        n = len(features)
        expected = np.full(n, EXPECTED[artifact_url])
        return {
            "expected": expected,
            "p_purchase": np.full(n, 0.5),
            "p10": expected / 2,
            "p50": expected,
            "p90": expected * 2,
        }


class FakePool:
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        yield None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stubbed registry (production v1, candidate v2 at 50%), history, segments and no
    training job."""
    state: dict[str, Any] = {
        "serving": (_record(1, "production", 100), _record(2, "candidate", 50)),
        "registry_reads": 0,
        "members": {"s1": ["a", "b"], "empty": []},
        "history": pd.DataFrame(
            {
                "customer_id": ["a", "a", "b"],
                "ts": pd.to_datetime(["2025-06-01", "2025-11-01", "2025-12-01"]),
                "amount": [20.0, 30.0, 15.0],
                "quantity": [1, 1, 1],
            }
        ),
    }

    async def serving(conn: Any, tenant_id: UUID) -> Any:
        state["registry_reads"] += 1
        return state["serving"]

    async def history(conn: Any, tenant_id: UUID, as_of: Any, ids: Any = None) -> pd.DataFrame:
        frame = state["history"]
        return frame[frame["customer_id"].isin(ids)] if ids is not None else frame

    async def members(conn: Any, tenant_id: UUID, ids: list[str]) -> dict[str, list[str]]:
        return {s: state["members"][s] for s in ids if state["members"].get(s)}

    monkeypatch.setattr(registry, "serving", serving)

    async def no_job(conn: Any, tenant_id: UUID, kind: str) -> None:
        return None  # nothing is training a model for the tenant

    monkeypatch.setattr(transactions, "history", history)
    monkeypatch.setattr(service, "segment_members", members)
    monkeypatch.setattr(training_jobs, "latest", no_job)
    return state


def _service(**hooks: Any) -> tuple[ValueService, FakeScorer, Clock]:
    scorer, clock = FakeScorer(), Clock()

    async def pool() -> FakePool:
        return FakePool()

    value = ValueService(pool, scorer, registry_ttl_s=5, segment_ttl_s=60, timer=clock, **hooks)
    return value, scorer, clock


def test_each_customer_is_scored_by_its_ab_arm_and_billable_ones_are_metered(
    world: dict[str, Any],
) -> None:
    metered: list[tuple[UUID, int]] = []
    served: list[tuple[int, int]] = []
    value, scorer, _ = _service(
        meter=lambda t, n: metered.append((t, n)), served=lambda v, n: served.append((v, n))
    )
    tenant = uuid4()
    ids = [f"new_{i}" for i in range(40)]
    customers = [Customer(customer_id=c, spend=Decimal("12.50"), as_of=DAY) for c in ids]
    answers = asyncio.run(value.predict(tenant, customers))

    assert [a.customer_id for a in answers] == ids
    for a in answers:
        assert isinstance(a, Prediction) and a.source == "fields" and a.as_of == DAY
        arm = 2 if registry.ab_bucket(a.customer_id) < 50 else 1
        assert a.model_version == arm
        assert a.ltv_micros == round(EXPECTED[f"v{arm}"] * 1_000_000)
        assert a.ltv == micros_to_decimal_str(a.ltv_micros) and a.currency == "USD"
    assert {v for v, _ in served} == {1, 2} and sum(n for _, n in served) == 40
    assert len(scorer.calls) == 2  # one scoring call per model
    assert metered == [(tenant, 40)]
    asyncio.run(value.predict(tenant, customers[:3], billable=False))
    assert metered == [(tenant, 40)]


def test_customers_without_history_are_errors_in_place(world: dict[str, Any]) -> None:
    value, _, _ = _service()
    asked = [Customer(customer_id="a", as_of=DAY), Customer(customer_id="ghost", as_of=DAY)]
    known, unknown = asyncio.run(value.predict(uuid4(), asked))
    assert isinstance(known, Prediction) and known.source == "history"
    assert isinstance(unknown, PredictionError)
    assert unknown.error["code"] == "not_found" and "send `spend`" in unknown.error["message"]


def test_the_registry_is_reread_once_its_ttl_has_passed(world: dict[str, Any]) -> None:
    value, _, clock = _service()
    tenant = uuid4()
    asyncio.run(value.models(tenant))
    world["serving"] = (None, None)  # a rollback of the last version
    clock.now = 4.9
    asyncio.run(value.models(tenant))
    assert world["registry_reads"] == 1
    clock.now = 5.1
    with pytest.raises(FailedPrecondition, match="no LTV model is in production"):
        asyncio.run(value.models(tenant))
    assert world["registry_reads"] == 2


def test_segment_values_are_member_means_cached_for_their_ttl(world: dict[str, Any]) -> None:
    value, scorer, clock = _service()
    tenant = uuid4()
    found = asyncio.run(value.segment_values(tenant, ["s1", "empty", "unknown"]))
    by_arm = [EXPECTED["v2" if registry.ab_bucket(c) < 50 else "v1"] for c in ("a", "b")]
    assert found == {"s1": round(sum(x * 1_000_000 for x in by_arm) / 2)}
    calls = len(scorer.calls)
    clock.now = 59
    assert asyncio.run(value.segment_values(tenant, ["s1", "empty"])) == found
    assert len(scorer.calls) == calls  # served from the cache, empty segments included
    clock.now = 61
    asyncio.run(value.segment_values(tenant, ["s1"]))
    assert len(scorer.calls) > calls


def test_missing_model_files_are_a_failed_precondition(tmp_path: Any) -> None:
    with pytest.raises(FailedPrecondition, match="model files are missing"):
        ModelCache(ArtifactStore.from_settings(Settings(home=tmp_path))).get(str(tmp_path / "gone"))
