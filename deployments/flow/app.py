"""SyncFlow (`/flow`): campaigns, their bid loop, and the decision audit trail.

A thin HTTP shell: campaigns live in PostgreSQL, their budgets and policy in SyncShield's
budget actors, and the bidding in the bid-loop actors (actors/flow/), which this app creates
on start-up and tells to reload a campaign whenever one changes. `build_app` is what
`serve_config.yaml` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from fastapi import FastAPI
from pydantic import Field
from ray.serve import Application

from actors.budget import BudgetClient
from actors.flow import BidLoopClient, BidLoopConfig
from deployments._serve import AppArgs, ServiceRuntime, create_service_api, plain_ingress
from deployments.flow import campaigns, trail
from deployments.flow.context import FlowContext
from kiki.flow.live import load_credentials
from kiki.shield import RateLimitConfig


class FlowArgs(AppArgs):
    shards: int = Field(2, ge=1, le=256, description="bid-loop actors campaigns shard over")
    tick_s: float = Field(2.0, gt=0, le=3600, description="seconds between bid-loop ticks")
    platform_credentials: Path | None = Field(
        None,
        description="JSON file with each ad platform's credentials, on every node: set = the "
        "live market; unset = the sandbox exchange",
    )
    spend_poll_s: float = Field(
        60.0, gt=0, description="seconds between spend reports fetched from live platforms"
    )

    settings_fields: ClassVar[dict[str, str]] = {
        "shards": "flow_shards",
        "tick_s": "flow_tick_s",
        "platform_credentials": "platform_credentials",
        "spend_poll_s": "flow_spend_poll_s",
    }


def _start(app: FastAPI, runtime: ServiceRuntime) -> FlowContext:
    args, s = runtime.args_as(FlowArgs), runtime.settings
    config = BidLoopConfig(
        tick_s=args.tick_s,
        budget_shards=s.budget_shards,
        log_dir=str(s.log_dir.resolve()),
        log_max_bytes=s.decision_log_max_bytes,
        log_backups=s.decision_log_backups,
        guard_rate=RateLimitConfig(rate_per_s=s.platform_rate_per_s, burst=s.platform_burst),
        credentials=load_credentials(args.platform_credentials)
        if args.platform_credentials
        else None,
        spend_poll_s=args.spend_poll_s,
        call_timeout_s=s.actor_call_timeout_s,
    )
    loops = BidLoopClient(
        runtime.database_url, config, shards=args.shards, num_cpus=min(0.2, s.replica_cpus)
    )
    for actor in loops.actors:
        actor.ready.remote()  # start ticking now: campaigns already running resume at once
    runtime.probes["bid_loops"] = lambda: loops.health(
        args.tick_s, s.health_grace_s, s.health_probe_timeout_s
    )
    return FlowContext(BudgetClient.for_settings(runtime.database_url, s), loops, args.tick_s)


api = create_service_api(
    "flow",
    "SyncFlow",
    "Campaign executor: campaigns, the bid loop (pacing, value-based bids, ad-platform "
    "connectors; the sandbox exchange locally) and the decision audit trail. Amounts are "
    "decimal strings (or JSON numbers, read exactly) in the campaign's currency.",
    on_startup=_start,
)
api.include_router(campaigns.router)
api.include_router(trail.router)


FlowIngress = plain_ingress("flow", api)


def build_app(args: FlowArgs) -> Application:
    return FlowIngress.bind(FlowArgs.given(args))
