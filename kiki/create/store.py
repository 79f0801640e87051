"""SyncCreate's storage: PNGs in the artifact store, their metadata in PostgreSQL, and the
A/B results reported per variant.

Files are written (atomically) before their rows, so a row never points at a missing image.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np

from kiki.artifacts import ArtifactStore
from kiki.create.studio import Batch, Creative
from kiki.errors import FailedPrecondition, InvalidInput, NotFound


class CreativeFiles:
    """PNGs in the artifact store under `creatives/<tenant>/<experiment>/<creative>.png`, so an
    image made on one node is served by any other. Rows name them by URL; rows from before the
    store name a path under the KIKI_HOME of the node that made them."""

    def __init__(self, store: ArtifactStore, home: Path) -> None:
        self.store = store
        self.home = Path(home).resolve()

    @staticmethod
    def key(tenant_id: UUID, experiment_id: UUID, creative_id: UUID) -> str:
        return f"creatives/{tenant_id}/{experiment_id}/{creative_id}.png"

    def write(self, key: str, data: bytes) -> str:
        """Store a PNG (whole or not at all); its URL."""
        return self.store.put_bytes(key, data)

    def read(self, image_url: str) -> bytes:
        try:
            if "://" in image_url:
                return self.store.get_bytes(image_url)
            return (self.home / image_url).read_bytes()
        except (FailedPrecondition, FileNotFoundError):
            raise NotFound(f"the image {image_url} is missing from the artifact store") from None


@dataclass(frozen=True)
class CreativeRow:
    """One stored variant, as `insert_creatives` takes it and `get_creative` returns it."""

    creative_id: UUID
    experiment_id: UUID
    variant: int
    seed: int
    prompt: str
    copy: dict[str, Any]
    width: int
    height: int
    image_url: str
    image_sha256: str
    compliance_score: int
    compliance: dict[str, Any]
    safety: dict[str, Any]
    fit: dict[str, Any]
    layout: dict[str, Any]


_JSON_FIELDS = ("copy", "compliance", "safety", "fit", "layout")
_COLUMNS = (
    "creative_id, experiment_id, variant, seed, prompt, copy, width, height, image_url, "
    "image_sha256, compliance_score, compliance, safety, fit, layout"
)


def _row(record: asyncpg.Record) -> CreativeRow:
    data = dict(record)
    for name in _JSON_FIELDS:
        data[name] = json.loads(data[name])
    return CreativeRow(**data)


async def insert_experiment(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    experiment_id: UUID,
    placement: str,
    request: dict[str, Any],
    model: dict[str, Any],
    steps: int,
    creatives: list[CreativeRow],
) -> None:
    """The experiment and its variants, in one transaction."""
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO creative_experiments
                   (tenant_id, experiment_id, placement, request, model, steps)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            tenant_id,
            experiment_id,
            placement,
            json.dumps(request),
            json.dumps(model),
            steps,
        )
        await conn.executemany(
            f"""INSERT INTO creatives (tenant_id, {_COLUMNS})
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)""",
            [
                (
                    tenant_id,
                    c.creative_id,
                    c.experiment_id,
                    c.variant,
                    c.seed,
                    c.prompt,
                    json.dumps(c.copy),
                    c.width,
                    c.height,
                    c.image_url,
                    c.image_sha256,
                    c.compliance_score,
                    json.dumps(c.compliance),
                    json.dumps(c.safety),
                    json.dumps(c.fit),
                    json.dumps(c.layout),
                )
                for c in creatives
            ],
        )


def creative_row(
    c: Creative, creative_id: UUID, experiment_id: UUID, image_url: str
) -> CreativeRow:
    """A generated creative as it is stored, its image at `image_url`."""
    return CreativeRow(
        creative_id=creative_id,
        experiment_id=experiment_id,
        variant=c.brief.variant,
        seed=c.seed,
        prompt=c.brief.prompt,
        copy={
            "headline": c.brief.copy.headline,
            "call_to_action": c.brief.copy.call_to_action,
            "disclaimers": list(c.brief.copy.disclaimers),
        },
        width=c.width,
        height=c.height,
        image_url=image_url,
        image_sha256=c.sha256,
        compliance_score=c.compliance.score,
        compliance=c.compliance.model_dump(),
        safety=c.safety.model_dump(),
        fit=c.fit.model_dump(mode="json"),
        layout=c.layout.model_dump(),
    )


async def save_batch(
    pool: asyncpg.Pool,
    files: CreativeFiles,
    tenant_id: UUID,
    placement: str,
    request: dict[str, Any],
    model: dict[str, Any],
    batch: Batch,
) -> tuple[UUID, list[CreativeRow]]:
    """A generated batch as a new experiment: every PNG written first, then the experiment
    and its rows in one transaction. Returns the experiment's id and its rows."""
    experiment_id = uuid.uuid4()
    rows = []
    for c in batch.creatives:
        creative_id = uuid.uuid4()
        key = files.key(tenant_id, experiment_id, creative_id)
        url = await asyncio.to_thread(files.write, key, c.png)
        rows.append(creative_row(c, creative_id, experiment_id, url))
    async with pool.acquire() as conn:
        await insert_experiment(
            conn, tenant_id, experiment_id, placement, request, model, batch.steps, rows
        )
    return experiment_id, rows


