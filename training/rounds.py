"""One round of retraining, what the retraining actor runs every `retrain_check_s`: for every
tenant with a production model, each family that is due (training.retraining.due) is trained
again on the cluster, registered as a challenger, and promoted only if it beats the champion
on the days it was not trained on. The verdict and its numbers go to the registry (the new
version's `metrics.retrain`) and to the log as one JSON line."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pandas as pd
from pydantic import BaseModel

from kiki.artifacts import ArtifactStore
from kiki.config import Settings
from kiki.errors import KikiError
from kiki.model_registry import ModelRecord
from kiki.value import transactions
from kiki.value.drift import DriftReport
from kiki.value.scoring import LocalScorer
from kiki.value.service import ValueService
from training.families import (
    FAMILIES,
    MIN_CUSTOMERS,
    Family,
    TrainOptions,
    customers_by,
    register_trained,
)
from training.retraining import Reason, Verdict, challenger_cut, due, judge

logger = logging.getLogger("kiki.retrain")
DRIFT_THRESHOLD = 0.2  # PSI past which a feature (or the predictions) counts as moved


class Outcome(BaseModel):
    """What happened to one tenant's family in a round."""

    tenant_id: str
    family: str
    reason: str
    version: int | None = None  # the challenger, when one was trained
    status: str | None = None  # its status after the verdict
    verdict: Verdict | None = None
    skipped: str | None = None  # why nothing was trained

    @property
    def failed(self) -> bool:
        """The retraining broke (a trial, the data), as opposed to having nothing to do."""
        return self.reason == "error"


class Retrainer:
    """The round's dependencies; `now` is injectable for tests."""

    def __init__(self, pool: asyncpg.Pool, store: ArtifactStore, settings: Settings) -> None:
        self.pool = pool
        self.store = store
        self.settings = settings
        self._value = ValueService(
            self._pool, LocalScorer(store), registry_ttl_s=1.0, segment_ttl_s=1.0
        )

    async def _pool(self) -> asyncpg.Pool:
        return self.pool

    async def round(
        self, now: datetime | None = None, only_tenant: UUID | None = None
    ) -> list[Outcome]:
        """Every due (tenant, family); with `only_tenant`, that tenant's families now."""
        now = now or datetime.now(UTC)
        outcomes = []
        for family in FAMILIES.values():
            async with self.pool.acquire() as conn:
                tenants = sorted({t for t, _, _ in await family.models.serving_everywhere(conn)})
            for tenant_id in tenants:
                if only_tenant is not None and tenant_id != only_tenant:
                    continue
                try:
                    outcome = await self._maybe_retrain(family, tenant_id, now, only_tenant)
                except Exception as exc:  # one tenant's failure (a trial, its data) is its own
                    if not isinstance(exc, KikiError):
                        logger.exception("retraining %s of tenant %s failed", family.kind,
                                         tenant_id)  # fmt: skip
                    outcome = Outcome(
                        tenant_id=str(tenant_id), family=family.kind, reason="error",
                        skipped=exc.message if isinstance(exc, KikiError) else repr(exc),
                    )  # fmt: skip
                if outcome is not None:
                    logger.info(json.dumps({"event": "retrain", **outcome.model_dump()}))
                    outcomes.append(outcome)
        return outcomes

    async def _maybe_retrain(
        self, family: Family, tenant_id: UUID, now: datetime, asked: UUID | None
    ) -> Outcome | None:
        async with self.pool.acquire() as conn:
            champion = await family.models.production(conn, tenant_id)
            versions = await family.models.list_models(conn, tenant_id)
        if champion is None:  # only a candidate serves: nothing to compare against
            return None
        reason: Reason | None = "asked" if asked is not None else None
        if reason is None:
            reason = due(versions[-1].created_at, now, self.settings.retrain_interval,
                         await self._stale(tenant_id, now))  # fmt: skip
        if reason is None:
            return None
        return await self._retrain(family, tenant_id, champion, reason, now)

    async def _stale(self, tenant_id: UUID, now: datetime) -> bool:
        """Does drift mark the tenant's production LTV model stale today? (Churn models
        retrain on the same signal: it is the customers' behaviour that moved.)"""
        report = await self._drift(tenant_id, now)
        return report is not None and report.stale

    async def _drift(self, tenant_id: UUID, now: datetime) -> DriftReport | None:
        try:
            return await self._value.drift(tenant_id, now.date(), DRIFT_THRESHOLD, stale_ok=False)
        except KikiError:  # no LTV model in production, or no purchases yet
            return None

    async def drift_reports(self, now: datetime | None = None) -> dict[UUID, DriftReport]:
        """Today's drift of every tenant's production LTV model (tenants without purchases
        left out), for the scheduled gauges."""
        now = now or datetime.now(UTC)
        async with self.pool.acquire() as conn:
            serving = await FAMILIES["ltv"].models.serving_everywhere(conn)
        reports = {}
        for tenant_id in sorted({t for t, _, _ in serving}):
            report = await self._drift(tenant_id, now)
            if report is not None:
                reports[tenant_id] = report
        return reports

    async def _retrain(
        self, family: Family, tenant_id: UUID, champion: ModelRecord, reason: Reason,
        now: datetime,
    ) -> Outcome:  # fmt: skip
        outcome = Outcome(tenant_id=str(tenant_id), family=family.kind, reason=reason)
        async with self.pool.acquire() as conn:
            history = await transactions.history(conn, tenant_id, now)
        if history.empty:
            outcome.skipped = "no purchases"
            return outcome
        horizon = champion.horizon_days
        cut = challenger_cut(history["ts"].max().date(), champion.calibration_end, horizon)
        if cut is None:
            outcome.skipped = (
                f"no purchases after the champion's calibration end {champion.calibration_end} "
                f"plus a {horizon}-day holdout"
            )
            return outcome
        if customers_by(history, cut) < MIN_CUSTOMERS:
            outcome.skipped = f"fewer than {MIN_CUSTOMERS} customers by {cut}"
            return outcome
        options = TrainOptions(horizon_days=horizon, trials=self.settings.retrain_trials)
        result = await asyncio.to_thread(family.train, history, cut, options, self.store)
        verdict = await asyncio.to_thread(self._judge, family, champion, result, history, cut)
        metrics = {**result.metrics, "retrain": {"reason": reason, **verdict.model_dump()}}
        async with self.pool.acquire() as conn:
            saved = await register_trained(
                conn, self.store, family, tenant_id, result, cut, options, metrics
            )
            if family.models.candidates:  # serve it to a share of customers first
                saved = await family.models.promote(
                    conn, tenant_id, saved.version, self.settings.retrain_challenger_percent
                )
            if verdict.promote:
                saved = await family.models.promote(conn, tenant_id, saved.version)
        outcome.version, outcome.status, outcome.verdict = saved.version, saved.status, verdict
        return outcome

    def _judge(
        self, family: Family, champion: ModelRecord, result: Any, history: pd.DataFrame, cut: Any
    ) -> Verdict:
        """Both models scored on the holdout after `cut`, the same customers and days."""
        model = self.store.load(champion.artifact_url, family.model_type)
        theirs = family.evaluate(model, history, cut, champion.horizon_days)[family.metric]
        return judge(
            family.metric, family.higher_is_better, float(result.metrics[family.metric]),
            float(theirs), champion.version, self.settings.retrain_min_gain,
        )  # fmt: skip
