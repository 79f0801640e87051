"""SyncEngage (`/engage`): churn risk, cohorts, RFM and rule segments, consent-aware
messaging over email (SMTP), SMS (Twilio), push (FCM) and an in-app inbox, CRM sync
(HubSpot, Salesforce, Shopify, PostgreSQL) and retention rules.

A thin HTTP shell over kiki.engage: the churn model in production (kiki.engage.registry) and
SyncValue's LTV model (kiki.value.registry) are loaded from their artifact folders and
re-read every few seconds, so `kiki engage promote` needs no restart; a scored book of
customers is kept briefly so paging through the churn-risk list scores once.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from datetime import UTC, date, datetime
from typing import Annotated, Any
from uuid import UUID

import httpx
import ray
from fastapi import FastAPI, Header, Path, Query, Request, Response
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field
from ray import serve

from actors.engage import engage_automation
from actors.resilience import within
from deployments._serve import (
    Connection,  # a pooled connection per request
    CurrentTenant,
    MoneyOut,
    ServiceIngress,
    ServiceRuntime,
    create_service_api,
    runtime_of,
)
from kiki.auth import Tenant
from kiki.db.values import PgJson, PgText, refuse_nul
from kiki.engage import cohorts, messaging, registry, retention, rfm, segments
from kiki.engage.churn import TrainedChurnModel
from kiki.engage.channels import configured_channels
from kiki.engage.channels.base import Channel, MessageChannel
from kiki.engage.crm import sources
from kiki.engage.crm.base import SourceName
from kiki.engage.crm.sync import SyncResult, sync_configured
from kiki.engage.crm.vault import Vault
from kiki.engage.registry import NO_CHURN_MODEL
from kiki.engage.risk import Reason, RiskTable, risk_table
from kiki.engage.rules import Rule
from kiki.errors import FailedPrecondition, InvalidInput
from kiki.model_registry import LoadCheck
from kiki.money import normalize_currency
from kiki.value import registry as ltv_registry
from kiki.value import transactions
from kiki.value.ziln import TrainedLTVModel

REGISTRY_TTL_S = 5.0
RISK_TTL_S = 60.0
RISK_TABLES_KEPT = 4


CustomerPath = Annotated[
    str,
    Path(min_length=1, max_length=128, description="your customer id"),
    AfterValidator(refuse_nul),
]
AfterCustomer = Annotated[
    PgText | None, Query(max_length=128, description="customer_id to continue after")
]
SegmentPath = Annotated[str, Path(pattern=r"^[a-z0-9_-]{1,64}$")]
AsOf = Annotated[date | None, Query(description="the day to look from; default today (UTC)")]
Currency = Annotated[str, Query(min_length=3, max_length=3, description="ISO 4217")]


def _today() -> date:
    return datetime.now(UTC).date()


class EngageService:
    """Model loading and scoring shared by the routes of one replica."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self._records: dict[tuple[str, UUID], tuple[float, Any]] = {}
        self._models: dict[str, Any] = {}
        self._tables: OrderedDict[tuple[Any, ...], tuple[float, RiskTable]] = OrderedDict()
        # Tests hosting the app in-process hand in a client routed to the provider fakes.
        self.client = runtime.extras.get("http_client") or httpx.AsyncClient()
        self._channels: dict[Channel, MessageChannel] | None = None
        self._vault: Vault | None = None
        s = runtime.settings
        self.caps = messaging.Caps(per_day=s.engage_cap_per_day, per_week=s.engage_cap_per_week)

    async def channels(self) -> dict[Channel, MessageChannel]:
        if self._channels is None:
            pool = await self.runtime.pool()
            self._channels = configured_channels(self.runtime.settings, self.client, pool)
        return self._channels

    def vault(self) -> Vault:
        """The CRM credentials' key, read on first use: a bad key fails the CRM calls
        with its reason, not the whole app."""
        if self._vault is None:
            self._vault = Vault.from_settings(self.runtime.settings)
        return self._vault

    async def _record(self, kind: str, tenant_id: UUID) -> Any:
        """The production record of a registry ('churn' or 'ltv'), re-read every few seconds."""
        cached = self._records.get((kind, tenant_id))
        if cached is None or cached[0] < time.monotonic():
            pool = await self.runtime.pool()
            async with pool.acquire() as conn:
                if kind == "churn":
                    found = await registry.production(conn, tenant_id)
                else:
                    found = (await ltv_registry.serving(conn, tenant_id))[0]
            cached = (time.monotonic() + REGISTRY_TTL_S, found)
            self._records[(kind, tenant_id)] = cached
        return cached[1]

    def _load(self, path: str, kind: type[TrainedChurnModel] | type[TrainedLTVModel]) -> Any:
        if path not in self._models:
            try:
                self._models[path] = kind.load(path)
            except FileNotFoundError:
                raise FailedPrecondition(
                    f"model files are missing at {path}; retrain or restore them"
                ) from None
        return self._models[path]

    async def models(
        self, tenant: Tenant
    ) -> tuple[registry.ModelRecord, TrainedChurnModel, ltv_registry.ModelRecord | None, Any]:
        churn = await self._record("churn", tenant.id)
        if churn is None:
            raise FailedPrecondition(NO_CHURN_MODEL)
        ltv = await self._record("ltv", tenant.id)
        ltv_model = self._load(ltv.artifact_path, TrainedLTVModel) if ltv else None
        return churn, self._load(churn.artifact_path, TrainedChurnModel), ltv, ltv_model

    async def table(
        self, tenant: Tenant, as_of: date, horizon_days: int, customer_id: str | None = None
    ) -> tuple[RiskTable, registry.ModelRecord, ltv_registry.ModelRecord | None]:
        """Scores as of a day: every customer (kept for paging), or just one."""
        churn, model, ltv, ltv_model = await self.models(tenant)
        key = (tenant.id, as_of, horizon_days, churn.version, ltv.version if ltv else None)
        cached = self._tables.get(key) if customer_id is None else None
        if cached and cached[0] > time.monotonic():
            return cached[1], churn, ltv
        pool = await self.runtime.pool()
        async with pool.acquire() as conn:
            history = await transactions.history(
                conn,
                tenant.id,
                transactions.end_of(as_of),
                [customer_id] if customer_id else None,
            )
        if history.empty:
            table = RiskTable.empty(as_of, horizon_days)
        else:
            table = await asyncio.to_thread(
                risk_table, model, history, as_of, horizon_days, ltv_model
            )
        if customer_id is None:
            self._tables[key] = (time.monotonic() + RISK_TTL_S, table)
            while len(self._tables) > RISK_TABLES_KEPT:
                self._tables.popitem(last=False)
        return table, churn, ltv

    async def personalize(
        self, tenant: Tenant, customer_id: str, profile: messaging.Profile | None
    ) -> dict[str, Any]:
        """Template context: profile fields, and churn risk and LTV when models serve."""
        if await self._record("churn", tenant.id) is None:
            table, currency = RiskTable.empty(_today(), 90), "USD"
        else:
            table, _, ltv = await self.table(tenant, _today(), 90, customer_id)
            currency = ltv.config.get("currency", "USD") if ltv else "USD"
        return await retention.table_personalize(table, currency)(customer_id, profile)


