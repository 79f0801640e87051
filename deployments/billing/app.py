"""Billing (`/billing`): plans, subscriptions, metering, invoices, payments, analytics.

A thin HTTP shell over kiki.billing; a background worker per replica delivers the tenants'
webhooks and runs the dunning schedule (worker.py). `build_app` is what `serve_config.yaml`
names.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import ClassVar

from fastapi import FastAPI
from pydantic import Field
from ray.serve import Application

from deployments._serve import AppArgs, ServiceRuntime, create_service_api, plain_ingress
from deployments.billing import (
    analytics,
    catalogue,
    customers,
    invoices,
    paypal,
    subscriptions,
    webhooks,
)
from deployments.billing.context import BillingContext
from deployments.billing.worker import run_worker
from kiki.billing import processors
from kiki.vault import Vault


class BillingArgs(AppArgs):
    """Stripe's address and signature tolerance, and the worker's pace. Stripe's API key and
    webhook secret, and PayPal's settings (KIKI_PAYPAL_*), are KIKI_* settings only: args show
    in Ray's dashboard."""

    stripe_api_base: str = Field(
        "https://api.stripe.com", description="Stripe's API, or a Stripe-compatible server"
    )
    stripe_webhook_tolerance_s: int = Field(
        300, ge=1, le=3600, description="oldest Stripe event signature accepted"
    )
    billing_worker_s: float = Field(
        10.0, gt=0, description="seconds between the billing worker's rounds (dunning, webhooks)"
    )

    # Each option is the KIKI_* setting of the same name.
    settings_fields: ClassVar[dict[str, str]] = {
        name: name for name in ("stripe_api_base", "stripe_webhook_tolerance_s", "billing_worker_s")
    }


def _start(app: FastAPI, runtime: ServiceRuntime) -> BillingContext:
    args = runtime.args_as(BillingArgs)
    settings = runtime.settings.model_copy(
        update={
            "stripe_api_base": args.stripe_api_base,
            "stripe_webhook_tolerance_s": args.stripe_webhook_tolerance_s,
        }
    )
    context = BillingContext(
        pool=runtime.pool,
        gateways=processors.configured(settings),
        vault=Vault.from_settings(runtime.settings),
        paypal_return_url=settings.paypal_return_url,
        paypal_cancel_url=settings.paypal_cancel_url,
        paypal_approval_ttl=timedelta(seconds=settings.paypal_approval_ttl_s),
    )
    context.worker = asyncio.get_running_loop().create_task(
        run_worker(context, args.billing_worker_s)
    )
    return context


api = create_service_api(
    "billing",
    "Billing",
    "Usage-based billing for your customers: billable metrics, versioned plans (standard, "
    "graduated, volume, package, percentage charges), subscriptions in each customer's time "
    "zone, exactly-once usage events, invoices with gapless numbers and PDFs, Stripe or PayPal "
    "payments with dunning, signed webhooks, and MRR analytics.",
    on_startup=_start,
)
api.include_router(catalogue.router)
api.include_router(customers.router)
api.include_router(subscriptions.router)
api.include_router(invoices.router)
api.include_router(analytics.router)
api.include_router(webhooks.router)
api.include_router(paypal.router)


BillingIngress = plain_ingress("billing", api)


def build_app(args: BillingArgs) -> Application:
    return BillingIngress.bind(BillingArgs.given(args))
