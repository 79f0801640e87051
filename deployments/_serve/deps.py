"""FastAPI dependencies every app's routes use: the replica's runtime, the caller's tenant,
the app's typed context, and one pooled connection per request."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

import asyncpg
from fastapi import Depends, Header, Request

from deployments._serve.runtime import ServiceRuntime
from kiki.auth import Tenant
from kiki.gdpr import Suppressions

C = TypeVar("C")


def runtime_of(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


async def require_tenant(
    request: Request,
    x_api_key: Annotated[str | None, Header(alias="X-API-Key", description="your API key")] = None,
) -> Tenant:
    return await runtime_of(request).tenant(x_api_key)


CurrentTenant = Annotated[Tenant, Depends(require_tenant)]


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


# Declare it after CurrentTenant in a route, so a bad key is refused before a connection is
# taken from the pool.
Connection = Annotated[asyncpg.Connection, Depends(pooled_connection)]
