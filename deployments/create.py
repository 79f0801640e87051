"""SyncCreate (`/create`): ad creatives from a text-to-image model, fitted to each placement's
exact spec, scored for brand compliance, screened for safety, stored and A/B tested.

Two deployments. `CreativeGenerator` holds the pipeline (and the image-safety model): it asks
for a GPU in serve_config.yaml and scales to zero when idle. `CreateIngress` answers HTTP:
it refuses unsafe text before any GPU time is spent, calls the generator, stores PNGs under
KIKI_HOME and their metadata in PostgreSQL, and keeps the A/B results.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field, model_validator
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.util import metrics

from actors.resilience import within
from deployments._serve import (
    CurrentTenant,
    ServiceIngress,
    ServiceRuntime,
    create_service_api,
    runtime_of,
)
from kiki.billing import metering
from kiki.config import get_settings
from kiki.create import store
from kiki.create.brief import MAX_SEED, MAX_VARIANTS, GenerateRequest, VariantBrief, plan_variants
from kiki.create.compliance import ComplianceReport
from kiki.create.formats import PLACEMENTS, Box, FitReport, Placement
from kiki.create.model import PLACEHOLDER_NOTICE, PipelineInfo
from kiki.create.safety import NOT_CONFIGURED, ImageVerdict, check_texts, describe
from kiki.create.studio import Batch, Job, Studio
from kiki.db.values import PgText
from kiki.errors import InvalidInput

GENERATION_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)


class CreateMetrics:
    """Generation latency, queue depth and images generated, recorded twice: in this
    replica's own prometheus_client registry (served at /create/metrics) and through Ray's
    metrics agent (`ray_kiki_create_*` on Ray's Prometheus port, summed over replicas)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "kiki_create_generation_seconds",
            "time from handing a request to the generator to its answer",
            ["placement"],
            buckets=GENERATION_BUCKETS_S,
            registry=self.registry,
        )
        self.queue = Gauge(
            "kiki_create_queue_depth",
            "generate requests waiting for or running on the generator",
            registry=self.registry,
        )
        self.images = Counter(
            "kiki_create_images_generated",
            "creatives generated and returned",
            ["placement", "placeholder"],
            registry=self.registry,
        )
        self.withheld = Counter(
            "kiki_create_images_withheld",
            "generated images withheld by the image-safety check",
            ["placement"],
            registry=self.registry,
        )
        self.ray_latency = metrics.Histogram(
            "kiki_create_generation_seconds",
            description="time from handing a request to the generator to its answer",
            boundaries=list(GENERATION_BUCKETS_S),
            tag_keys=("placement",),
        )
        self.ray_queue = metrics.Gauge(
            "kiki_create_queue_depth",
            description="generate requests waiting for or running on the generator",
        )
        self.ray_images = metrics.Counter(
            "kiki_create_images_generated",
            description="creatives generated and returned",
            tag_keys=("placement", "placeholder"),
        )
        self.ray_withheld = metrics.Counter(
            "kiki_create_images_withheld",
            description="generated images withheld by the image-safety check",
            tag_keys=("placement",),
        )
        self._in_flight = 0

    @contextmanager
    def generating(self, placement: str) -> Iterator[None]:
        self._in_flight += 1
        self.queue.set(self._in_flight)
        self.ray_queue.set(self._in_flight)
        started = time.perf_counter()
        try:
            yield
        finally:
            self._in_flight -= 1
            self.queue.set(self._in_flight)
            self.ray_queue.set(self._in_flight)
            elapsed = time.perf_counter() - started
            self.latency.labels(placement).observe(elapsed)
            self.ray_latency.observe(elapsed, tags={"placement": placement})

    def count(self, batch: Batch, placement: str) -> None:
        placeholder = str(batch.model.placeholder).lower()
        if batch.creatives:
            self.images.labels(placement, placeholder).inc(len(batch.creatives))
            self.ray_images.inc(
                len(batch.creatives), tags={"placement": placement, "placeholder": placeholder}
            )
        if batch.withheld:
            self.withheld.labels(placement).inc(len(batch.withheld))
            self.ray_withheld.inc(len(batch.withheld), tags={"placement": placement})


