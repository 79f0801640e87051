"""SyncValue's use cases: predictions, segment values for bidding, and drift, the same for
HTTP, gRPC and the bid loop's handle calls, whatever hosts the models (`Scorer`).

Which model serves a customer comes from the registry (production, or an A/B candidate by a
stable hash of the customer id), re-read every `registry_ttl_s`, so promote and rollback need
no restart.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import asyncpg
import numpy as np
import pandas as pd
from cachetools import TTLCache
from pydantic import BaseModel, Field

from kiki import training_jobs
from kiki.batching import KeyedBatcher
from kiki.cache import RefreshingCache
from kiki.db.values import PgText
from kiki.errors import FailedPrecondition, NotFound
from kiki.flow import segment_members
from kiki.money import MAX_AMOUNT, DecimalAmount, micros_to_decimal_str
from kiki.value import drift, registry, transactions
from kiki.value.features import compute_features
from kiki.value.scoring import Scorer

NO_MODEL = (
    "no LTV model is in production yet: train one with `kiki train ltv`, then "
    "`kiki models promote VERSION`"
)
# Bounds on the caches' memory: tenants whose serving models are remembered, and
# (tenant, segment) values; the least recently used go first past them.
MAX_TENANTS_CACHED = 10_000
MAX_SEGMENTS_CACHED = 100_000
# A drift measure is fresh this long (the live window is a day), then served while it is
# measured again, for at most DRIFT_MAX_STALE_S since it was measured.
DRIFT_TTL_S = 60.0
DRIFT_MAX_STALE_S = 900.0
DRIFT_TENANTS_WARMED = 4
_UNREAD = object()  # a job not read yet, as opposed to no job (None)

PoolProvider = Callable[[], Awaitable[asyncpg.Pool]]
# A tenant's (production, candidate) models.
Serving = tuple[registry.ModelRecord | None, registry.ModelRecord | None]


class Customer(BaseModel):
    """A customer by id (history from the database) or, for one we have not seen, by the
    legacy fields: `spend` becomes a single purchase on `as_of`."""

    customer_id: PgText = Field(min_length=1, max_length=128)
    spend: DecimalAmount | None = Field(
        None, ge=0, le=MAX_AMOUNT, description="for customers without history"
    )
    engagement_score: float | None = Field(
        None, ge=0, le=1, description="accepted for compatibility; not a model feature"
    )
    as_of: date | None = Field(None, description="predict as of this day; default today")


class Quantiles(BaseModel):
    p10: str
    p50: str
    p90: str


class Prediction(BaseModel):
    customer_id: str
    ltv: str = Field(description="expected spend over the horizon, exact decimal")
    ltv_micros: int
    p_purchase: float
    quantiles: Quantiles
    horizon_days: int
    currency: str
    model_version: int
    source: str = Field(description="history, or fields for a customer not yet seen")
    as_of: date


class PredictionError(BaseModel):
    customer_id: str
    error: dict[str, str]


def _micros(estimate: float) -> int:
    """A model's estimate (a float by nature) becomes exact micros once, here."""
    return round(float(estimate) * 1_000_000)


def _prediction(
    row: Any, record: registry.ModelRecord, out: dict[str, np.ndarray], i: int
) -> Prediction:
    def money(estimate: float) -> str:
        return micros_to_decimal_str(_micros(estimate))

    return Prediction(
        customer_id=row.customer_id,
        ltv=money(out["expected"][i]),
        ltv_micros=_micros(out["expected"][i]),
        p_purchase=round(float(out["p_purchase"][i]), 6),
        quantiles=Quantiles(
            p10=money(out["p10"][i]), p50=money(out["p50"][i]), p90=money(out["p90"][i])
        ),
        horizon_days=record.horizon_days,
        currency=record.config.get("currency", "USD"),
        model_version=record.version,
        source=row.source,
        as_of=row.as_of,
    )


def choose_model(
    customer_id: str, production: registry.ModelRecord, candidate: registry.ModelRecord | None
) -> registry.ModelRecord:
    """The candidate for its share of customers (a stable hash), production for the rest."""
    if candidate and registry.ab_bucket(customer_id) < candidate.traffic_percent:
        return candidate
    return production


