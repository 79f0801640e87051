"""SyncShield (`/shield`): budget governance: caps, reservations, compliance, consent.

A thin HTTP shell: budgets live in the sharded budget actors (actors/budget/), breakers and
platform rate budgets in the guard actor (actors/guard.py), consent in PostgreSQL.
`build_app` is what `serve_config.yaml` names.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray.serve import Application

from deployments._serve import AppArgs, ServiceRuntime, create_service_api, plain_ingress
from deployments.shield import budgets, consent, keys, platforms
from deployments.shield.context import ShieldContext


class ShieldArgs(AppArgs):
    """SyncShield has no options of its own: its budget shards and the guard are shared with
    the flow app, so their knobs (shards, reservation TTL, platform rate budgets) are the
    platform's KIKI_* settings."""


def _start(app: FastAPI, runtime: ServiceRuntime) -> ShieldContext:
    context = ShieldContext.start(runtime.database_url, runtime.settings)
    timeout = runtime.settings.health_probe_timeout_s
    runtime.probes["budget_shards"] = lambda: context.probe(timeout)
    return context


api = create_service_api(
    "shield",
    "SyncShield",
    "Budget governance: caps, reservations, compliance, consent, circuit breakers, rate limits."
    " Amounts are decimal strings (or JSON numbers, read exactly) in the campaign's currency.",
    on_startup=_start,
)
api.include_router(budgets.router)
api.include_router(platforms.router)
api.include_router(consent.router, tags=["consent"])
api.include_router(keys.router)


ShieldIngress = plain_ingress("shield", api)


def build_app(args: ShieldArgs) -> Application:
    return ShieldIngress.bind(ShieldArgs.given(args))
