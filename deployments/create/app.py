"""SyncCreate (`/create`): ad creatives from a text-to-image model, fitted to each placement's
exact spec, scored for brand compliance, screened for safety, stored and A/B tested.

Two deployments. `CreativeGenerator` holds the pipeline (and the image-safety model): it asks
for a GPU in serve_config.yaml and scales to zero when idle. `CreateIngress` answers HTTP:
it refuses unsafe text before any GPU time is spent, calls the generator, stores PNGs under
KIKI_HOME and their metadata in PostgreSQL, and keeps the A/B results. `build_app` is what
`serve_config.yaml` names.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments._serve import ServiceIngress, ServiceRuntime, create_service_api
from deployments.create import generator, metrics
from deployments.create.context import CreateArgs, CreateContext, CreateMetrics
from kiki.billing import CREATIVES_GENERATED
from kiki.config import get_settings
from kiki.create import store
from kiki.create.studio import Batch, Job, Studio


def _start(app: FastAPI, runtime: ServiceRuntime) -> CreateContext:
    """CreateIngress has made the context around the generator's handle before the app
    starts; hosted without it there is no generator, and the app refuses to start."""
    return runtime.context_as(CreateContext)


api = create_service_api(
    "create",
    "SyncCreate",
    "Ad creatives: text-to-image generation at each placement's exact spec, brand "
    "compliance scoring, safety checks, and A/B experiments over the variants.",
    on_startup=_start,
)
api.include_router(generator.router)
api.include_router(metrics.router)


@serve.deployment
class CreativeGenerator:
    """The text-to-image pipeline and the image-safety model. One batch at a time: a
    pipeline is not safe to call from two threads, and the GPU is busy anyway."""

    def __init__(self, args: CreateArgs | None = None) -> None:
        settings = get_settings()
        self.studio = Studio.load(CreateArgs.resolve(args, settings).applied_to(settings))
        self._lock = asyncio.Lock()

    async def make(self, job: Job) -> Batch:
        async with self._lock:
            return await asyncio.to_thread(self.studio.make, job)


@serve.deployment
@serve.ingress(api)
class CreateIngress(ServiceIngress):
    service = "create"
    api = api

    def __init__(self, generator: DeploymentHandle, args: CreateArgs | None = None) -> None:
        super().__init__(args)
        runtime = self.runtime
        runtime.context = CreateContext(
            args=runtime.args_as(CreateArgs),
            generator=generator,
            files=store.CreativeFiles(runtime.artifacts, runtime.settings.home),
            metrics=CreateMetrics(),
            pool=runtime.pool,
            creatives_generated=runtime.meter(CREATIVES_GENERATED),
        )


def build_app(args: CreateArgs) -> Application:
    chosen = CreateArgs.given(args)
    return CreateIngress.bind(CreativeGenerator.bind(chosen), chosen)
