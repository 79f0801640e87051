"""FastAPI dependencies every app's routes use: the replica's runtime, the caller's tenant
with the scope the route needs, the app's typed context, and one pooled connection per
request.

A route states its scope by the type of its tenant parameter (`Reader`, `Writer`, `Admin`,
`Operator`); each is a FastAPI `Security` dependency on the `X-API-Key` scheme, so the scope
shows in the app's OpenAPI as the operation's security requirement."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

import asyncpg
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, SecurityScopes

from deployments._serve.runtime import ServiceRuntime
from kiki.auth import Grant, Scope, Tenant
from kiki.errors import Forbidden
from kiki.gdpr import Suppressions

C = TypeVar("C")


def runtime_of(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


# auto_error off: a missing key gets KIKI's own 401 in the `{"error": ...}` shape.
API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    description="A KIKI API key (`kiki keys create`). Scopes: read < write < admin act on the "
    "key's tenant; operator acts on platform-wide state. Each operation names the scope it "
    "needs; a key without it gets 403 naming the scope.",
    auto_error=False,
)


# The console's sign-in (deployments/console): an HttpOnly, SameSite=Strict cookie holding a
# session token, accepted wherever X-API-Key is, when no key is sent.
SESSION_COOKIE = "kiki_session"
# A change made with the cookie must carry this header: a page on another site cannot set it
# without a CORS preflight that KIKI never grants (CSRF, beyond what SameSite already stops).
CONSOLE_HEADER = "X-KIKI-Console"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def require_grant(
    request: Request,
    security_scopes: SecurityScopes,
    api_key: Annotated[str | None, Security(API_KEY)],
) -> Grant:
    """The caller's key (or console session), checked to hold every scope the route asks
    for."""
    session = None if api_key else request.cookies.get(SESSION_COOKIE)
    if session and request.method not in _SAFE_METHODS and not request.headers.get(CONSOLE_HEADER):
        raise Forbidden(
            f"a change made with the console's session cookie needs the {CONSOLE_HEADER} "
            "header (the console sends it); API clients send X-API-Key instead",
            code="csrf_header_missing",
        )
    grant = await runtime_of(request).grant(api_key, session)
    for scope in security_scopes.scopes:
        grant.require(Scope(scope))
    return grant


async def _tenant(grant: Annotated[Grant, Security(require_grant)]) -> Tenant:
    return grant.tenant


# A route's openapi_extra key listing scopes any one of which will do (the OpenAPI then shows
# each as an alternative security requirement); the route checks them itself.
ANY_SCOPE = "x-kiki-any-scope"

Reader = Annotated[Tenant, Security(_tenant, scopes=[Scope.READ])]
Writer = Annotated[Tenant, Security(_tenant, scopes=[Scope.WRITE])]
Admin = Annotated[Tenant, Security(_tenant, scopes=[Scope.ADMIN])]
Operator = Annotated[Tenant, Security(_tenant, scopes=[Scope.OPERATOR])]
# Any valid key, for routes that decide for themselves (key management: admin or operator).
AnyKey = Annotated[Grant, Security(require_grant)]


@functools.cache
def context_of(kind: type[C]) -> Callable[[Request], C]:
    """A dependency giving the app's context (its clients and services), checked as `kind`;
    one function per kind, so a test can override it."""

    def dependency(request: Request) -> C:
        return runtime_of(request).context_as(kind)

    return dependency


async def pooled_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        yield conn


def suppressions_of(request: Request) -> Suppressions:
    return runtime_of(request).suppressions


# Who was erased: what routes that store or contact customers check (kiki.gdpr).
Suppressing = Annotated[Suppressions, Depends(suppressions_of)]


# Declare it after the tenant (Reader, Writer, ...) in a route, so a bad key is refused before a
# connection is taken from the pool.
Connection = Annotated[asyncpg.Connection, Depends(pooled_connection)]
