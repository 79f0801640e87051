"""SyncValue (`/value`, gRPC `pb.LTVService`): customer lifetime value.

Two deployments: `ValueIngress` answers HTTP and gRPC, reads customers' purchase history and
computes their features (the same function training uses); `LTVScorer` holds the models and
scores with `@serve.batch`, so concurrent requests share one forward pass. Which model serves
a customer comes from the registry (production, or an A/B candidate by a stable hash of the
customer id), re-read every few seconds, so promote and rollback need no restart.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Protocol
from uuid import UUID

import numpy as np
import pandas as pd
from fastapi import FastAPI, Query, Request
from grpc_health.v1 import health_pb2
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext
from ray.util import metrics

from actors.resilience import within
from deployments._serve import (
    CurrentTenant,
    ServiceIngress,
    ServiceRuntime,
    create_service_api,
    status_for,
)
from kiki.auth import Tenant
from kiki.batching import KeyedBatcher
from kiki.billing import metering
from kiki.db.values import PgText
from kiki.errors import FailedPrecondition, InvalidInput, KikiError, NotFound
from kiki.flow import segments
from kiki.model_registry import LoadCheck
from kiki.money import MAX_AMOUNT, DecimalAmount, micros_to_decimal_str
from kiki.value import drift, registry, transactions
from kiki.value.features import compute_features
from kiki.value.transactions import TransactionIn
from kiki.value.ziln import TrainedLTVModel
from protos import kiki_pb2

NO_MODEL = (
    "no LTV model is in production yet: train one with `kiki train ltv`, then "
    "`kiki models promote VERSION`"
)
REGISTRY_TTL_S = 5.0
SEGMENT_TTL_S = 60.0  # how long a segment's value is reused


# --- scoring ------------------------------------------------------------------------------


class Scorer(Protocol):
    async def score(self, artifact_path: str, features: pd.DataFrame) -> dict[str, np.ndarray]: ...


class ModelCache:
    """Loaded models by artifact folder; a version's folder never changes once registered."""

    def __init__(self) -> None:
        self._models: dict[str, TrainedLTVModel] = {}

    def get(self, artifact_path: str) -> TrainedLTVModel:
        if artifact_path not in self._models:
            try:
                self._models[artifact_path] = TrainedLTVModel.load(artifact_path)
            except FileNotFoundError:
                raise FailedPrecondition(
                    f"model files are missing at {artifact_path}; retrain or restore them"
                ) from None
        return self._models[artifact_path]

    def predict_many(self, jobs: list[tuple[str, pd.DataFrame]]) -> list[dict[str, np.ndarray]]:
        """One forward pass per model for all the jobs that use it, split back per job."""
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, (path, _) in enumerate(jobs):
            by_model[path].append(i)
        answers: list[dict[str, np.ndarray]] = [{}] * len(jobs)
        for path, indices in by_model.items():
            frames = [jobs[i][1] for i in indices]
            out = self.get(path).predict(pd.concat(frames, ignore_index=True))
            start = 0
            for i, frame in zip(indices, frames, strict=True):
                answers[i] = {k: v[start : start + len(frame)] for k, v in out.items()}
                start += len(frame)
        return answers


class LocalScorer:
    """In-process scoring, for the FastAPI app hosted outside Serve (the benchmark baseline)."""

    def __init__(self) -> None:
        self.cache = ModelCache()

    async def score(self, artifact_path: str, features: pd.DataFrame) -> dict[str, np.ndarray]:
        return self.cache.predict_many([(artifact_path, features)])[0]


