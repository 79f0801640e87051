"""SyncFlow (`/flow`): the campaign executor: bid loop, pacing, connectors, audit trail."""

from __future__ import annotations

from ray import serve

from deployments.common import ServiceIngress, create_service_api

api = create_service_api(
    "flow",
    "SyncFlow",
    "Campaign executor: the bid loop, pacing, ad-platform connectors and the decision audit trail.",
)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class FlowIngress(ServiceIngress):
    service = "flow"
    api = api


app = FlowIngress.bind()
