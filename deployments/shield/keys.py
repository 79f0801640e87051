"""SyncShield's key management: a tenant admin manages its own tenant's keys; an operator
manages any tenant's, and alone may make operator keys. A key of another tenant is "not
found", the same answer as a key that does not exist."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from deployments._serve import ANY_SCOPE, AnyKey, Connection, DecimalJSONRoute
from kiki import auth
from kiki.auth import ApiKeyInfo, Grant, Scope
from kiki.errors import Forbidden, NotFound

router = APIRouter(prefix="/api/v1/keys", route_class=DecimalJSONRoute, tags=["keys"])
# Either scope will do: admin acts on its own tenant, operator on any tenant.
EITHER = {ANY_SCOPE: [Scope.ADMIN.value, Scope.OPERATOR.value]}
Prefix = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{8}$", description="the key's prefix")]
TenantName = Annotated[
    str | None,
    Query(max_length=64, description="operators: whose keys (default: every tenant's)"),
]
_MAX_LIFETIME_S = 10 * 365 * 86_400


class KeyIn(BaseModel):
    tenant: str | None = Field(None, description="operators only: the tenant (created if new)")
    label: str = Field("", max_length=200)
    scopes: list[Scope] = Field(
        default_factory=lambda: list(auth.TENANT_ADMIN), min_length=1, max_length=4
    )
    expires_in_s: int | None = Field(
        None, ge=60, le=_MAX_LIFETIME_S, description="lifetime in seconds; none: never expires"
    )


class RotateIn(BaseModel):
    overlap_s: int = Field(
        86_400, ge=0, le=30 * 86_400, description="how long the old key keeps working"
    )
    expires_in_s: int | None = Field(
        None, ge=60, le=_MAX_LIFETIME_S, description="the new key's lifetime (default: the old's)"
    )


class NewKey(BaseModel):
    key: str = Field(description="the key itself: shown this once, never stored")
    info: ApiKeyInfo


class Rotated(NewKey):
    previous: ApiKeyInfo = Field(description="the old key, now expiring after the overlap")


def _scope_of(grant: Grant, tenant: str | None) -> str | None:
    """Whose keys the caller may touch: one tenant's name, or None for every tenant's."""
    if grant.allows(Scope.OPERATOR):
        return tenant
    if tenant is not None and tenant != grant.tenant.name:
        raise Forbidden(
            "only an operator key may manage another tenant's keys", code="scope_missing"
        )
    grant.require(Scope.ADMIN)
    return grant.tenant.name


def _seconds(value: int | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


@router.get("", response_model=list[ApiKeyInfo], openapi_extra=EITHER)
async def list_keys(grant: AnyKey, conn: Connection, tenant: TenantName = None) -> Any:
    """Keys by prefix with their scopes, expiry and last use (to within the key cache's
    lifetime); the secret part is never stored."""
    return await auth.list_api_keys(conn, _scope_of(grant, tenant))


@router.post("", status_code=201, response_model=NewKey, openapi_extra=EITHER)
async def create_key(body: KeyIn, grant: AnyKey, conn: Connection) -> NewKey:
    """A new key, shown once. A tenant admin makes keys for its own tenant with tenant scopes;
    an operator for any tenant, and operator keys."""
    whose = _scope_of(grant, body.tenant) or grant.tenant.name
    if Scope.OPERATOR in body.scopes:
        grant.require(Scope.OPERATOR)
    _, key = await auth.create_api_key(
        conn, whose, body.label, body.scopes, _seconds(body.expires_in_s)
    )
    return NewKey(key=key, info=(await _info(conn, whose, auth.key_prefix(key))))


@router.post("/{prefix}/rotate", response_model=Rotated, openapi_extra=EITHER)
async def rotate_key(prefix: Prefix, body: RotateIn, grant: AnyKey, conn: Connection) -> Rotated:
    """A successor with the same tenant, label and scopes; the old key keeps working for the
    overlap, so clients can switch without an outage."""
    key, previous = await auth.rotate_api_key(
        conn, prefix, timedelta(seconds=body.overlap_s), _scope_of(grant, None),
        _seconds(body.expires_in_s),
    )  # fmt: skip
    info = await _info(conn, previous.tenant, auth.key_prefix(key))
    return Rotated(key=key, info=info, previous=previous)


@router.delete("/{prefix}", response_model=ApiKeyInfo, openapi_extra=EITHER)
async def revoke_key(prefix: Prefix, grant: AnyKey, conn: Connection) -> Any:
    """Revoke a key now (replicas' key caches honour it within KIKI_AUTH_CACHE_TTL_S)."""
    return await auth.revoke_api_key(conn, prefix, _scope_of(grant, None))


async def _info(conn: Connection, tenant: str, prefix: str) -> ApiKeyInfo:
    found = [k for k in await auth.list_api_keys(conn, tenant) if k.prefix == prefix]
    if not found:
        raise NotFound(f"no API key with prefix {prefix!r}")
    return found[-1]
