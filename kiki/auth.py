"""Tenants and API keys.

A key is `kiki_<8-char prefix>_<43-char secret>`: 256 bits of randomness, so a plain SHA-256
is a sound one-way hash (no slow KDF needed), and a lookup is one indexed equality. Only the
hash and the prefix (to tell keys apart in listings) are stored.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from datetime import datetime
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from kiki.errors import InvalidInput, NotFound, Unauthenticated

_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_KEY_RE = re.compile(r"^kiki_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}$")


class Tenant(BaseModel):
    id: UUID
    name: str


class ApiKeyInfo(BaseModel):
    id: UUID
    tenant: str
    label: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_api_key() -> tuple[str, str]:
    """A new key and its display prefix."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"kiki_{prefix}_{secrets.token_urlsafe(32)}", prefix


def check_tenant_name(name: str) -> str:
    if not _TENANT_RE.match(name):
        raise InvalidInput(
            f"tenant name {name!r} must be 1-64 characters of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


async def ensure_tenant(conn: asyncpg.Connection, name: str) -> Tenant:
    """The tenant called `name`, created if missing."""
    check_tenant_name(name)
    row = await conn.fetchrow(
        """INSERT INTO tenants (name) VALUES ($1)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
           RETURNING id, name""",
        name,
    )
    return Tenant(id=row["id"], name=row["name"])


async def create_api_key(
    conn: asyncpg.Connection, tenant_name: str, label: str = ""
) -> tuple[Tenant, str]:
    """Create a key for the tenant (creating the tenant if needed); the plain key is returned
    once and never stored."""
    async with conn.transaction():
        tenant = await ensure_tenant(conn, tenant_name)
        key, prefix = generate_api_key()
        await conn.execute(
            "INSERT INTO api_keys (tenant_id, label, prefix, key_hash) VALUES ($1, $2, $3, $4)",
            tenant.id, label, prefix, hash_api_key(key),
        )  # fmt: skip
    return tenant, key


async def list_api_keys(
    conn: asyncpg.Connection, tenant_name: str | None = None
) -> list[ApiKeyInfo]:
    rows = await conn.fetch(
        """SELECT k.id, t.name AS tenant, k.label, k.prefix, k.created_at, k.revoked_at
           FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
           WHERE $1::text IS NULL OR t.name = $1
           ORDER BY k.created_at""",
        tenant_name,
    )
    return [ApiKeyInfo(**dict(r)) for r in rows]


async def revoke_api_key(conn: asyncpg.Connection, prefix: str) -> None:
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL", prefix
    )
    if status.endswith(" 0"):
        raise NotFound(f"no active API key with prefix {prefix!r}; see `kiki keys list`")


async def authenticate(conn: asyncpg.Connection, key: str | None) -> Tenant:
    """The tenant that owns an active key, or Unauthenticated."""
    if not key:
        raise Unauthenticated("missing API key: send it in the X-API-Key header")
    if not _KEY_RE.match(key):
        raise Unauthenticated("malformed API key: create one with `kiki keys create --tenant NAME`")
    row = await conn.fetchrow(
        """SELECT t.id, t.name FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
           WHERE k.key_hash = $1 AND k.revoked_at IS NULL""",
        hash_api_key(key),
    )
    if row is None:
        raise Unauthenticated("unknown or revoked API key: create one with `kiki keys create`")
    return Tenant(id=row["id"], name=row["name"])


class ApiKeyCache:
    """Remembers recent key hash → tenant lookups for `ttl_s` seconds, so a hot key costs no
    database round trip; a revoked key stops working within `ttl_s`. Keyed by
    `hash_api_key(key)` so plain keys are never held in memory longer than a request."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[str, tuple[float, Tenant]] = {}

    def get(self, key_hash: str) -> Tenant | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key_hash: str, tenant: Tenant) -> None:
        if len(self._entries) >= self._max:
            now = time.monotonic()
            self._entries = {h: e for h, e in self._entries.items() if e[0] >= now}
            if len(self._entries) >= self._max:
                self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self._ttl_s, tenant)