def _attach(app: FastAPI, runtime: ServiceRuntime) -> None:
    runtime.extras["metrics"] = CreateMetrics()
    runtime.extras["files"] = store.CreativeFiles(runtime.settings.home)


api = create_service_api(
    "create",
    "SyncCreate",
    "Ad creatives: text-to-image generation at each placement's exact spec, brand "
    "compliance scoring, safety checks, and A/B experiments over the variants.",
    on_startup=_attach,
)


# --- response models ----------------------------------------------------------------------


class ModelView(BaseModel):
    source: str | None = Field(description="the diffusers folder; null when none is configured")
    pipeline: str | None = None
    placeholder: bool
    notice: str | None = Field(description="why the images are not real ones, when they are not")
    device: str | None = None
    dtype: str | None = None

    @classmethod
    def of(cls, info: PipelineInfo) -> ModelView:
        return cls(
            source=None if info.placeholder else info.source,
            pipeline=info.pipeline_class,
            placeholder=info.placeholder,
            notice=info.notice,
            device=info.device,
            dtype=info.dtype,
        )


class PlacementView(BaseModel):
    name: str
    platform: str
    width: int
    height: int
    safe_zone: Box
    safe_zone_reason: str
    fit: str = Field("cover-crop", description="uniform scale to cover, centred crop")

    @classmethod
    def of(cls, p: Placement) -> PlacementView:
        return cls(
            name=p.name,
            platform=p.platform,
            width=p.width,
            height=p.height,
            safe_zone=p.safe_box,
            safe_zone_reason=p.why,
        )


class VariantView(BaseModel):
    creative_id: uuid.UUID
    experiment_id: uuid.UUID
    variant: int
    seed: int = Field(description="send it back as `seed` (variant 0) to reproduce")
    prompt: str
    headline: str
    call_to_action: str
    disclaimers: list[str]
    width: int
    height: int
    image_url: str
    sha256: str
    compliance: ComplianceReport
    safety: ImageVerdict
    fit: FitReport

    @classmethod
    def of(cls, row: store.CreativeRow) -> VariantView:
        return cls(
            creative_id=row.creative_id,
            experiment_id=row.experiment_id,
            variant=row.variant,
            seed=row.seed,
            prompt=row.prompt,
            headline=row.copy["headline"],
            call_to_action=row.copy["call_to_action"],
            disclaimers=row.copy["disclaimers"],
            width=row.width,
            height=row.height,
            image_url=f"/create/api/v1/creatives/{row.creative_id}/image",
            sha256=row.image_sha256,
            compliance=ComplianceReport.model_validate(row.compliance),
            safety=ImageVerdict.model_validate(row.safety),
            fit=FitReport.model_validate(row.fit),
        )


class CreativeView(VariantView):
    layout: dict[str, Any] = Field(description="where each text block and the logo were drawn")


class WithheldView(BaseModel):
    variant: int
    seed: int
    reason: str


class SafetySummary(BaseModel):
    text: str = Field(description="'passed': unsafe text is refused with 400 before generation")
    checked_fields: list[str]
    image_classifier: str


class GenerateResponse(BaseModel):
    experiment_id: uuid.UUID
    placement: PlacementView
    model: ModelView
    steps: int
    variants: list[VariantView]
    withheld: list[WithheldView] = Field(description="variants an image check refused")
    safety: SafetySummary
    timings_ms: dict[str, float]


class ModelStatus(BaseModel):
    configured: str | None
    placeholder: bool
    notice: str | None
    image_safety_model: str | None
    default_steps: int
    guidance: float


class VariantResults(BaseModel):
    creative_id: uuid.UUID
    variant: int
    seed: int
    headline: str
    compliance_score: int
    image_url: str
    impressions: int
    clicks: int
    conversions: int
    ctr: float | None = Field(description="clicks / impressions")
    conversion_rate: float | None = Field(description="conversions / clicks")
    p_best_ctr: float | None = Field(
        description="probability this variant has the highest CTR; null before impressions"
    )
    p_best_conversions: float | None = Field(
        description="probability it has the most conversions per impression"
    )


