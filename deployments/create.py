"""SyncCreate (`/create`): ad creatives, brand compliance, safety and platform formats."""

from __future__ import annotations

from ray import serve

from deployments.common import ServiceIngress, create_service_api

api = create_service_api(
    "create",
    "SyncCreate",
    "Ad creatives: generation, brand compliance, safety checks and platform formats.",
)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class CreateIngress(ServiceIngress):
    service = "create"
    api = api


app = CreateIngress.bind()
