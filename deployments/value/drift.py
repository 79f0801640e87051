"""SyncValue's drift route: how far today's customers and predictions have moved from the
production model's training reference, also published as Ray metrics."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime
from typing import Annotated

import ray
from fastapi import APIRouter, Query
from ray.util import metrics

from deployments._serve import DecimalJSONRoute, Reader
from deployments.value.context import Context
from kiki.value import drift

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute)


@router.get("/drift", response_model=drift.DriftReport, tags=["models"])
async def get_drift(
    tenant: Reader,
    ctx: Context,
    as_of: Annotated[date | None, Query(description="the live window's day; default today")] = None,
    threshold: Annotated[float, Query(gt=0, le=10)] = 0.2,
) -> drift.DriftReport:
    """PSI of every feature and of the predictions, now vs the production model's training
    reference; `stale` when the predictions (or most features) moved past the threshold."""
    report = await ctx.value.drift(tenant.id, as_of or datetime.now(UTC).date(), threshold)
    _publish(report)
    return report


class _DriftGauges:
    """Created once per process: Ray metrics are registered, not rebuilt per request."""

    def __init__(self) -> None:
        self.psi = metrics.Gauge(
            "kiki_ltv_drift_psi", "PSI vs the training reference", tag_keys=("feature",)
        )
        self.stale = metrics.Gauge("kiki_ltv_model_stale", "1 when drift marks the model stale")


@functools.cache
def _gauges() -> _DriftGauges:
    return _DriftGauges()


def _publish(report: drift.DriftReport) -> None:
    if not ray.is_initialized():  # hosted outside Ray: no metrics agent to publish to
        return
    gauges = _gauges()
    for name, value in report.psi.items():
        gauges.psi.set(value, tags={"feature": name})
    gauges.stale.set(1.0 if report.stale else 0.0)
