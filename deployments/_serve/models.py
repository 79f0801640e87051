"""The routes over one model registry (LTV models in SyncValue, churn models in SyncEngage):
versions with their metrics and traffic share, promote and roll back. The same use cases as
`kiki models` / `kiki churn-models`; serving replicas pick a change up within their
registry TTL, without a restart."""

# No `from __future__ import annotations`: the routes are closures, which Serve pickles by
# value, and FastAPI must see their dependency annotations as objects, not names.
from datetime import date, datetime
from typing import Annotated, Any, Self

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, Field

from deployments._serve.api import DecimalJSONRoute
from deployments._serve.deps import Admin, Connection, Reader
from kiki.db.values import INT4_MAX
from kiki.model_registry import ModelRecord, ModelRegistry


class ModelView(BaseModel):
    version: int
    status: str = Field(description="registered, candidate, production or retired")
    traffic_percent: int
    metrics: dict[str, Any]
    feature_schema: list[str]
    calibration_end: date
    horizon_days: int
    created_at: datetime
    promoted_at: datetime | None

    @classmethod
    def of(cls, m: ModelRecord) -> Self:
        return cls(**m.model_dump(include=set(cls.model_fields)))


class Promotion(BaseModel):
    traffic_percent: int = Field(
        100, ge=1, le=100, description="100: production; less: the A/B candidate's share"
    )


def models_router(registry: ModelRegistry) -> APIRouter:
    router = APIRouter(prefix="/api/v1/models", route_class=DecimalJSONRoute, tags=["models"])

    @router.get("", response_model=list[ModelView])
    async def list_models(tenant: Reader, conn: Connection) -> list[ModelView]:
        """Every version, oldest first: status, traffic share, metrics."""
        return [ModelView.of(m) for m in await registry.list_models(conn, tenant.id)]

    @router.post("/{version}/promote", response_model=ModelView)
    async def promote(
        # A version PostgreSQL's integer can hold: a larger one was a 500 (kiki bench fuzz).
        version: Annotated[int, Path(ge=1, le=INT4_MAX)],
        tenant: Admin,
        conn: Connection,
        body: Annotated[Promotion | None, Body()] = None,
    ) -> ModelView:
        """Serve this version to everyone, or to a share of customers as the A/B candidate
        (where the registry allows candidates; otherwise 400)."""
        share = (body or Promotion()).traffic_percent
        return ModelView.of(await registry.promote(conn, tenant.id, version, share))

    @router.post("/rollback", response_model=ModelView)
    async def rollback(tenant: Admin, conn: Connection) -> ModelView:
        """Put back the version that served before the current production one (409 if none)."""
        return ModelView.of(await registry.rollback(conn, tenant.id))

    return router
