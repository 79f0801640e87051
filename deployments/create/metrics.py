"""SyncCreate's `/metrics`: this replica's generation metrics in Prometheus text."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deployments._serve import DecimalJSONRoute
from deployments.create.context import Context

router = APIRouter(route_class=DecimalJSONRoute)


@router.get("/metrics", tags=["ops"], response_class=Response)
async def prometheus_metrics(ctx: Context) -> Response:
    """This replica's generation metrics in Prometheus text; no API key needed."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