def _attach(app: FastAPI, runtime: ServiceRuntime) -> None:
    app.state.engage = EngageService(runtime)
    runtime.watch_models("churn_models", LoadCheck(registry.CHURN_MODELS, TrainedChurnModel.load))
    if ray.is_initialized():  # under Serve; tests hosting the app in-process have no Ray
        automation = engage_automation(runtime.database_url, runtime.settings)
        automation.ready.remote()

        async def automation_probe() -> dict[str, str]:
            timeout = runtime.settings.health_probe_timeout_s
            running = await within(automation.ready.remote(), timeout, "the engage automation")
            return {"automation": "ok" if running else "failed: its schedule is not running"}

        runtime.probes["automation"] = automation_probe


api = create_service_api(
    "engage",
    "SyncEngage",
    "Churn prediction, cohorts, segments and consent-aware retention messaging.",
    on_startup=_attach,
)


def _service(request: Request) -> EngageService:
    return request.app.state.engage


# --- churn risk -------------------------------------------------------------------------------


class LTVView(BaseModel):
    value: MoneyOut
    horizon_days: int
    model_version: int


class AtRisk(BaseModel):
    customer_id: str
    churn_risk: float = Field(description="P(no purchase in the next horizon_days)")
    reasons: list[Reason]
    ltv: LTVView | None
    last_purchase: date


