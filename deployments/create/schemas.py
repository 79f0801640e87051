"""SyncCreate's request and response models: placements, variants with their compliance and
safety verdicts, experiments with each variant's results, and the results reported."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import Header
from pydantic import BaseModel, Field, model_validator

from kiki.create import store
from kiki.create.brief import MAX_VARIANTS
from kiki.create.compliance import ComplianceReport
from kiki.create.formats import Box, FitReport, Placement
from kiki.create.model import PipelineInfo
from kiki.create.safety import ImageVerdict
from kiki.db.values import PgText


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
    defaults: dict[str, str] = Field(
        description="what the request left out (brand, platform) and what stood in for it"
    )
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
