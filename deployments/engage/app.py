"""SyncEngage (`/engage`): churn risk, cohorts, RFM and rule segments, consent-aware
messaging over email (SMTP), SMS (Twilio), push (FCM) and an in-app inbox, CRM sync
(HubSpot, Salesforce, Shopify, PostgreSQL) and retention rules.

A thin HTTP shell over kiki.engage (its use cases: kiki.engage.service); the automation actor
(actors/engage.py) syncs CRMs and runs the rules on a schedule. `build_app` is what
`serve_config.yaml` names.
"""

from __future__ import annotations

from typing import ClassVar

import httpx
import ray
from fastapi import FastAPI
from pydantic import Field
from ray.serve import Application

from actors.engage import engage_automation
from deployments._serve import AppArgs, ServiceRuntime, create_service_api, plain_ingress
from deployments._serve.models import models_router
from deployments.engage import churn, crm, messaging, rules, segments
from deployments.engage.context import EngageContext
from kiki.engage import registry
from kiki.engage.churn import TrainedChurnModel


class EngageArgs(AppArgs):
    """Frequency caps, the automation's schedule, and the channels: a channel whose options
    are unset is not offered. Their secrets (SMTP password, Twilio auth token, FCM access
    token) are KIKI_* settings only: args show in Ray's dashboard."""

    engage_cap_per_day: int = Field(3, ge=1, description="messages per customer per 24 hours")
    engage_cap_per_week: int = Field(10, ge=1, description="messages per customer per 7 days")
    engage_automation_interval_s: float = Field(
        300.0, gt=0, description="how often the engage actor syncs CRMs and runs retention rules"
    )
    smtp_host: str | None = Field(None, description="SMTP server for email; unset = no email")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_sender: str = Field("kiki@localhost", description="From address of email")
    smtp_username: str | None = None
    smtp_starttls: bool = False
    twilio_account_sid: str | None = Field(None, description="AC...; unset = no SMS")
    twilio_sender: str | None = Field(None, description="E.164 From number or MG... service")
    twilio_base_url: str = "https://api.twilio.com"
    fcm_project_id: str | None = Field(None, description="Firebase project; unset = no push")
    fcm_base_url: str = "https://fcm.googleapis.com"

    # Each option is the KIKI_* setting of the same name.
    settings_fields: ClassVar[dict[str, str]] = {
        name: name
        for name in (
            "engage_cap_per_day", "engage_cap_per_week", "engage_automation_interval_s",
            "smtp_host", "smtp_port", "smtp_sender", "smtp_username", "smtp_starttls",
            "twilio_account_sid", "twilio_sender", "twilio_base_url",
            "fcm_project_id", "fcm_base_url",
        )
    }  # fmt: skip


def _start(app: FastAPI, runtime: ServiceRuntime) -> EngageContext:
    settings = runtime.args_as(EngageArgs).applied_to(runtime.settings)
    context = EngageContext.of(runtime.pool, settings, httpx.AsyncClient())
    runtime.watch_models(registry.CHURN_MODELS, TrainedChurnModel)
    if ray.is_initialized():  # under Serve; tests hosting the app in-process have no Ray
        context.automation = engage_automation(runtime.database_url, settings)
        context.automation.ready.remote()
        timeout = runtime.settings.health_probe_timeout_s
        runtime.probes["automation"] = lambda: context.probe(timeout)
        runtime.in_background("scoring the latest tenants' customers", context.service.warm)
    return context


api = create_service_api(
    "engage",
    "SyncEngage",
    "Churn prediction, cohorts, segments and consent-aware retention messaging.",
    on_startup=_start,
)
api.include_router(churn.router)
api.include_router(segments.router)
api.include_router(messaging.router)
api.include_router(crm.router)
api.include_router(rules.router)
api.include_router(models_router(registry.CHURN_MODELS))


EngageIngress = plain_ingress("engage", api)


def build_app(args: EngageArgs) -> Application:
    return EngageIngress.bind(EngageArgs.given(args))