class ChurnRiskPage(BaseModel):
    as_of: date
    horizon_days: int
    threshold: float
    model_version: int
    total: int = Field(description="customers at or above the threshold")
    customers: list[AtRisk]
    next_offset: int | None
    ltv_unavailable: str | None = Field(None, description="why ltv is null, when it is")


@api.get("/api/v1/churn-risk", response_model=ChurnRiskPage, tags=["churn"])
async def churn_risk(
    tenant: CurrentTenant,
    request: Request,
    threshold: Annotated[float, Query(ge=0, le=1)] = 0.7,
    as_of: AsOf = None,
    horizon_days: Annotated[int, Query(ge=7, le=730)] = 90,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ChurnRiskPage:
    """Customers whose churn risk is at or above `threshold`, riskiest first, each with the
    features that raise it most, their LTV (SyncValue's production model) and last purchase."""
    day = as_of or _today()
    table, churn, ltv = await _service(request).table(tenant, day, horizon_days)
    risky = table.frame[table.frame["churn_risk"] >= threshold]
    page = risky.iloc[offset : offset + limit]
    customers = []
    for customer_id, row in page.iterrows():
        value = None
        if ltv is not None:
            value = LTVView(
                value=MoneyOut.of(
                    retention.ltv_micros(row["ltv_expected"]) or 0,
                    ltv.config.get("currency", "USD"),
                ),
                horizon_days=ltv.horizon_days,
                model_version=ltv.version,
            )
        customers.append(
            AtRisk(
                customer_id=str(customer_id),
                churn_risk=round(float(row["churn_risk"]), 4),
                reasons=table.reasons(str(customer_id)),
                ltv=value,
                last_purchase=row["last_purchase"],
            )
        )
    end = offset + len(page)
    return ChurnRiskPage(
        as_of=day,
        horizon_days=horizon_days,
        threshold=threshold,
        model_version=churn.version,
        total=len(risky),
        customers=customers,
        next_offset=end if end < len(risky) else None,
        ltv_unavailable=None
        if ltv
        else "no LTV model in production: `kiki train ltv`, then `kiki models promote`",
    )


# --- cohorts and RFM --------------------------------------------------------------------------


class CohortView(BaseModel):
    cohort_id: str
    month: date
    customers: int
    active: list[int] = Field(description="customers with a purchase in month k (k = 0, 1, ...)")
    retention: list[float]
    revenue: dict[str, list[str]] = Field(description="per currency, month k, exact decimals")
    revenue_micros: dict[str, list[int]]

    @classmethod
    def of(cls, c: cohorts.Cohort) -> CohortView:
        return cls(
            cohort_id=c.cohort_id,
            month=c.month,
            customers=c.customers,
            active=c.active,
            retention=[round(r, 6) for r in c.retention],
            revenue={
                cur: [MoneyOut.of(m, cur).amount for m in months]
                for cur, months in c.revenue_micros.items()
            },
            revenue_micros=c.revenue_micros,
        )


class CohortList(BaseModel):
    as_of: date
    cohorts: list[CohortView]


@api.get("/api/v1/cohorts", response_model=CohortView | CohortList, tags=["cohorts"])
async def get_cohorts(
    tenant: CurrentTenant,
    conn: Connection,
    cohort_id: Annotated[
        str | None, Query(description="e.g. cohort_jan_2026; omit for every cohort")
    ] = None,
    as_of: AsOf = None,
) -> CohortView | CohortList:
    """Monthly acquisition cohorts: retention and revenue by month since the first purchase."""
    day = as_of or _today()
    if cohort_id is not None:
        return CohortView.of(await cohorts.cohort(conn, tenant.id, cohort_id, day))
    found = await cohorts.cohorts(conn, tenant.id, day)
    return CohortList(as_of=day, cohorts=[CohortView.of(c) for c in found])


@api.get("/api/v1/rfm", response_model=list[rfm.RFMSegmentSummary], tags=["segments"])
async def get_rfm(
    tenant: CurrentTenant, conn: Connection, as_of: AsOf = None, currency: Currency = "USD"
) -> list[rfm.RFMSegmentSummary]:
    """RFM segments (champions, at_risk, hibernating, ...) with their sizes."""
    return await rfm.rfm_summary(conn, tenant.id, as_of or _today(), normalize_currency(currency))


@api.get("/api/v1/rfm/customers", response_model=list[rfm.RFMCustomer], tags=["segments"])
async def get_rfm_customers(
    tenant: CurrentTenant,
    conn: Connection,
    segment: Annotated[str | None, Query(description="one of the RFM segment names")] = None,
    as_of: AsOf = None,
    currency: Currency = "USD",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: AfterCustomer = None,
) -> list[rfm.RFMCustomer]:
    if segment is not None and segment not in rfm.SEGMENTS:
        raise InvalidInput(f"segment {segment!r} is unknown; use one of {', '.join(rfm.SEGMENTS)}")
    return await rfm.rfm_customers(
        conn, tenant.id, as_of or _today(), normalize_currency(currency), segment, limit, after
    )


# --- rule segments ----------------------------------------------------------------------------


class SegmentCreate(segments.SegmentIn):
    segment_id: segments.SegmentId


class RuleQuery(BaseModel):
    rule: Rule


@api.post("/api/v1/segments", status_code=201, response_model=segments.Segment, tags=["segments"])
async def create_segment(
    body: SegmentCreate, tenant: CurrentTenant, conn: Connection
) -> segments.Segment:
    """Store a rule segment (see the README for the rule language)."""
    return await segments.create(conn, tenant.id, body.segment_id, body)


@api.get("/api/v1/segments", response_model=list[segments.Segment], tags=["segments"])
async def list_segments(tenant: CurrentTenant, conn: Connection) -> list[segments.Segment]:
    return await segments.list_segments(conn, tenant.id)


@api.get("/api/v1/segments/{segment_id}", response_model=segments.Segment, tags=["segments"])
async def get_segment(
    segment_id: SegmentPath, tenant: CurrentTenant, conn: Connection
) -> segments.Segment:
    return await segments.get(conn, tenant.id, segment_id)


@api.put("/api/v1/segments/{segment_id}", response_model=segments.Segment, tags=["segments"])
async def put_segment(
    segment_id: SegmentPath, body: segments.SegmentIn, tenant: CurrentTenant, conn: Connection
) -> segments.Segment:
    return await segments.replace(conn, tenant.id, segment_id, body)


@api.delete("/api/v1/segments/{segment_id}", status_code=204, tags=["segments"])
async def delete_segment(segment_id: SegmentPath, tenant: CurrentTenant, conn: Connection) -> None:
    await segments.delete(conn, tenant.id, segment_id)


@api.get(
    "/api/v1/segments/{segment_id}/customers", response_model=segments.Members, tags=["segments"]
)
async def segment_customers(
    segment_id: SegmentPath,
    tenant: CurrentTenant,
    conn: Connection,
    as_of: AsOf = None,
    currency: Currency = "USD",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    after: AfterCustomer = None,
) -> segments.Members:
    """The segment's members now (or as of a day), evaluated in PostgreSQL."""
    segment = await segments.get(conn, tenant.id, segment_id)
    return await segments.evaluate(
        conn, tenant.id, segment.rule, as_of or _today(), normalize_currency(currency),
        limit, after,
    )  # fmt: skip


@api.post("/api/v1/segments/preview", response_model=segments.Members, tags=["segments"])
async def preview_segment(
    body: RuleQuery,
    tenant: CurrentTenant,
    conn: Connection,
    as_of: AsOf = None,
    currency: Currency = "USD",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> segments.Members:
    """Evaluate a rule without storing it."""
    return await segments.evaluate(
        conn, tenant.id, body.rule, as_of or _today(), normalize_currency(currency), limit
    )


# --- customers and messaging ------------------------------------------------------------------


@api.put("/api/v1/customers/{customer_id}", response_model=messaging.Profile, tags=["messaging"])
async def put_customer(
    customer_id: CustomerPath, body: messaging.ProfileIn, tenant: CurrentTenant, conn: Connection
) -> messaging.Profile:
    """Set how to reach a customer (email, E.164 phone, push token) and their attributes."""
    return await messaging.upsert_profile(conn, tenant.id, customer_id, body)


@api.get("/api/v1/customers/{customer_id}", response_model=messaging.Profile, tags=["messaging"])
async def get_customer(
    customer_id: CustomerPath, tenant: CurrentTenant, conn: Connection
) -> messaging.Profile:
    return await messaging.get_profile(conn, tenant.id, customer_id)


@api.post(
    "/api/v1/message",
    response_model=messaging.MessageRecord,
    status_code=201,
    tags=["messaging"],
    responses={200: {"description": "a retry: the message logged under the same key"}},
)
async def post_message(
    body: messaging.MessageRequest,
    tenant: CurrentTenant,
    request: Request,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> messaging.MessageRecord:
    """Send a templated message; its `status` says what happened: `sent`, `refused` (no
    consent, no address, a frequency cap: `reason` says which) or `failed` (the provider's
    error; retry with the same key)."""
    if body.idempotency_key is None and idempotency_key is not None:
        body = body.model_copy(update={"idempotency_key": idempotency_key})
    service = _service(request)

    async def personalize(customer_id: str, profile: messaging.Profile | None) -> dict[str, Any]:
        return await service.personalize(tenant, customer_id, profile)

    record, new = await messaging.send_message(
        await runtime_of(request).pool(),
        tenant.id,
        body,
        await service.channels(),
        personalize,
        service.caps,
    )
    if record.status == "sent":
        await retention.meter_sent(await runtime_of(request).pool(), tenant.id, record)
    if not new:
        response.status_code = 200
    return record


@api.get("/api/v1/messages", response_model=list[messaging.MessageRecord], tags=["messaging"])
async def get_messages(
    tenant: CurrentTenant,
    conn: Connection,
    customer_id: Annotated[PgText | None, Query(min_length=1, max_length=128)] = None,
    since: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[messaging.MessageRecord]:
    """The delivery log, newest first."""
    return await messaging.messages(conn, tenant.id, customer_id, since, limit)


@api.get(
    "/api/v1/inbox/{customer_id}", response_model=list[messaging.InboxItem], tags=["messaging"]
)
async def get_inbox(
    customer_id: CustomerPath,
    tenant: CurrentTenant,
    conn: Connection,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[messaging.InboxItem]:
    """The customer's in-app messages, newest first."""
    return await messaging.inbox(conn, tenant.id, customer_id, limit)


# --- CRM sync ---------------------------------------------------------------------------------

SourcePath = Annotated[SourceName, Path(description="hubspot, salesforce, shopify or postgres")]


class SourceIn(BaseModel):
    config: Annotated[dict[str, Any], PgJson] = Field(
        description="the source's settings (see the README)"
    )
    enabled: bool = Field(True, description="synced by the engage actor on its schedule")


@api.put("/api/v1/crm/{source}", response_model=sources.SourceConfig, tags=["crm"])
async def put_crm_source(
    source: SourcePath, body: SourceIn, tenant: CurrentTenant, conn: Connection, request: Request
) -> sources.SourceConfig:
    """Configure a CRM source; its secrets are stored encrypted and answered masked."""
    vault = _service(request).vault()
    return await sources.put(conn, tenant.id, source, body.config, body.enabled, vault)


@api.get("/api/v1/crm", response_model=list[sources.SourceConfig], tags=["crm"])
async def list_crm_sources(tenant: CurrentTenant, conn: Connection) -> list[sources.SourceConfig]:
    return await sources.listed(conn, tenant.id)


@api.delete("/api/v1/crm/{source}", status_code=204, tags=["crm"])
async def delete_crm_source(source: SourcePath, tenant: CurrentTenant, conn: Connection) -> None:
    await sources.remove(conn, tenant.id, source)


@api.post("/api/v1/crm/{source}/sync", response_model=SyncResult, tags=["crm"])
async def sync_crm_source(
    source: SourcePath,
    tenant: CurrentTenant,
    request: Request,
    full: Annotated[
        bool, Query(description="read everything again, not just changes since the cursors")
    ] = False,
) -> SyncResult:
    """Sync now: contacts and orders changed since the stored cursors (or all, `full`)."""
    service = _service(request)
    pool = await runtime_of(request).pool()
    return await sync_configured(
        pool, tenant.id, source, service.client, service.vault(), full=full
    )


# --- retention rules --------------------------------------------------------------------------

RulePath = Annotated[str, Path(pattern=retention.RULE_ID)]


class RuleCreate(retention.RuleIn):
    rule_id: str = Field(pattern=retention.RULE_ID)


@api.post("/api/v1/rules", status_code=201, response_model=retention.Rule, tags=["retention"])
async def create_rule(body: RuleCreate, tenant: CurrentTenant, conn: Connection) -> retention.Rule:
    """Store a retention rule; the engage actor runs the enabled ones on its schedule."""
    rule = retention.RuleIn(**body.model_dump(exclude={"rule_id"}))
    return await retention.create(conn, tenant.id, body.rule_id, rule)


@api.get("/api/v1/rules", response_model=list[retention.Rule], tags=["retention"])
async def list_rules(tenant: CurrentTenant, conn: Connection) -> list[retention.Rule]:
    return await retention.list_rules(conn, tenant.id)


@api.get("/api/v1/rules/{rule_id}", response_model=retention.Rule, tags=["retention"])
async def get_rule(rule_id: RulePath, tenant: CurrentTenant, conn: Connection) -> retention.Rule:
    return await retention.get(conn, tenant.id, rule_id)


@api.put("/api/v1/rules/{rule_id}", response_model=retention.Rule, tags=["retention"])
async def put_rule(
    rule_id: RulePath, body: retention.RuleIn, tenant: CurrentTenant, conn: Connection
) -> retention.Rule:
    return await retention.replace(conn, tenant.id, rule_id, body)


@api.delete("/api/v1/rules/{rule_id}", status_code=204, tags=["retention"])
async def delete_rule(rule_id: RulePath, tenant: CurrentTenant, conn: Connection) -> None:
    await retention.delete(conn, tenant.id, rule_id)


@api.post("/api/v1/rules/{rule_id}/run", response_model=retention.RunResult, tags=["retention"])
async def run_rule(
    rule_id: RulePath,
    tenant: CurrentTenant,
    request: Request,
    dry_run: Annotated[bool, Query(description="list who would get what; send nothing")] = True,
    as_of: AsOf = None,
) -> retention.RunResult:
    """Run a rule now. A customer gets a rule's message at most once per period, so running
    it again (or the actor running it) sends nothing new within the period."""
    service = _service(request)
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        rule = await retention.get(conn, tenant.id, rule_id)
    table, _, ltv = await service.table(tenant, as_of or _today(), 90)
    currency = ltv.config.get("currency", "USD") if ltv else "USD"
    return await retention.run(
        pool, tenant.id, rule, table, await service.channels(), service.caps, currency,
        dry_run=dry_run,
    )  # fmt: skip


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class EngageIngress(ServiceIngress):
    service = "engage"
    api = api


app = EngageIngress.bind()