async def get_creative(conn: asyncpg.Connection, tenant_id: UUID, creative_id: UUID) -> CreativeRow:
    record = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM creatives WHERE tenant_id = $1 AND creative_id = $2",
        tenant_id,
        creative_id,
    )
    if record is None:
        raise NotFound(f"creative {creative_id} does not exist")
    return _row(record)


@dataclass(frozen=True)
class VariantResult:
    creative: CreativeRow
    impressions: int
    clicks: int
    conversions: int


@dataclass(frozen=True)
class Experiment:
    experiment_id: UUID
    placement: str
    model: dict[str, Any]
    steps: int
    created_at: datetime
    variants: list[VariantResult]


async def get_experiment(
    conn: asyncpg.Connection, tenant_id: UUID, experiment_id: UUID
) -> Experiment:
    head = await conn.fetchrow(
        """SELECT placement, model, steps, created_at FROM creative_experiments
           WHERE tenant_id = $1 AND experiment_id = $2""",
        tenant_id,
        experiment_id,
    )
    if head is None:
        raise NotFound(f"experiment {experiment_id} does not exist")
    rows = await conn.fetch(
        f"""SELECT {", ".join("c." + c.strip() for c in _COLUMNS.split(","))},
                   coalesce(sum(r.impressions), 0)::bigint AS impressions,
                   coalesce(sum(r.clicks), 0)::bigint AS clicks,
                   coalesce(sum(r.conversions), 0)::bigint AS conversions
            FROM creatives c
            LEFT JOIN creative_results r
              ON r.tenant_id = c.tenant_id AND r.creative_id = c.creative_id
            WHERE c.tenant_id = $1 AND c.experiment_id = $2
            GROUP BY c.tenant_id, c.creative_id
            ORDER BY c.variant""",
        tenant_id,
        experiment_id,
    )
    variants = []
    for row in rows:
        data = dict(row)
        totals = {k: data.pop(k) for k in ("impressions", "clicks", "conversions")}
        variants.append(VariantResult(creative=_row(data), **totals))
    return Experiment(
        experiment_id=experiment_id,
        placement=head["placement"],
        model=json.loads(head["model"]),
        steps=head["steps"],
        created_at=head["created_at"],
        variants=variants,
    )


@dataclass(frozen=True)
class ResultIn:
    creative_id: UUID
    impressions: int
    clicks: int
    conversions: int


async def record_results(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    experiment_id: UUID,
    results: list[ResultIn],
    idempotency_key: str,
    source: str,
) -> bool:
    """Add one report's increments; True when this key was already applied (nothing added)."""

    async def apply() -> bool:
        known = {
            r["creative_id"]
            for r in await conn.fetch(
                "SELECT creative_id FROM creatives WHERE tenant_id = $1 AND experiment_id = $2",
                tenant_id,
                experiment_id,
            )
        }
        if not known:
            raise NotFound(f"experiment {experiment_id} does not exist")
        strangers = [str(r.creative_id) for r in results if r.creative_id not in known]
        if strangers:
            raise InvalidInput(
                f"creative(s) {', '.join(strangers)} are not variants of experiment "
                f"{experiment_id}; report each variant under its own experiment"
            )
        if await conn.fetchval(
            "SELECT 1 FROM creative_results WHERE tenant_id = $1 AND idempotency_key = $2",
            tenant_id,
            idempotency_key,
        ):
            return True
        await conn.executemany(
            """INSERT INTO creative_results (tenant_id, experiment_id, creative_id,
                   impressions, clicks, conversions, source, idempotency_key)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            [
                (
                    tenant_id,
                    experiment_id,
                    r.creative_id,
                    r.impressions,
                    r.clicks,
                    r.conversions,
                    source,
                    idempotency_key,
                )
                for r in results
            ],
        )
        return False

    # The unique violation ends the transaction, so it is caught outside it.
    try:
        async with conn.transaction():
            return await apply()
    except asyncpg.UniqueViolationError:  # the same report, committed by a concurrent retry
        return True


def probability_best(
    successes: list[int], trials: list[int], draws: int = 20_000
) -> list[float | None]:
    """Each variant's probability of having the highest rate, under independent Beta(1 + s,
    1 + n - s) posteriors (uniform priors), by a seeded Monte Carlo so the same counts always
    give the same answer. Variants without trials have no evidence and take no part (None);
    with none anywhere, every answer is None."""
    live = [i for i, n in enumerate(trials) if n > 0]
    answers: list[float | None] = [None] * len(trials)
    if not live:
        return answers
    rng = np.random.default_rng(0)
    samples = np.stack(
        [rng.beta(1 + successes[i], 1 + max(trials[i] - successes[i], 0), draws) for i in live]
    )
    wins = np.bincount(samples.argmax(axis=0), minlength=len(live))
    for i, w in zip(live, wins, strict=True):
        answers[i] = round(float(w) / draws, 4)
    return answers


async def recent_experiments(conn: asyncpg.Connection, tenant_id: UUID, limit: int) -> list[UUID]:
    """The tenant's newest experiments, newest first."""
    rows = await conn.fetch(
        """SELECT experiment_id FROM creative_experiments WHERE tenant_id = $1
           ORDER BY created_at DESC, experiment_id LIMIT $2""",
        tenant_id,
        limit,
    )
    return [r["experiment_id"] for r in rows]
