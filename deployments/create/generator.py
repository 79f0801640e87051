"""SyncCreate's generation routes: generate variants, read creatives and their images, the
placements and the model, and the A/B experiments with the results reported to them."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from deployments._serve import Connection, DecimalJSONRoute, Reader, Writer
from deployments.create.context import Context
from deployments.create.schemas import (
    CreativeView,
    ExperimentView,
    GenerateResponse,
    KeyHeader,
    ModelStatus,
    ModelView,
    PlacementView,
    ResultsReport,
    SafetySummary,
    VariantView,
    WithheldView,
)
from kiki.create import store
from kiki.create.brief import MAX_SEED, MAX_VARIANTS, GenerateRequest, VariantBrief, plan_variants
from kiki.create.formats import PLACEMENTS
from kiki.create.model import PLACEHOLDER_NOTICE
from kiki.create.safety import NOT_CONFIGURED, check_texts, describe
from kiki.create.studio import Batch, Job
from kiki.errors import InvalidInput

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute)


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


async def _checked_texts(body: GenerateRequest, briefs: list[VariantBrief]) -> dict[str, str]:
    """The texts checked, or 400 naming every unsafe one (before any GPU time is spent)."""
    fields = _text_fields(body, briefs)
    findings = await asyncio.to_thread(check_texts, fields, body.placement.platform)
    if findings:
        raise InvalidInput(
            f"refused by the safety check: {describe(findings)}. Rewrite those fields and send "
            "the request again",
            code="unsafe_content",
        )
    return fields


def _job(body: GenerateRequest, briefs: list[VariantBrief]) -> Job:
    base = body.seed if body.seed is not None else secrets.randbelow(MAX_SEED - MAX_VARIANTS)
    return Job(
        placement=body.placement,
        briefs=briefs,
        seeds=[base + b.variant for b in briefs],
        rules=body.brand.rules(),
        steps=body.steps,
    )


def _refuse_if_all_withheld(batch: Batch) -> None:
    if not batch.creatives:
        raise InvalidInput(
            "every variant was withheld by the image-safety check ("
            + "; ".join(f"variant {w.brief.variant}: {w.safety.reason}" for w in batch.withheld)
            + "). Change the product description or style and try again",
            code="unsafe_output",
        )


@router.post("/generate", status_code=201, response_model=GenerateResponse)
async def generate(body: GenerateRequest, tenant: Writer, ctx: Context) -> GenerateResponse:
    """N variants for one placement: each with its seed, compliance score and safety verdict,
    stored as one A/B experiment. Unsafe text is refused (400, every reason listed) before
    generation; images an image check flags are withheld, never stored or returned."""
    started = time.perf_counter()
    briefs = plan_variants(body)
    fields = await _checked_texts(body, briefs)
    batch = await ctx.generate(_job(body, briefs))
    _refuse_if_all_withheld(batch)
    model = ModelView.of(batch.model)
    request = body.model_dump(mode="json", exclude={"brand": {"logo_png_base64"}})
    experiment_id, rows = await store.save_batch(
        await ctx.pool(),
        ctx.files,
        tenant.id,
        body.placement.name,
        request,
        model.model_dump(),
        batch,
    )
    ctx.creatives_generated.add(tenant.id, len(rows))
    return GenerateResponse(
        experiment_id=experiment_id,
        defaults=body.defaults(),
        placement=PlacementView.of(body.placement),
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


@router.get("/creatives/{creative_id}", response_model=CreativeView)
async def get_creative(creative_id: uuid.UUID, tenant: Reader, conn: Connection) -> CreativeView:
    row = await store.get_creative(conn, tenant.id, creative_id)
    return CreativeView(**VariantView.of(row).model_dump(), layout=row.layout)


@router.get(
    "/creatives/{creative_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the creative as a PNG"}},
)
async def get_creative_image(
    creative_id: uuid.UUID, tenant: Reader, ctx: Context, conn: Connection
) -> Response:
    row = await store.get_creative(conn, tenant.id, creative_id)
    return Response(
        await asyncio.to_thread(ctx.files.read, row.image_url),
        media_type="image/png",
        headers={
            "ETag": f'"{row.image_sha256}"',
            "Cache-Control": "private, max-age=31536000, immutable",
        },
    )


@router.get("/experiments", response_model=list[ExperimentView])
async def list_experiments(
    tenant: Reader, conn: Connection, limit: Annotated[int, Query(ge=1, le=50)] = 10
) -> list[ExperimentView]:
    """The newest experiments (the gallery), newest first, each with its variants' results."""
    found = await store.recent_experiments(conn, tenant.id, limit)
    return [ExperimentView.of(await store.get_experiment(conn, tenant.id, e)) for e in found]


@router.get("/experiments/{experiment_id}", response_model=ExperimentView)
async def get_experiment(
    experiment_id: uuid.UUID, tenant: Reader, conn: Connection
) -> ExperimentView:
    """The variants with their totals, rates and each one's probability of being best."""
    return ExperimentView.of(await store.get_experiment(conn, tenant.id, experiment_id))


@router.post("/experiments/{experiment_id}/results", response_model=ExperimentView)
async def report_results(
    experiment_id: uuid.UUID,
    report: ResultsReport,
    tenant: Writer,
    conn: Connection,
    idempotency_key: KeyHeader = None,
) -> ExperimentView:
    """Add impressions, clicks and conversions per variant (increments). With an
    Idempotency-Key (header or field) a retried report is counted once."""
    key = report.idempotency_key or idempotency_key or f"auto:{uuid.uuid4()}"
    rows = [
        store.ResultIn(r.creative_id, r.impressions, r.clicks, r.conversions)
        for r in report.results
    ]
    replayed = await store.record_results(conn, tenant.id, experiment_id, rows, key, report.source)
    experiment = await store.get_experiment(conn, tenant.id, experiment_id)
    return ExperimentView.of(experiment, replayed)


@router.get("/placements", response_model=list[PlacementView])
async def placements(tenant: Reader) -> list[PlacementView]:
    """Every placement: exact size, safe zone, and how images are fitted."""
    return [PlacementView.of(p) for p in PLACEMENTS.values()]


@router.get("/model", response_model=ModelStatus)
async def model_status(tenant: Reader, ctx: Context) -> ModelStatus:
    """The configured model, from the app's options (does not wake a scaled-to-zero
    generator)."""
    a = ctx.args
    return ModelStatus(
        configured=str(a.creative_model) if a.creative_model else None,
        placeholder=a.creative_model is None,
        notice=PLACEHOLDER_NOTICE if a.creative_model is None else None,
        image_safety_model=str(a.image_safety_model) if a.image_safety_model else None,
        default_steps=a.creative_steps,
        guidance=a.creative_guidance,
    )
