"""The LTV drift gauges, one series per tenant (and feature): set by the retraining actor's
schedule for every production model, and by `GET /value/api/v1/drift` when someone asks."""

from __future__ import annotations

import functools

import ray
from ray.util import metrics

from kiki.value.drift import DriftReport


class _DriftGauges:
    """Created once per process: Ray metrics are registered, not rebuilt per call."""

    def __init__(self) -> None:
        self.psi = metrics.Gauge(
            "kiki_ltv_drift_psi", "PSI vs the training reference", tag_keys=("tenant", "feature")
        )
        self.stale = metrics.Gauge(
            "kiki_ltv_model_stale", "1 when drift marks the model stale", tag_keys=("tenant",)
        )


@functools.cache
def _gauges() -> _DriftGauges:
    return _DriftGauges()


def publish(tenant_id: str, report: DriftReport) -> None:
    if not ray.is_initialized():  # hosted outside Ray: no metrics agent to publish to
        return
    gauges = _gauges()
    for name, value in report.psi.items():
        gauges.psi.set(value, tags={"tenant": tenant_id, "feature": name})
    gauges.stale.set(1.0 if report.stale else 0.0, tags={"tenant": tenant_id})