class ValueService:
    """Prediction logic shared by HTTP, gRPC and the bid loop, independent of how scoring is
    hosted. `meter(tenant_id, n)` counts billable predictions; `served(version, n)` counts
    predictions by model version (a metric); `timer` drives the caches' expiry."""

    def __init__(
        self,
        pool: PoolProvider,
        scorer: Scorer,
        *,
        registry_ttl_s: float,
        segment_ttl_s: float,
        meter: Callable[[UUID, int], None] | None = None,
        served: Callable[[int, int], None] | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.scorer = scorer
        self.meter = meter
        self.served = served
        self._serving: TTLCache[UUID, Serving] = TTLCache(
            MAX_TENANTS_CACHED, registry_ttl_s, timer=timer
        )
        self._jobs: TTLCache[UUID, training_jobs.TrainingJob | None] = TTLCache(
            MAX_TENANTS_CACHED, registry_ttl_s, timer=timer
        )
        # The bid loop asks every tick; members and predictions change daily.
        self._segments: TTLCache[tuple[UUID, str], int | None] = TTLCache(
            MAX_SEGMENTS_CACHED, segment_ttl_s, timer=timer
        )
        # A drift report scores every customer (seconds on the CDNOW demo); its live window is
        # a day's purchases, so a minute-old one says the same and the console's Models page
        # need not wait for it on every load.
        self._drift: RefreshingCache[tuple[UUID, date, int], drift.DriftMeasure] = RefreshingCache(
            MAX_TENANTS_CACHED, DRIFT_TTL_S, DRIFT_MAX_STALE_S, timer=timer
        )
        self._feature_batcher = KeyedBatcher(self._load_features)

    async def models(
        self, tenant_id: UUID
    ) -> tuple[registry.ModelRecord, registry.ModelRecord | None]:
        """(production, candidate), as the registry said at most `registry_ttl_s` ago."""
        found = self._serving.get(tenant_id)
        if found is None:
            pool = await self.pool()
            async with pool.acquire() as conn:
                found = await registry.serving(conn, tenant_id)
            self._serving[tenant_id] = found
        production, candidate = found
        if production is None:
            raise await self._no_model(tenant_id)
        return production, candidate

    async def _no_model(self, tenant_id: UUID) -> FailedPrecondition:
        """Why there is no model: one being trained (ready when), or how to train one. The
        job is re-read as often as the registry."""
        job = self._jobs.get(tenant_id, _UNREAD)
        if job is _UNREAD:
            pool = await self.pool()
            async with pool.acquire() as conn:
                job = self._jobs[tenant_id] = await training_jobs.latest(conn, tenant_id, "ltv")
        return training_jobs.no_model(job, NO_MODEL)

    async def predict(
        self, tenant_id: UUID, customers: list[Customer], billable: bool = True
    ) -> list[Prediction | PredictionError]:
        """Predictions in the order asked; `billable` ones are metered for Billing (the bid
        loop's own segment valuations are not)."""
        production, candidate = await self.models(tenant_id)
        today = datetime.now(UTC).date()
        by_day: dict[date, list[Customer]] = defaultdict(list)
        for c in customers:
            by_day[c.as_of or today].append(c)
        frames = [await self._day_features(tenant_id, day, group) for day, group in by_day.items()]
        features = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        answers: dict[str, Prediction] = {}
        if not features.empty:
            answers = await self._score(features, production, candidate)
            if billable and self.meter is not None:
                self.meter(tenant_id, len(answers))
        return [
            answers.get(c.customer_id)
            or PredictionError(
                customer_id=c.customer_id,
                error={
                    "code": "not_found",
                    "message": f"customer {c.customer_id} has no purchases on or before "
                    f"{c.as_of or today}; send `spend` to value a new customer",
                },
            )
            for c in customers
        ]

    async def _score(
        self,
        features: pd.DataFrame,
        production: registry.ModelRecord,
        candidate: registry.ModelRecord | None,
    ) -> dict[str, Prediction]:
        """Each row by the model that serves its customer, one scoring call per model."""
        ids = features["customer_id"].tolist()
        chosen = np.array([choose_model(cid, production, candidate).version for cid in ids])
        answers: dict[str, Prediction] = {}
        for record in (production, candidate):
            mine = features[chosen == record.version] if record else features.iloc[:0]
            if record is None or mine.empty:
                continue
            out = await self.scorer.score(record.artifact_url, mine)
            for i, row in enumerate(mine[["customer_id", "as_of", "source"]].itertuples()):
                answers[row.customer_id] = _prediction(row, record, out, i)
            if self.served is not None:
                self.served(record.version, len(mine))
        return answers

    async def _day_features(
        self, tenant_id: UUID, day: date, group: list[Customer]
    ) -> pd.DataFrame:
        """One frame for the day's customers: history-based rows, and one-purchase rows for
        customers given by `spend`; columns customer_id, features, as_of, source."""
        by_spend = [(c.customer_id, c.spend) for c in group if c.spend is not None]
        by_id = [c.customer_id for c in group if c.spend is None]
        parts = []
        if by_id:
            known = await self._feature_batcher.submit((tenant_id, day), by_id)
            present = known.index.intersection(pd.Index(by_id).unique())
            parts.append(known.loc[present].reset_index().assign(source="history"))
        if by_spend:
            one_purchase = pd.DataFrame(
                {
                    "customer_id": [customer_id for customer_id, _ in by_spend],
                    "ts": pd.Timestamp(day),
                    # A model input, not an amount kept: the model takes floats.
                    "amount": [float(spend) for _, spend in by_spend],
                }
            )
            fresh = compute_features(one_purchase, day)
            parts.append(fresh.reset_index().assign(source="fields"))
        if not parts:
            return pd.DataFrame()
        return pd.concat(parts, ignore_index=True).assign(as_of=day)

    async def _load_features(self, key: tuple[UUID, date], ids: list[str]) -> pd.DataFrame:
        """Features of every customer among `ids` with history by the day (one query, one
        computation for all the requests batched together)."""
        tenant_id, day = key
        pool = await self.pool()
        async with pool.acquire() as conn:
            history = await transactions.history(
                conn, tenant_id, transactions.end_of(day), sorted(set(ids))
            )
        if history.empty:
            return pd.DataFrame(index=pd.Index([], name="customer_id"))
        return compute_features(history, day)

    async def segment_values(self, tenant_id: UUID, segment_ids: list[str]) -> dict[str, int]:
        """Mean predicted LTV (micros) of each segment's members, for bidding, cached for
        `segment_ttl_s`. Segments without members, or a tenant without a model, are left
        out."""
        fresh: dict[str, int | None] = {}
        for s in segment_ids:
            with suppress(KeyError):  # not cached, or expired
                fresh[s] = self._segments[(tenant_id, s)]
        missing = [s for s in segment_ids if s not in fresh]
        if missing:
            pool = await self.pool()
            async with pool.acquire() as conn:
                found = await segment_members(conn, tenant_id, missing)
            flat = [Customer(customer_id=c) for ids in found.values() for c in ids]
            answers = await self.predict(tenant_id, flat, billable=False) if flat else []
            ltv = {a.customer_id: a.ltv_micros for a in answers if isinstance(a, Prediction)}
            for segment in missing:
                valued = [ltv[c] for c in found.get(segment, []) if c in ltv]
                fresh[segment] = round(sum(valued) / len(valued)) if valued else None
                self._segments[(tenant_id, segment)] = fresh[segment]
        return {s: v for s, v in fresh.items() if v is not None}

    async def drift(
        self, tenant_id: UUID, day: date, threshold: float, *, stale_ok: bool = True
    ) -> drift.DriftReport:
        """The production model's inputs and outputs on today's population vs its training
        reference (measured at most DRIFT_TTL_S ago unless `stale_ok`)."""
        production, _ = await self.models(tenant_id)

        async def build() -> drift.DriftMeasure:
            pool = await self.pool()
            async with pool.acquire() as conn:
                history = await transactions.history(conn, tenant_id, transactions.end_of(day))
            if history.empty:
                raise NotFound("no purchases yet: nothing to compare with the training reference")
            features = compute_features(history, day)
            out = await self.scorer.score(production.artifact_url, features.reset_index())
            reference = {k: drift.Bins(**v) for k, v in production.reference.items()}
            return drift.measure(reference, features, out["expected"])

        found = await self._drift.get(
            (tenant_id, day, production.version), build, stale_ok=stale_ok
        )
        return found.judged(threshold)

    async def warm(self) -> None:
        """Measure today's drift for the tenants whose LTV models were promoted last, so that
        the first look after a start does not wait on it."""
        pool = await self.pool()
        async with pool.acquire() as conn:
            tenants = await registry.LTV_MODELS.latest_promoted(conn, DRIFT_TENANTS_WARMED)
        for tenant_id in tenants:
            with suppress(NotFound):  # no purchases yet
                await self.drift(tenant_id, datetime.now(UTC).date(), drift.DEFAULT_THRESHOLD)