class HandleScorer:
    """Scoring on the LTVScorer deployment, within a deadline."""

    def __init__(self, handle: Any, timeout_s: float) -> None:
        self.handle = handle
        self.timeout_s = timeout_s

    async def score(self, artifact_path: str, features: pd.DataFrame) -> dict[str, np.ndarray]:
        call = self.handle.predict.remote((artifact_path, features))
        return await within(call, self.timeout_s, "the LTV scorer")


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class LTVScorer:
    """The models, batched: concurrent calls within a few milliseconds share a forward pass."""

    def __init__(self) -> None:
        self.cache = ModelCache()
        self.batch_sizes = metrics.Histogram(
            "kiki_ltv_batch_rows",
            "rows scored per forward pass",
            boundaries=[1, 10, 100, 1000, 10000],
        )

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.003)
    async def predict(self, jobs: list[tuple[str, pd.DataFrame]]) -> list[dict[str, np.ndarray]]:
        self.batch_sizes.observe(sum(len(frame) for _, frame in jobs))
        return self.cache.predict_many(jobs)


# --- API models ---------------------------------------------------------------------------


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


class CustomerBatch(BaseModel):
    customers: list[Customer] = Field(min_length=1, max_length=10_000)


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


class Predictions(BaseModel):
    predictions: list[Prediction | PredictionError]


class TransactionBatch(BaseModel):
    transactions: list[TransactionIn] = Field(min_length=1, max_length=10_000)


class TransactionsLoaded(BaseModel):
    received: int
    inserted: int
    duplicates: int


# --- the service ---------------------------------------------------------------------------


def _micros(value: float) -> int:
    return round(float(value) * 1_000_000)


