"""What every KIKI Serve application shares: the runtime of a replica (settings, typed args
and context, pool, keys, probes, meters), the FastAPI app factory, errors mapped once to HTTP
and gRPC, the views, the dependencies, and the base of the ingress deployments."""

from deployments._serve.api import (
    DecimalJSONRoute,
    MetricsMiddleware,
    create_service_api,
    handle_errors,
)
from deployments._serve.builder import AppArgs, plain_ingress
from deployments._serve.deps import (
    ANY_SCOPE,
    CONSOLE_HEADER,
    SESSION_COOKIE,
    Admin,
    AnyKey,
    Connection,
    Operator,
    Reader,
    Suppressing,
    Writer,
    context_of,
    runtime_of,
)
from deployments._serve.errors import ERROR_STATUS, error_body, status_for
from deployments._serve.ingress import ServiceIngress
from deployments._serve.metering import UsageMeter
from deployments._serve.runtime import Probe, ServiceRuntime, runtime_for
from deployments._serve.views import HealthReport, MoneyOut, WhoAmI

__all__ = [
    "ANY_SCOPE",
    "CONSOLE_HEADER",
    "ERROR_STATUS",
    "SESSION_COOKIE",
    "Admin",
    "AnyKey",
    "AppArgs",
    "Connection",
    "DecimalJSONRoute",
    "HealthReport",
    "MetricsMiddleware",
    "MoneyOut",
    "Operator",
    "Probe",
    "Reader",
    "ServiceIngress",
    "ServiceRuntime",
    "Suppressing",
    "UsageMeter",
    "WhoAmI",
    "Writer",
    "context_of",
    "create_service_api",
    "error_body",
    "handle_errors",
    "plain_ingress",
    "runtime_for",
    "runtime_of",
    "status_for",
]