class ExperimentView(BaseModel):
    experiment_id: uuid.UUID
    placement: str
    model: dict[str, Any]
    steps: int
    created_at: datetime
    variants: list[VariantResults]
    leader: uuid.UUID | None = Field(description="highest p_best_ctr, once there are impressions")
    replayed: bool | None = Field(None, description="on a report: this key was applied before")

    @classmethod
    def of(cls, e: store.Experiment, replayed: bool | None = None) -> ExperimentView:
        impressions = [v.impressions for v in e.variants]
        p_ctr = store.probability_best([v.clicks for v in e.variants], impressions)
        p_conv = store.probability_best([v.conversions for v in e.variants], impressions)
        rows = [
            VariantResults(
                creative_id=v.creative.creative_id,
                variant=v.creative.variant,
                seed=v.creative.seed,
                headline=v.creative.copy["headline"],
                compliance_score=v.creative.compliance_score,
                image_url=f"/create/api/v1/creatives/{v.creative.creative_id}/image",
                impressions=v.impressions,
                clicks=v.clicks,
                conversions=v.conversions,
                ctr=v.clicks / v.impressions if v.impressions else None,
                conversion_rate=v.conversions / v.clicks if v.clicks else None,
                p_best_ctr=pc,
                p_best_conversions=pv,
            )
            for v, pc, pv in zip(e.variants, p_ctr, p_conv, strict=True)
        ]
        ranked = [r for r in rows if r.p_best_ctr is not None]
        leader = max(ranked, key=lambda r: r.p_best_ctr or 0).creative_id if ranked else None
        return cls(
            experiment_id=e.experiment_id,
            placement=e.placement,
            model=e.model,
            steps=e.steps,
            created_at=e.created_at,
            variants=rows,
            leader=leader,
            replayed=replayed,
        )


class VariantResultIn(BaseModel):
    model_config = {"extra": "forbid"}

    creative_id: uuid.UUID
    impressions: int = Field(ge=0, le=10**12)
    clicks: int = Field(ge=0, le=10**12)
    conversions: int = Field(ge=0, le=10**12)

    @model_validator(mode="after")
    def _clicks_need_impressions(self) -> VariantResultIn:
        if self.clicks > self.impressions:
            raise ValueError(
                f"clicks ({self.clicks}) cannot exceed impressions ({self.impressions})"
            )
        return self


class ResultsReport(BaseModel):
    """Increments since the last report, per variant (SyncFlow sends these)."""

    model_config = {"extra": "forbid"}

    results: list[VariantResultIn] = Field(min_length=1, max_length=MAX_VARIANTS)
    source: str = Field("api", min_length=1, max_length=40, pattern=r"^[a-z0-9_.-]+$")
    idempotency_key: PgText | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_row_per_variant(self) -> ResultsReport:
        ids = [r.creative_id for r in self.results]
        if len(set(ids)) != len(ids):
            raise ValueError("each creative_id may appear once per report; add the numbers up")
        return self


KeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="makes a retried report count once"),
]


# --- routes -------------------------------------------------------------------------------


def _text_fields(request: GenerateRequest, briefs: list[VariantBrief]) -> dict[str, str]:
    """Every text the caller controls, and every prompt and line of copy built from them."""
    fields = {"product.name": request.product.name, "brand.name": request.brand.name}
    fields |= {f"product.features[{i}]": f for i, f in enumerate(request.product.features)}
    if request.product.description:
        fields["product.description"] = request.product.description
    if request.style:
        fields["style"] = request.style
    for b in briefs:
        fields[f"variants[{b.variant}].prompt"] = b.prompt
        fields[f"variants[{b.variant}].headline"] = b.copy.headline
    fields["call_to_action"] = briefs[0].copy.call_to_action
    fields |= {
        f"brand.required_disclaimers[{i}]": d for i, d in enumerate(briefs[0].copy.disclaimers)
    }
    return fields


