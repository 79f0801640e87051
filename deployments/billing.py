"""Billing (`/billing`): plans, subscriptions, metering, invoices, payments, analytics."""

from __future__ import annotations

from ray import serve

from deployments.common import ServiceIngress, create_service_api

api = create_service_api(
    "billing",
    "Billing",
    "Plans, subscriptions, usage metering, invoices, payments and revenue analytics.",
)


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class BillingIngress(ServiceIngress):
    service = "billing"
    api = api


app = BillingIngress.bind()