class ValueService:
    """Prediction logic shared by HTTP and gRPC, independent of how scoring is hosted."""

    def __init__(self, runtime: ServiceRuntime, scorer: Scorer) -> None:
        self.runtime = runtime
        self.scorer = scorer
        self._serving: dict[UUID, tuple[float, Any]] = {}
        self._feature_batcher = KeyedBatcher(self._load_features)
        self._segments: dict[tuple[UUID, str], tuple[float, int | None]] = {}
        self.served = (
            metrics.Counter(
                "kiki_ltv_predictions",
                "predictions served by model version",
                tag_keys=("model_version",),
            )
            if _in_ray()
            else None
        )

    async def models(
        self, tenant: Tenant
    ) -> tuple[registry.ModelRecord, registry.ModelRecord | None]:
        cached = self._serving.get(tenant.id)
        if cached is None or cached[0] < time.monotonic():
            pool = await self.runtime.pool()
            async with pool.acquire() as conn:
                found = await registry.serving(conn, tenant.id)
            self._serving[tenant.id] = (time.monotonic() + REGISTRY_TTL_S, found)
            cached = self._serving[tenant.id]
        production, candidate = cached[1]
        if production is None:
            raise FailedPrecondition(NO_MODEL)
        return production, candidate

    async def predict(
        self, tenant: Tenant, customers: list[Customer], billable: bool = True
    ) -> list[Prediction | PredictionError]:
        """Predictions in the order asked; `billable` ones are metered for Billing (the bid
        loop's own segment valuations are not)."""
        production, candidate = await self.models(tenant)
        today = datetime.now(UTC).date()
        by_day: dict[date, list[Customer]] = defaultdict(list)
        for c in customers:
            by_day[c.as_of or today].append(c)
        frames = [await self._day_features(tenant, day, group) for day, group in by_day.items()]
        features = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        answers: dict[str, Prediction] = {}
        if not features.empty:
            ids = features["customer_id"].tolist()
            chosen = np.array([self._choose(cid, production, candidate).version for cid in ids])
            for record in (production, candidate):
                mine = features[chosen == record.version] if record else features.iloc[:0]
                if record is None or mine.empty:
                    continue
                out = await self.scorer.score(record.artifact_path, mine)
                for i, row in enumerate(mine[["customer_id", "as_of", "source"]].itertuples()):
                    answers[row.customer_id] = self._prediction(row, record, out, i)
                if self.served is not None:
                    self.served.inc(len(mine), tags={"model_version": str(record.version)})
            if billable:
                self.runtime.meter(metering.PREDICTIONS_SERVED).add(tenant.id, len(answers))
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

    async def _day_features(self, tenant: Tenant, day: date, group: list[Customer]) -> pd.DataFrame:
        """One frame for the day's customers: history-based rows, and one-purchase rows for
        customers given by `spend`; columns customer_id, features, as_of, source."""
        by_spend = [c for c in group if c.spend is not None]
        by_id = [c.customer_id for c in group if c.spend is None]
        parts = []
        if by_id:
            known = await self._feature_batcher.submit((tenant.id, day), by_id)
            present = known.index.intersection(pd.Index(by_id).unique())
            parts.append(known.loc[present].reset_index().assign(source="history"))
        if by_spend:
            one_purchase = pd.DataFrame(
                {
                    "customer_id": [c.customer_id for c in by_spend],
                    "ts": pd.Timestamp(day),
                    "amount": [float(c.spend) for c in by_spend],
                }
            )
            fresh = compute_features(one_purchase, day)
            parts.append(fresh.reset_index().assign(source="fields"))
        if not parts:
            return pd.DataFrame()
        return pd.concat(parts, ignore_index=True).assign(as_of=day)

    @staticmethod
    def _choose(
        customer_id: str, production: registry.ModelRecord, candidate: registry.ModelRecord | None
    ) -> registry.ModelRecord:
        if candidate and registry.ab_bucket(customer_id) < candidate.traffic_percent:
            return candidate
        return production

    async def _load_features(self, key: tuple[UUID, date], ids: list[str]) -> pd.DataFrame:
        """Features of every customer among `ids` with history by the day (one query, one
        computation for all the requests batched together)."""
        tenant_id, day = key
        pool = await self.runtime.pool()
        async with pool.acquire() as conn:
            history = await transactions.history(
                conn, tenant_id, transactions.end_of(day), sorted(set(ids))
            )
        if history.empty:
            return pd.DataFrame(index=pd.Index([], name="customer_id"))
        return compute_features(history, day)

    @staticmethod
    def _prediction(
        row: Any, record: registry.ModelRecord, out: dict[str, np.ndarray], i: int
    ) -> Prediction:
        def money(value: float) -> str:
            return micros_to_decimal_str(_micros(value))

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

    async def segment_values(self, tenant: Tenant, segment_ids: list[str]) -> dict[str, int]:
        """Mean predicted LTV (micros) of each segment's members, for bidding. Cached for
        SEGMENT_TTL_S: the bid loop asks every tick, members and predictions change daily.
        Segments without members, or a tenant without a model, are left out."""
        now = time.monotonic()
        fresh = {
            s: v
            for s in segment_ids
            if (v := self._segments.get((tenant.id, s))) is not None and v[0] > now
        }
        missing = [s for s in segment_ids if s not in fresh]
        if missing:
            pool = await self.runtime.pool()
            async with pool.acquire() as conn:
                found = await segments.members(conn, tenant.id, missing)
            flat = [Customer(customer_id=c) for ids in found.values() for c in ids]
            answers = await self.predict(tenant, flat, billable=False) if flat else []
            ltv = {a.customer_id: a.ltv_micros for a in answers if isinstance(a, Prediction)}
            for segment in missing:
                valued = [ltv[c] for c in found.get(segment, []) if c in ltv]
                value = round(sum(valued) / len(valued)) if valued else None
                self._segments[(tenant.id, segment)] = (now + SEGMENT_TTL_S, value)
                fresh[segment] = self._segments[(tenant.id, segment)]
        return {s: v for s, (_, v) in fresh.items() if v is not None}

    async def drift(self, tenant: Tenant, day: date, threshold: float) -> drift.DriftReport:
        production, _ = await self.models(tenant)
        pool = await self.runtime.pool()
        async with pool.acquire() as conn:
            history = await transactions.history(conn, tenant.id, transactions.end_of(day))
        if history.empty:
            raise NotFound("no purchases yet: nothing to compare with the training reference")
        features = compute_features(history, day)
        out = await self.scorer.score(production.artifact_path, features.reset_index())
        reference = {k: drift.Bins(**v) for k, v in production.reference.items()}
        return drift.report(reference, features, out["expected"], threshold)


