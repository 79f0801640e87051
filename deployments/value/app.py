"""SyncValue (`/value`, gRPC `pb.LTVService`): customer lifetime value.

Two deployments: `ValueIngress` answers HTTP and gRPC, reads customers' purchase history and
computes their features (the same function training uses); `LTVScorer` holds the models and
scores with `@serve.batch`, so concurrent requests share one forward pass. The use cases are
kiki.value.service; `build_app` is what `serve_config.yaml` names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
import ray
from fastapi import FastAPI
from grpc_health.v1 import health_pb2
from pydantic import Field
from ray import serve
from ray.serve import Application
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle
from ray.util import metrics

from actors.resilience import within
from actors.retrain import retrainer
from deployments._serve import AppArgs, ServiceIngress, ServiceRuntime, create_service_api
from deployments._serve.models import models_router
from deployments.value import drift, scoring
from deployments.value.context import HandleScorer, ValueContext
from deployments.value.grpc import answer, decoded, predict_ltv, predict_ltv_batch
from kiki.artifacts import ArtifactStore
from kiki.billing import PREDICTIONS_SERVED
from kiki.config import get_settings
from kiki.errors import FailedPrecondition
from kiki.value import registry
from kiki.value.scoring import LocalScorer, ModelCache, Scorer
from kiki.value.service import ValueService
from kiki.value.ziln import TrainedLTVModel
from protos import kiki_pb2
from protos.lenient import Undecodable


class ValueArgs(AppArgs):
    """SyncValue's options (serve_config.yaml `args:`)."""

    registry_ttl_s: float = Field(
        5.0, gt=0, le=3600, description="how long the serving models read from the registry "
        "are reused: a promote or rollback takes effect within it"
    )  # fmt: skip
    segment_ttl_s: float = Field(
        60.0, gt=0, le=86_400, description="how long a segment's value for bidding is reused"
    )


def _count_served() -> Callable[[int, int], None] | None:
    """Predictions by model version, through Ray's metrics agent (none outside Ray)."""
    if not ray.is_initialized():
        return None
    served = metrics.Counter(
        "kiki_ltv_predictions", "predictions served by model version", tag_keys=("model_version",)
    )
    return lambda version, n: served.inc(n, tags={"model_version": str(version)})


def _context(runtime: ServiceRuntime, scorer: Scorer) -> ValueContext:
    args = runtime.args_as(ValueArgs)
    service = ValueService(
        runtime.pool,
        scorer,
        registry_ttl_s=args.registry_ttl_s,
        segment_ttl_s=args.segment_ttl_s,
        meter=runtime.meter(PREDICTIONS_SERVED).add,
        served=_count_served(),
    )
    return ValueContext(service)


async def _probe_retrainer(actor: Any, timeout_s: float) -> dict[str, str]:
    """/health: the retraining actor runs its schedule."""
    running = await within(actor.ready.remote(), timeout_s, "the retraining actor")
    return {"retrainer": "ok" if running else "failed: its schedule is not running"}


def _start(app: FastAPI, runtime: ServiceRuntime) -> ValueContext:
    """Under Serve, ValueIngress has made the context around the batched scorer's handle
    before the app starts; hosted alone (the benchmark's uvicorn baseline), it scores here."""
    runtime.watch_models(registry.LTV_MODELS, TrainedLTVModel)
    if ray.is_initialized():  # the retraining actor serves both model families
        actor = retrainer(runtime.database_url, runtime.settings)
        actor.ready.remote()
        timeout = runtime.settings.health_probe_timeout_s
        runtime.probes["retrainer"] = lambda: _probe_retrainer(actor, timeout)
    if not isinstance(runtime.context, ValueContext):
        runtime.context = _context(runtime, LocalScorer(runtime.artifacts))
    if ray.is_initialized():  # under Serve; tests hosting the app in-process skip it
        runtime.in_background("measuring the latest tenants' drift", runtime.context.value.warm)
    return runtime.context


api = create_service_api(
    "value",
    "SyncValue",
    "Customer lifetime value: expected spend over a horizon, purchase probability and "
    "quantiles, from a zero-inflated log-normal model trained with Ray Tune.",
    on_startup=_start,
)
api.include_router(scoring.router)
api.include_router(drift.router)
api.include_router(models_router(registry.LTV_MODELS))


@serve.deployment
class LTVScorer:
    """The models, batched: concurrent calls within a few milliseconds share a forward pass."""

    def __init__(self) -> None:
        self.cache = ModelCache(ArtifactStore.from_settings(get_settings()))
        self.batch_sizes = metrics.Histogram(
            "kiki_ltv_batch_rows",
            "rows scored per forward pass",
            boundaries=[1, 10, 100, 1000, 10000],
        )

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.003)
    async def predict(self, jobs: list[tuple[str, pd.DataFrame]]) -> list[dict[str, np.ndarray]]:
        self.batch_sizes.observe(sum(len(frame) for _, frame in jobs))
        return self.cache.predict_many(jobs)


@serve.deployment
@serve.ingress(api)
class ValueIngress(ServiceIngress):
    service = "value"
    api = api

    def __init__(self, scorer: DeploymentHandle, args: ValueArgs | None = None) -> None:
        super().__init__(args)
        timeout = self.runtime.settings.actor_call_timeout_s
        self.runtime.context = _context(self.runtime, HandleScorer(scorer, timeout))

    def _value(self) -> ValueService:
        return self.runtime.context_as(ValueContext).value

    async def PredictLTV(
        self, request: kiki_pb2.PredictLTVRequest | Undecodable, grpc_context: RayServegRPCContext
    ) -> kiki_pb2.PredictLTVResponse:
        found = await answer(
            self.runtime,
            grpc_context,
            lambda tenant: predict_ltv(self._value(), tenant, decoded(request)),
        )
        return found or kiki_pb2.PredictLTVResponse()

    async def PredictLTVBatch(
        self,
        request: kiki_pb2.PredictLTVBatchRequest | Undecodable,
        grpc_context: RayServegRPCContext,
    ) -> kiki_pb2.PredictLTVBatchResponse:
        found = await answer(
            self.runtime,
            grpc_context,
            lambda tenant: predict_ltv_batch(self._value(), tenant, decoded(request)),
        )
        return found or kiki_pb2.PredictLTVBatchResponse()

    async def segment_values(self, requests: dict[str, list[str]]) -> dict[str, dict[str, int]]:
        """For the bid loop, through a deployment handle: {tenant_id: [segment]} in, each
        segment's mean predicted LTV in micros out (segments that cannot be valued are left
        out). One call per tick for every tenant of a bid-loop shard."""
        out: dict[str, dict[str, int]] = {}
        for tenant_id, wanted in requests.items():
            try:
                out[tenant_id] = await self._value().segment_values(UUID(tenant_id), wanted)
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


def build_app(args: ValueArgs) -> Application:
    return ValueIngress.bind(LTVScorer.bind(), ValueArgs.given(args))
