"""The proxy root (`/`, no prefix): `GET /health` names every service with its state, as
the older services' gateway did (`curl :8000/health | grep syncvalue`); any other path is a
404 in the error shape that says where the apps are. No API key: it tells no more than each
app's own `/health`.

Each app is asked through a deployment handle (its ingress's `health_report`), not over HTTP,
so the answer does not depend on which node or port the root's replica has.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from deployments._serve import AppArgs, HealthReport, MetricsMiddleware, handle_errors
from kiki import __version__
from kiki.config import ROOT_APP, SERVICES, get_settings

# The names the services had before Ray Serve; `grep syncvalue` finds SyncValue's line.
SERVICE_NAMES: dict[str, str] = {
    "value": "syncvalue",
    "shield": "syncshield",
    "flow": "syncflow",
    "create": "synccreate",
    "engage": "syncengage",
    "billing": "billing",
}
UNREACHABLE = "unreachable"


class ServiceState(BaseModel):
    app: str
    prefix: str
    status: str  # ok, unavailable (a check failed) or unreachable (no answer)
    checks: dict[str, str]


class PlatformHealth(HealthReport):
    """The per-app report's shape (`checks`: one per service, "ok" or what failed) plus
    each service's own checks under `services`."""

    services: dict[str, ServiceState]


class RootArgs(AppArgs):
    """The root has no options."""


async def _ask(app: str, handles: dict[str, DeploymentHandle], timeout_s: float) -> ServiceState:
    prefix = f"/{app}"
    try:
        if app not in handles:  # one controller round trip per app, then kept
            handles[app] = serve.get_app_handle(app)
        report: HealthReport = await asyncio.wait_for(
            handles[app].health_report.remote(), timeout_s
        )
    except TimeoutError:
        why = f"failed: no answer within {timeout_s:g} s"
        return ServiceState(app=app, prefix=prefix, status=UNREACHABLE, checks={app: why})
    except Exception as exc:  # not deployed, or its replicas are gone: look again next time
        handles.pop(app, None)
        why = f"failed: {exc.__class__.__name__}: {exc}"
        return ServiceState(app=app, prefix=prefix, status=UNREACHABLE, checks={app: why})
    return ServiceState(app=app, prefix=prefix, status=report.status, checks=report.checks)


def _verdict(state: ServiceState) -> str:
    if state.status == "ok":
        return "ok"
    failing = "; ".join(f"{k}: {v}" for k, v in state.checks.items() if v != "ok")
    return f"{state.status}: {failing}"


async def platform_health(handles: dict[str, DeploymentHandle], timeout_s: float) -> PlatformHealth:
    """Every service asked at once."""
    states = await asyncio.gather(*(_ask(app, handles, timeout_s) for app in SERVICES))
    services = {SERVICE_NAMES[s.app]: s for s in states}
    checks = {name: _verdict(state) for name, state in services.items()}
    return PlatformHealth(
        status="ok" if all(v == "ok" for v in checks.values()) else "unavailable",
        service=ROOT_APP,
        version=__version__,
        checks=checks,
        services=services,
    )


def render(report: PlatformHealth) -> str:
    """JSON with each service on a line of its own, so `grep syncvalue` shows SyncValue's
    state as the old gateway's output did."""
    head = report.model_dump(mode="json", exclude={"services"})
    lines = [
        f"    {json.dumps(name)}: {state.model_dump_json()}"
        for name, state in report.services.items()
    ]
    return json.dumps(head)[:-1] + ',\n  "services": {\n' + ",\n".join(lines) + "\n  }\n}\n"


api = FastAPI(title="KIKI", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
api.add_middleware(MetricsMiddleware, service=ROOT_APP)
handle_errors(
    api,
    "KIKI's apps answer under " + ", ".join(f"/{s}" for s in SERVICES)
    + " (API docs at /<app>/docs), and GET /health lists them",
)  # fmt: skip


@serve.deployment
@serve.ingress(api)
class RootIngress:
    def __init__(self) -> None:
        self.handles: dict[str, DeploymentHandle] = {}
        # Each app's probes answer within this; the handle call gets a little more.
        self.timeout_s = get_settings().health_probe_timeout_s + 2.0

    @api.get("/health")
    async def health(self) -> Response:
        """Every service and its state; 200 when all are ok, 503 naming what failed."""
        report = await platform_health(self.handles, self.timeout_s)
        return Response(
            render(report),
            status_code=200 if report.status == "ok" else 503,
            media_type="application/json",
        )


def build_app(args: RootArgs) -> Application:
    RootArgs.given(args)  # refuses unknown options
    return RootIngress.bind()
