"""The base of every app's ingress deployment, and Serve's health check of its replicas."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from pydantic import BaseModel

from deployments._serve.runtime import runtime_for
from deployments._serve.views import HealthReport

logger = logging.getLogger("kiki.serve")


class ServiceIngress:
    """Base of each app's ingress deployment: gives the replica its runtime.

    Subclasses set `service` and `api` and are decorated with `@serve.deployment` and
    `@serve.ingress(api)`; gRPC methods use `self.runtime`, HTTP routes `request.app.state`.
    """

    service: str
    api: FastAPI

    def __init__(self, args: BaseModel | None = None) -> None:
        self.runtime = runtime_for(self.service, args)

    async def health_report(self) -> HealthReport:
        """This replica's `/health`, through a deployment handle: the proxy root's
        `GET /health` asks every app this way, whatever node and port its replicas have."""
        return await self.runtime.health()

    async def check_health(self) -> None:
        """Serve's own health check of this replica: the probes of /health, so Serve replaces
        a replica that cannot reach what it depends on. A new replica is given
        `health_grace_s` first (its actors and pool may still be starting)."""
        report = await self.runtime.health()
        if report.status == "ok":
            return
        failing = {k: v for k, v in report.checks.items() if v != "ok"}
        if time.monotonic() - self.runtime.started < self.runtime.settings.health_grace_s:
            logger.warning("dependencies not ready yet", extra={"checks": failing})
            return
        raise RuntimeError(f"{self.service} cannot reach its dependencies: {failing}")