def _in_ray() -> bool:
    import ray

    return ray.is_initialized()


def _attach(app: FastAPI, runtime: ServiceRuntime) -> None:
    scorer = runtime.extras.get("scorer") or LocalScorer()
    app.state.value = ValueService(runtime, scorer)
    runtime.extras["value"] = app.state.value
    runtime.watch_models("ltv_models", LoadCheck(registry.LTV_MODELS, TrainedLTVModel.load))


api = create_service_api(
    "value",
    "SyncValue",
    "Customer lifetime value: expected spend over a horizon, purchase probability and "
    "quantiles, from a zero-inflated log-normal model trained with Ray Tune.",
    on_startup=_attach,
)


def _service(request: Request) -> ValueService:
    return request.app.state.value


@api.post("/api/v1/predict", response_model=Prediction | Predictions, tags=["predictions"])
async def predict(
    body: Customer | CustomerBatch, tenant: CurrentTenant, request: Request
) -> Prediction | Predictions:
    """Value one customer (`{"customer_id": ...}`) or many (`{"customers": [...]}`)."""
    customers = body.customers if isinstance(body, CustomerBatch) else [body]
    answers = await _service(request).predict(tenant, customers)
    if isinstance(body, CustomerBatch):
        return Predictions(predictions=answers)
    (answer,) = answers
    if isinstance(answer, PredictionError):
        raise NotFound(answer.error["message"])
    return answer


@api.post("/api/v1/transactions", response_model=TransactionsLoaded, status_code=201, tags=["data"])
async def post_transactions(
    body: TransactionBatch, tenant: CurrentTenant, request: Request
) -> TransactionsLoaded:
    """Load purchases; an order_id already loaded is skipped, so retries are safe."""
    rows = [transactions.Transaction.of(t) for t in body.transactions]
    pool = await _service(request).runtime.pool()
    async with pool.acquire() as conn, conn.transaction():
        inserted = await transactions.insert(conn, tenant.id, rows)
    return TransactionsLoaded(
        received=len(rows), inserted=inserted, duplicates=len(rows) - inserted
    )


@api.get("/api/v1/drift", response_model=drift.DriftReport, tags=["models"])
async def get_drift(
    tenant: CurrentTenant,
    request: Request,
    as_of: Annotated[date | None, Query(description="the live window's day; default today")] = None,
    threshold: Annotated[float, Query(gt=0, le=10)] = 0.2,
) -> drift.DriftReport:
    """PSI of every feature and of the predictions, now vs the production model's training
    reference; `stale` when the predictions (or most features) moved past the threshold."""
    report = await _service(request).drift(tenant, as_of or datetime.now(UTC).date(), threshold)
    _publish_drift(report)
    return report


class _DriftGauges:
    """Created once per process: Ray metrics are registered, not rebuilt per request."""

    def __init__(self) -> None:
        self.psi = metrics.Gauge(
            "kiki_ltv_drift_psi", "PSI vs the training reference", tag_keys=("feature",)
        )
        self.stale = metrics.Gauge("kiki_ltv_model_stale", "1 when drift marks the model stale")


@functools.cache
def _drift_gauges() -> _DriftGauges:
    return _DriftGauges()


def _publish_drift(report: drift.DriftReport) -> None:
    if not _in_ray():
        return
    gauges = _drift_gauges()
    for name, value in report.psi.items():
        gauges.psi.set(value, tags={"feature": name})
    gauges.stale.set(1.0 if report.stale else 0.0)


def _grpc_customer(request: kiki_pb2.PredictLTVRequest) -> Customer:
    if not request.customer_id:
        raise InvalidInput("customer_id is required")
    as_of = date.fromisoformat(request.as_of) if request.as_of else None
    # The legacy request sends spend as a double; its shortest repr is what the caller typed.
    spend = Decimal(repr(request.spend)) if request.spend else None
    return Customer(
        customer_id=request.customer_id,
        spend=spend,
        as_of=as_of,
        engagement_score=request.engagement_score or None,
    )


