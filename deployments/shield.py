"""SyncShield (`/shield`): budget governance: caps, reservations, compliance, consent."""

from __future__ import annotations

from ray import serve

from deployments.common import ServiceIngress, create_service_api

api = create_service_api(
    "shield",
    "SyncShield",
    "Budget governance: caps, reservations, compliance, consent, circuit breakers, rate limits.",
)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class ShieldIngress(ServiceIngress):
    service = "shield"
    api = api


app = ShieldIngress.bind()