@api.post("/api/v1/generate", status_code=201, response_model=GenerateResponse)
async def generate(
    body: GenerateRequest, tenant: CurrentTenant, request: Request
) -> GenerateResponse:
    """N variants for one placement: each with its seed, compliance score and safety verdict,
    stored as one A/B experiment. Unsafe text is refused (400, every reason listed) before
    generation; images an image check flags are withheld, never stored or returned."""
    started = time.perf_counter()
    runtime = runtime_of(request)
    placement = body.placement
    briefs = plan_variants(body)
    fields = _text_fields(body, briefs)
    findings = await asyncio.to_thread(check_texts, fields, placement.platform)
    if findings:
        raise InvalidInput(
            f"refused by the safety check: {describe(findings)}. Rewrite those fields and send "
            "the request again",
            code="unsafe_content",
        )
    base = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED - MAX_VARIANTS)
    job = Job(
        placement=placement,
        briefs=briefs,
        seeds=[base + b.variant for b in briefs],
        rules=body.brand.rules(),
        steps=body.steps,
    )
    create_metrics: CreateMetrics = runtime.extras["metrics"]
    with create_metrics.generating(placement.name):
        batch: Batch = await within(
            runtime.extras["generator"].make.remote(job),
            runtime.settings.creative_timeout_s,
            "the creative generator",
        )
    create_metrics.count(batch, placement.name)
    if not batch.creatives:
        raise InvalidInput(
            "every variant was withheld by the image-safety check ("
            + "; ".join(f"variant {w.brief.variant}: {w.safety.reason}" for w in batch.withheld)
            + "). Change the product description or style and try again",
            code="unsafe_output",
        )

    experiment_id = uuid.uuid4()
    files: store.CreativeFiles = runtime.extras["files"]
    rows = []
    for c in batch.creatives:
        creative_id = uuid.uuid4()
        relative = files.relative(tenant.id, experiment_id, creative_id)
        await asyncio.to_thread(files.write, relative, c.png)
        rows.append(
            store.CreativeRow(
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
                image_path=relative,
                image_sha256=c.sha256,
                compliance_score=c.compliance.score,
                compliance=c.compliance.model_dump(),
                safety=c.safety.model_dump(),
                fit=c.fit.model_dump(mode="json"),
                layout=c.layout.model_dump(),
            )
        )
    model = ModelView.of(batch.model)
    pool = await runtime.pool()
    async with pool.acquire() as conn:
        await store.insert_experiment(
            conn,
            tenant.id,
            experiment_id,
            placement.name,
            body.model_dump(mode="json", exclude={"brand": {"logo_png_base64"}}),
            model.model_dump(),
            batch.steps,
            rows,
        )
    runtime.meter(metering.CREATIVES_GENERATED).add(tenant.id, len(rows))
    return GenerateResponse(
        experiment_id=experiment_id,
        placement=PlacementView.of(placement),
        model=model,
        steps=batch.steps,
        variants=[VariantView.of(r) for r in rows],
        withheld=[
            WithheldView(variant=w.brief.variant, seed=w.seed, reason=w.safety.reason or "unsafe")
            for w in batch.withheld
        ],
        safety=SafetySummary(
            text="passed",
            checked_fields=list(fields),
            image_classifier=next(
                (c.safety.classifier for c in batch.creatives if c.safety.classifier),
                NOT_CONFIGURED,
            ),
        ),
        timings_ms={
            "generate": round(batch.generate_s * 1000, 1),
            "fit_render_score": round(batch.finish_s * 1000, 1),
            "total": round((time.perf_counter() - started) * 1000, 1),
        },
    )


async def _creative(
    request: Request, tenant_id: uuid.UUID, creative_id: uuid.UUID
) -> store.CreativeRow:
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        return await store.get_creative(conn, tenant_id, creative_id)


@api.get("/api/v1/creatives/{creative_id}", response_model=CreativeView)
async def get_creative(
    creative_id: uuid.UUID, tenant: CurrentTenant, request: Request
) -> CreativeView:
    row = await _creative(request, tenant.id, creative_id)
    return CreativeView(**VariantView.of(row).model_dump(), layout=row.layout)