def _grpc_answer(p: Prediction) -> kiki_pb2.PredictLTVResponse:
    return kiki_pb2.PredictLTVResponse(
        customer_id=p.customer_id,
        ltv=p.ltv,
        ltv_micros=p.ltv_micros,
        p_purchase=p.p_purchase,
        ltv_p10=p.quantiles.p10,
        ltv_p50=p.quantiles.p50,
        ltv_p90=p.quantiles.p90,
        horizon_days=p.horizon_days,
        currency=p.currency,
        model_version=str(p.model_version),
    )


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress(api)
class ValueIngress(ServiceIngress):
    service = "value"
    api = api

    def __init__(self, scorer: Any) -> None:
        super().__init__()
        timeout = self.runtime.settings.actor_call_timeout_s
        self.runtime.extras["scorer"] = HandleScorer(scorer, timeout)

    def _value(self) -> ValueService:
        return self.runtime.extras["value"]

    async def _grpc(self, context: RayServegRPCContext, work):  # type: ignore[no-untyped-def]
        try:
            metadata = dict(context.invocation_metadata())
            tenant = await self.runtime.tenant(metadata.get("x-api-key"))
            return await work(tenant)
        except KikiError as exc:
            context.set_code(status_for(exc)[1])
            context.set_details(exc.message)
            return None
        except ValueError as exc:
            context.set_code(status_for(InvalidInput(""))[1])
            context.set_details(f"invalid request: {exc}")
            return None

    async def PredictLTV(
        self, request: kiki_pb2.PredictLTVRequest, grpc_context: RayServegRPCContext
    ) -> kiki_pb2.PredictLTVResponse:
        async def work(tenant: Tenant) -> kiki_pb2.PredictLTVResponse:
            (answer,) = await self._value().predict(tenant, [_grpc_customer(request)])
            if isinstance(answer, PredictionError):
                raise NotFound(answer.error["message"])
            return _grpc_answer(answer)

        return await self._grpc(grpc_context, work) or kiki_pb2.PredictLTVResponse()

    async def PredictLTVBatch(
        self, request: kiki_pb2.PredictLTVBatchRequest, grpc_context: RayServegRPCContext
    ) -> kiki_pb2.PredictLTVBatchResponse:
        async def work(tenant: Tenant) -> kiki_pb2.PredictLTVBatchResponse:
            if not 1 <= len(request.customers) <= 10_000:
                raise InvalidInput("send between 1 and 10,000 customers")
            customers = [_grpc_customer(c) for c in request.customers]
            answers = await self._value().predict(tenant, customers)
            return kiki_pb2.PredictLTVBatchResponse(
                predictions=[
                    _grpc_answer(a)
                    if isinstance(a, Prediction)
                    else kiki_pb2.PredictLTVResponse(
                        customer_id=a.customer_id, error=a.error["message"]
                    )
                    for a in answers
                ]
            )

        return await self._grpc(grpc_context, work) or kiki_pb2.PredictLTVBatchResponse()

    async def segment_values(self, requests: dict[str, list[str]]) -> dict[str, dict[str, int]]:
        """For the bid loop, through a deployment handle: {tenant_id: [segment]} in, each
        segment's mean predicted LTV in micros out (segments that cannot be valued are left
        out). One call per tick for every tenant of a bid-loop shard."""
        out: dict[str, dict[str, int]] = {}
        for tenant_id, wanted in requests.items():
            tenant = Tenant(id=UUID(tenant_id), name="")
            try:
                out[tenant_id] = await self._value().segment_values(tenant, wanted)
            except FailedPrecondition:  # no model registered: the ad groups' defaults apply
                out[tenant_id] = {}
        return out

    async def Check(
        self, request: health_pb2.HealthCheckRequest, grpc_context: RayServegRPCContext
    ) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1.Health/Check: SERVING when every health check passes."""
        report = await self.runtime.health()
        status = health_pb2.HealthCheckResponse.SERVING
        if report.status != "ok":
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)


app = ValueIngress.bind(LTVScorer.bind())
