"""The persistence half of generation without a database: a placeholder batch saved as an
experiment writes every PNG before the rows that point at it, and the rows carry each
creative's copy and verdicts."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from kiki.artifacts import ArtifactStore
from kiki.config import Settings
from kiki.create import store
from kiki.create.brief import GenerateRequest, plan_variants
from kiki.create.studio import Job, Studio


class FakePool:
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[str]:
        yield "conn"


def test_a_batch_is_saved_files_first_then_one_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = GenerateRequest.model_validate(
        {
            "product": {"name": "CloudSync Pro"},
            "brand": {"name": "TechCorp", "primary_colors": ["#3b82f6"]},
            "variants": 2,
            "platform": "google_1_1",
        }
    )
    briefs = plan_variants(request)
    batch = Studio.load(Settings(home=tmp_path, creative_steps=1)).make(
        Job(request.placement, briefs, [7, 8], request.brand.rules())
    )
    files = store.CreativeFiles(ArtifactStore.from_settings(Settings(home=tmp_path)), tmp_path)
    inserted: list[tuple[Any, ...]] = []

    async def insert_experiment(conn: str, *args: Any) -> None:
        # Every image is stored before its row is written.
        assert all(files.read(r.image_url) for r in args[-1])
        inserted.append((conn, *args))

    monkeypatch.setattr(store, "insert_experiment", insert_experiment)
    tenant = uuid4()
    experiment_id, rows = asyncio.run(
        store.save_batch(FakePool(), files, tenant, "google_1_1", {"r": 1}, {"m": 2}, batch)
    )

    assert inserted == [("conn", tenant, experiment_id, "google_1_1", {"r": 1}, {"m": 2},
                         batch.steps, rows)]  # fmt: skip
    assert [r.seed for r in rows] == [7, 8] and [r.variant for r in rows] == [0, 1]
    for row, creative in zip(rows, batch.creatives, strict=True):
        assert isinstance(row.creative_id, UUID) and row.experiment_id == experiment_id
        key = files.key(tenant, experiment_id, row.creative_id)
        assert row.image_url == (tmp_path / "artifacts" / key).resolve().as_uri()
        png = (tmp_path / "artifacts" / key).read_bytes()
        assert png == creative.png and hashlib.sha256(png).hexdigest() == row.image_sha256
        assert row.copy == {
            "headline": creative.brief.copy.headline,
            "call_to_action": creative.brief.copy.call_to_action,
            "disclaimers": list(creative.brief.copy.disclaimers),
        }
        assert (row.width, row.height) == (1200, 1200) and row.prompt == creative.brief.prompt
        assert row.compliance_score == creative.compliance.score
        assert row.safety == creative.safety.model_dump()
