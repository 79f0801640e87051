"""SyncEngage's use cases in one process: the production churn model (kiki.engage.registry)
and SyncValue's LTV model (kiki.value.registry) read from their registries every few seconds,
so `kiki engage promote` needs no restart; a scored book of customers (and its cohorts) fresh
for a minute and served stale while the next one builds (kiki.cache), so paging through the
churn-risk list scores once and no page waits on scoring once a book exists; messages sent
with the context those scores give.

No Ray and no FastAPI: a Serve replica holds one, and so can a test or a command.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import httpx
from cachetools import TTLCache

from kiki import training_jobs
from kiki.artifacts import ArtifactStore
from kiki.cache import RefreshingCache
from kiki.db.pool import PoolSource
from kiki.engage import cohorts, messaging, registry, retention
from kiki.engage.channels import ChannelSettings, configured_channels
from kiki.engage.channels.base import Channel, MessageChannel
from kiki.engage.churn import TrainedChurnModel
from kiki.engage.registry import NO_CHURN_MODEL
from kiki.engage.risk import RiskTable, risk_table
from kiki.gdpr import Suppressions
from kiki.model_registry import ModelRecord
from kiki.value import LTV_MODELS, TrainedLTVModel, end_of_day, purchase_history

REGISTRY_TTL_S = 5.0
REGISTRY_RECORDS_KEPT = 4096  # (registry, tenant) pairs
RISK_TTL_S = 60.0  # a scored book is fresh this long, then served while it is rescored...
RISK_MAX_STALE_S = 900.0  # ...for at most this long since it was scored
RISK_TABLES_KEPT = 4
DEFAULT_HORIZON_DAYS = 90
_UNREAD = object()  # a registry not read yet, as opposed to one without a model (None)

Scores = tuple[RiskTable, ModelRecord, ModelRecord | None]


def today() -> date:
    return datetime.now(UTC).date()


def ltv_currency(ltv: ModelRecord | None) -> str:
    return ltv.config.get("currency", "USD") if ltv else "USD"


class EngageService:
    """Model loading, scoring and sending shared by the requests of one process."""

    def __init__(
        self,
        pool: PoolSource,
        client: httpx.AsyncClient,
        channel_settings: ChannelSettings,
        caps: messaging.Caps,
        store: ArtifactStore,
        suppressions: Suppressions,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.store = store
        self.suppressions = suppressions  # who was erased: never messaged
        self.client = client  # the channels' and the CRMs' HTTP client
        self.caps = caps
        self._channel_settings = channel_settings
        self._channels: dict[Channel, MessageChannel] | None = None
        self._records: TTLCache[tuple[str, UUID], Any] = TTLCache(
            REGISTRY_RECORDS_KEPT, REGISTRY_TTL_S, timer=timer
        )
        self._tables: RefreshingCache[tuple[Any, ...], RiskTable] = RefreshingCache(
            RISK_TABLES_KEPT, RISK_TTL_S, RISK_MAX_STALE_S, timer=timer
        )
        # Cohorts scan every purchase: kept as the risk tables are, for the same pages.
        self._cohorts: RefreshingCache[tuple[UUID, date], list[cohorts.Cohort]] = RefreshingCache(
            RISK_TABLES_KEPT, RISK_TTL_S, RISK_MAX_STALE_S, timer=timer
        )
        self._models: dict[str, Any] = {}

    async def cohorts(self, tenant_id: UUID, as_of: date) -> list[cohorts.Cohort]:
        """Every acquisition cohort as of a day."""

        async def build() -> list[cohorts.Cohort]:
            pool = await self.pool()
            async with pool.acquire() as conn:
                return await cohorts.cohorts(conn, tenant_id, as_of)

        return await self._cohorts.get((tenant_id, as_of), build)

    async def channels(self) -> dict[Channel, MessageChannel]:
        if self._channels is None:
            self._channels = configured_channels(
                self._channel_settings, self.client, await self.pool()
            )
        return self._channels

    async def _read_record(self, kind: str, tenant_id: UUID) -> Any:
        pool = await self.pool()
        async with pool.acquire() as conn:
            if kind == "churn":
                return await registry.production(conn, tenant_id)
            if kind == "churn_job":
                return await training_jobs.latest(conn, tenant_id, "churn")
            return (await LTV_MODELS.serving(conn, tenant_id))[0]

    async def _record(self, kind: str, tenant_id: UUID) -> Any:
        """The production record of a registry ('churn' or 'ltv'), or the job training the
        churn model ('churn_job'); None (no model, no job) is kept as well, so a tenant
        without one is not asked again on every request."""
        found = self._records.get((kind, tenant_id), _UNREAD)
        if found is _UNREAD:
            found = self._records[(kind, tenant_id)] = await self._read_record(kind, tenant_id)
        return found

    def _load(self, url: str, kind: type[TrainedChurnModel] | type[TrainedLTVModel]) -> Any:
        if url not in self._models:
            self._models[url] = self.store.load(url, kind)
        return self._models[url]

    async def models(
        self, tenant_id: UUID
    ) -> tuple[ModelRecord, TrainedChurnModel, ModelRecord | None, Any]:
        churn = await self._record("churn", tenant_id)
        if churn is None:
            job = await self._record("churn_job", tenant_id)
            raise training_jobs.no_model(job, NO_CHURN_MODEL)
        ltv = await self._record("ltv", tenant_id)
        ltv_model = self._load(ltv.artifact_url, TrainedLTVModel) if ltv else None
        return churn, self._load(churn.artifact_url, TrainedChurnModel), ltv, ltv_model

    async def table(
        self,
        tenant_id: UUID,
        as_of: date,
        horizon_days: int,
        customer_id: str | None = None,
        *,
        stale_ok: bool = True,
    ) -> Scores:
        """Scores as of a day: every customer (kept, see the module; at most RISK_TTL_S old
        unless `stale_ok`), or just one."""
        churn, model, ltv, ltv_model = await self.models(tenant_id)

        async def build() -> RiskTable:
            pool = await self.pool()
            async with pool.acquire() as conn:
                history = await purchase_history(
                    conn, tenant_id, end_of_day(as_of), [customer_id] if customer_id else None
                )
            if history.empty:
                return RiskTable.empty(as_of, horizon_days)
            return await asyncio.to_thread(
                risk_table, model, history, as_of, horizon_days, ltv_model
            )

        if customer_id is not None:
            return await build(), churn, ltv
        key = (tenant_id, as_of, horizon_days, churn.version, ltv.version if ltv else None)
        return await self._tables.get(key, build, stale_ok=stale_ok), churn, ltv

    async def warm(self) -> None:
        """Score today's book of the tenants whose churn models were promoted last (as many as
        are kept), so that the first page after a start does not wait on it."""
        pool = await self.pool()
        async with pool.acquire() as conn:
            tenants = await registry.CHURN_MODELS.latest_promoted(conn, RISK_TABLES_KEPT)
        for tenant_id in tenants:
            await self.table(tenant_id, today(), DEFAULT_HORIZON_DAYS)
            await self.cohorts(tenant_id, today())

    async def personalize(
        self, tenant_id: UUID, customer_id: str, profile: messaging.Profile | None
    ) -> dict[str, Any]:
        """Template context: profile fields, and churn risk and LTV when models serve."""
        if await self._record("churn", tenant_id) is None:
            table, currency = RiskTable.empty(today(), DEFAULT_HORIZON_DAYS), "USD"
        else:
            table, _, ltv = await self.table(tenant_id, today(), DEFAULT_HORIZON_DAYS, customer_id)
            currency = ltv_currency(ltv)
        return await retention.table_personalize(table, currency)(customer_id, profile)

    async def send(
        self, tenant_id: UUID, request: messaging.MessageRequest
    ) -> tuple[messaging.MessageRecord, bool]:
        """Send one message (billed when sent); True when it is new, not a retry's record."""

        async def personalize(
            customer_id: str, profile: messaging.Profile | None
        ) -> dict[str, Any]:
            return await self.personalize(tenant_id, customer_id, profile)

        pool = await self.pool()
        record, new = await messaging.send_message(
            pool, tenant_id, request, await self.channels(), personalize, self.caps,
            self.suppressions,
        )  # fmt: skip
        if record.status == "sent":
            await retention.meter_sent(pool, tenant_id, record)
        return record, new

    async def run_rule(
        self, tenant_id: UUID, rule_id: str, as_of: date, *, dry_run: bool
    ) -> retention.RunResult:
        """Run a retention rule now on the scores as of a day."""
        pool = await self.pool()
        async with pool.acquire() as conn:
            rule = await retention.get(conn, tenant_id, rule_id)
        table, _, ltv = await self.table(tenant_id, as_of, DEFAULT_HORIZON_DAYS, stale_ok=False)
        return await retention.run(
            pool, tenant_id, rule, table, await self.channels(), self.caps, self.suppressions,
            ltv_currency(ltv), dry_run=dry_run,
        )  # fmt: skip
