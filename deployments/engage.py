"""SyncEngage (`/engage`): churn, cohorts, segments and retention messaging."""

from __future__ import annotations

from ray import serve

from deployments.common import ServiceIngress, create_service_api

api = create_service_api(
    "engage",
    "SyncEngage",
    "Churn prediction, cohorts, segments and consent-aware retention messaging.",
)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class EngageIngress(ServiceIngress):
    service = "engage"
    api = api


app = EngageIngress.bind()