@api.get(
    "/api/v1/creatives/{creative_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the creative as a PNG"}},
)
async def get_creative_image(
    creative_id: uuid.UUID, tenant: CurrentTenant, request: Request
) -> Response:
    row = await _creative(request, tenant.id, creative_id)
    path = runtime_of(request).extras["files"].path(row.image_path)
    return Response(
        await asyncio.to_thread(path.read_bytes),
        media_type="image/png",
        headers={
            "ETag": f'"{row.image_sha256}"',
            "Cache-Control": "private, max-age=31536000, immutable",
        },
    )


@api.get("/api/v1/experiments/{experiment_id}", response_model=ExperimentView)
async def get_experiment(
    experiment_id: uuid.UUID, tenant: CurrentTenant, request: Request
) -> ExperimentView:
    """The variants with their totals, rates and each one's probability of being best."""
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        return ExperimentView.of(await store.get_experiment(conn, tenant.id, experiment_id))


@api.post("/api/v1/experiments/{experiment_id}/results", response_model=ExperimentView)
async def report_results(
    experiment_id: uuid.UUID,
    report: ResultsReport,
    tenant: CurrentTenant,
    request: Request,
    idempotency_key: KeyHeader = None,
) -> ExperimentView:
    """Add impressions, clicks and conversions per variant (increments). With an
    Idempotency-Key (header or field) a retried report is counted once."""
    key = report.idempotency_key or idempotency_key or f"auto:{uuid.uuid4()}"
    rows = [
        store.ResultIn(r.creative_id, r.impressions, r.clicks, r.conversions)
        for r in report.results
    ]
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        replayed = await store.record_results(
            conn, tenant.id, experiment_id, rows, key, report.source
        )
        experiment = await store.get_experiment(conn, tenant.id, experiment_id)
    return ExperimentView.of(experiment, replayed)


@api.get("/api/v1/placements", response_model=list[PlacementView])
async def placements(tenant: CurrentTenant) -> list[PlacementView]:
    """Every placement: exact size, safe zone, and how images are fitted."""
    return [PlacementView.of(p) for p in PLACEMENTS.values()]


@api.get("/api/v1/model", response_model=ModelStatus)
async def model_status(tenant: CurrentTenant, request: Request) -> ModelStatus:
    """The configured model, read from settings (does not wake a scaled-to-zero generator)."""
    s = runtime_of(request).settings
    return ModelStatus(
        configured=str(s.creative_model) if s.creative_model else None,
        placeholder=s.creative_model is None,
        notice=PLACEHOLDER_NOTICE if s.creative_model is None else None,
        image_safety_model=str(s.image_safety_model) if s.image_safety_model else None,
        default_steps=s.creative_steps,
        guidance=s.creative_guidance,
    )


@api.get("/metrics", tags=["ops"], response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    """This replica's generation metrics in Prometheus text; no API key needed."""
    registry = runtime_of(request).extras["metrics"].registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# --- deployments --------------------------------------------------------------------------


@serve.deployment(
    ray_actor_options={"num_cpus": 0.1, "num_gpus": 0},
    max_ongoing_requests=8,
    autoscaling_config={"min_replicas": 0, "max_replicas": 1, "target_ongoing_requests": 2},
)
class CreativeGenerator:
    """The text-to-image pipeline and the image-safety model. One batch at a time: a
    pipeline is not safe to call from two threads, and the GPU is busy anyway."""

    def __init__(self) -> None:
        self.studio = Studio.load(get_settings())
        self._lock = asyncio.Lock()

    async def make(self, job: Job) -> Batch:
        async with self._lock:
            return await asyncio.to_thread(self.studio.make, job)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class CreateIngress(ServiceIngress):
    service = "create"
    api = api

    def __init__(self, generator: DeploymentHandle) -> None:
        super().__init__()
        self.runtime.extras["generator"] = generator


app = CreateIngress.bind(CreativeGenerator.bind())
