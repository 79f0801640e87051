"""Tenants, API keys and their scopes.

A key is `kiki_<8-char prefix>_<43-char secret>`: 256 bits of randomness, so a plain SHA-256
is a sound one-way hash (no slow KDF needed), and a lookup is one indexed equality. Only the
hash and the prefix (to tell keys apart in listings) are stored.

A key carries scopes. `read` < `write` < `admin` act on the key's own tenant, each including
the ones before it; `operator` acts on platform-wide state (ad-platform breakers and rate
budgets, every tenant's keys) and includes no tenant scope, so an operator key cannot read a
tenant's data by accident. A key may expire; rotating one makes a successor with the same
tenant, label and scopes and lets the old key live on for an overlap.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from kiki.errors import Forbidden, InvalidInput, NotFound, Unauthenticated

_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_KEY_RE = re.compile(r"^kiki_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}$")


class Tenant(BaseModel):
    id: UUID
    name: str


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    OPERATOR = "operator"


# What holding a scope grants: a tenant scope includes the weaker ones; operator stands alone.
_GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.READ: frozenset({Scope.READ}),
    Scope.WRITE: frozenset({Scope.READ, Scope.WRITE}),
    Scope.ADMIN: frozenset({Scope.READ, Scope.WRITE, Scope.ADMIN}),
    Scope.OPERATOR: frozenset({Scope.OPERATOR}),
}
TENANT_ADMIN: tuple[Scope, ...] = (Scope.READ, Scope.WRITE, Scope.ADMIN)


def parse_scopes(names: Iterable[str]) -> tuple[Scope, ...]:
    """Scopes by name, deduplicated in a stable order; InvalidInput names the unknown one."""
    found: set[Scope] = set()
    for name in names:
        try:
            found.add(Scope(name.strip().lower()))
        except ValueError:
            raise InvalidInput(
                f"unknown scope {name!r}; scopes are {', '.join(s.value for s in Scope)}"
            ) from None
    if not found:
        raise InvalidInput(f"a key needs at least one scope: {', '.join(s.value for s in Scope)}")
    return tuple(s for s in Scope if s in found)


class Grant(BaseModel):
    """What one presented key lets its holder do."""

    tenant: Tenant
    key_id: UUID
    prefix: str
    scopes: tuple[Scope, ...]
    expires_at: datetime | None

    def allows(self, scope: Scope) -> bool:
        return any(scope in _GRANTS[held] for held in self.scopes)

    def require(self, scope: Scope) -> Tenant:
        """The key's tenant when the key holds `scope`; Forbidden naming it otherwise."""
        if not self.allows(scope):
            held = ", ".join(s.value for s in self.scopes)
            raise Forbidden(
                f"this API key ({self.prefix}) lacks the {scope.value!r} scope (it has: {held}); "
                f"use a key with it, made by `kiki keys create --tenant {self.tenant.name} "
                f"--scope {scope.value}`",
                code="scope_missing",
            )
        return self.tenant

    def check_live(self, now: datetime) -> None:
        if self.expires_at is not None and self.expires_at <= now:
            raise Unauthenticated(
                f"API key {self.prefix} expired at {self.expires_at:%Y-%m-%d %H:%M:%S} UTC: "
                "use its successor (`kiki keys rotate` makes one) or create a new key"
            )


class ApiKeyInfo(BaseModel):
    id: UUID
    tenant: str
    label: str
    prefix: str
    scopes: tuple[Scope, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = None
    revoked_at: datetime | None
    rotated_from: UUID | None = None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_api_key() -> tuple[str, str]:
    """A new key and its display prefix."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    prefix = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"kiki_{prefix}_{secrets.token_urlsafe(32)}", prefix


def key_prefix(key: str) -> str:
    """The display prefix of a well-formed key."""
    return key.split("_", 2)[1]


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
    conn: asyncpg.Connection,
    tenant_name: str,
    label: str = "",
    scopes: Iterable[Scope] = TENANT_ADMIN,
    expires_in: timedelta | None = None,
) -> tuple[Tenant, str]:
    """Create a key for the tenant (creating the tenant if needed); the plain key is returned
    once and never stored. By default a full tenant admin that never expires."""
    chosen = parse_scopes(scopes)
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidInput(f"a key's lifetime must be positive, not {expires_in}")
    async with conn.transaction():
        tenant = await ensure_tenant(conn, tenant_name)
        key, _ = await _insert_key(conn, tenant.id, label, chosen, expires_in, None)
    return tenant, key


async def _insert_key(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    label: str,
    scopes: tuple[Scope, ...],
    expires_in: timedelta | None,
    rotated_from: UUID | None,
) -> tuple[str, str]:
    key, prefix = generate_api_key()
    await conn.execute(
        """INSERT INTO api_keys (tenant_id, label, prefix, key_hash, scopes, expires_at,
                                 rotated_from)
           VALUES ($1, $2, $3, $4, $5, now() + $6::interval, $7)""",
        tenant_id, label, prefix, hash_api_key(key), [s.value for s in scopes], expires_in,
        rotated_from,
    )  # fmt: skip
    return key, prefix


_KEY_COLUMNS = """k.id, t.name AS tenant, k.label, k.prefix, k.scopes, k.created_at,
                  k.expires_at, k.last_used_at, k.revoked_at, k.rotated_from"""


async def list_api_keys(
    conn: asyncpg.Connection, tenant_name: str | None = None
) -> list[ApiKeyInfo]:
    # The only interpolation is the constant column list; every value is a parameter.
    rows = await conn.fetch(
        f"""SELECT {_KEY_COLUMNS}
            FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
            WHERE $1::text IS NULL OR t.name = $1
            ORDER BY k.created_at""",  # nosec B608
        tenant_name,
    )
    return [ApiKeyInfo(**dict(r)) for r in rows]


async def _locked_active_key(
    conn: asyncpg.Connection, prefix: str, tenant_name: str | None
) -> asyncpg.Record:
    """The unrevoked key with this prefix (of this tenant, when named), locked for the
    transaction; NotFound otherwise, the same answer whether the key is another tenant's or
    does not exist."""
    # The only interpolation is the constant column list; every value is a parameter.
    row = await conn.fetchrow(
        f"""SELECT {_KEY_COLUMNS}, k.tenant_id
            FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
            WHERE k.prefix = $1 AND k.revoked_at IS NULL AND ($2::text IS NULL OR t.name = $2)
            FOR UPDATE OF k""",  # nosec B608
        prefix, tenant_name,
    )  # fmt: skip
    if row is None:
        raise NotFound(f"no active API key with prefix {prefix!r}; see `kiki keys list`")
    return row


async def revoke_api_key(
    conn: asyncpg.Connection, prefix: str, tenant_name: str | None = None
) -> ApiKeyInfo:
    """Revoke at once (a replica's key cache may honour it for up to KIKI_AUTH_CACHE_TTL_S)."""
    async with conn.transaction():
        row = await _locked_active_key(conn, prefix, tenant_name)
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", row["id"])
    (info,) = [k for k in await list_api_keys(conn, row["tenant"]) if k.id == row["id"]]
    return info


async def rotate_api_key(
    conn: asyncpg.Connection,
    prefix: str,
    overlap: timedelta,
    tenant_name: str | None = None,
    expires_in: timedelta | None = None,
) -> tuple[str, ApiKeyInfo]:
    """A successor to the key (same tenant, label and scopes) and the old key, which now
    expires after `overlap` (or sooner, if it already did) so clients can switch over.

    The successor lives `expires_in`, or as long as the old key was made to live."""
    if overlap < timedelta(0):
        raise InvalidInput(f"the overlap must not be negative, not {overlap}")
    async with conn.transaction():
        old = await _locked_active_key(conn, prefix, tenant_name)
        if old["expires_at"] is not None and old["expires_at"] <= datetime.now(UTC):
            raise InvalidInput(f"API key {prefix} has expired: create a new key instead")
        if expires_in is None and old["expires_at"] is not None:
            expires_in = old["expires_at"] - old["created_at"]
        key, _ = await _insert_key(
            conn, old["tenant_id"], old["label"], parse_scopes(old["scopes"]), expires_in,
            old["id"],
        )  # fmt: skip
        await conn.execute(
            """UPDATE api_keys SET expires_at = least(expires_at, now() + $2::interval)
               WHERE id = $1""",
            old["id"], overlap,
        )  # fmt: skip
    (info,) = [k for k in await list_api_keys(conn, old["tenant"]) if k.id == old["id"]]
    return key, info


async def authenticate(conn: asyncpg.Connection, key: str | None) -> Grant:
    """What an unrevoked, unexpired key grants, or Unauthenticated. Notes the key's last use
    (the lookup and the note are one statement)."""
    if not key:
        raise Unauthenticated("missing API key: send it in the X-API-Key header")
    if not _KEY_RE.match(key):
        raise Unauthenticated("malformed API key: create one with `kiki keys create --tenant NAME`")
    row = await conn.fetchrow(
        """UPDATE api_keys k SET last_used_at = now()
           FROM tenants t
           WHERE t.id = k.tenant_id AND k.key_hash = $1 AND k.revoked_at IS NULL
           RETURNING k.id, k.prefix, k.scopes, k.expires_at, t.id AS tenant_id, t.name""",
        hash_api_key(key),
    )
    if row is None:
        raise Unauthenticated("unknown or revoked API key: create one with `kiki keys create`")
    return _live_grant(row)


def _live_grant(row: asyncpg.Record) -> Grant:
    grant = Grant(
        tenant=Tenant(id=row["tenant_id"], name=row["name"]),
        key_id=row["id"],
        prefix=row["prefix"],
        scopes=parse_scopes(row["scopes"]),
        expires_at=row["expires_at"],
    )
    grant.check_live(datetime.now(UTC))
    return grant


# A console session: a browser's sign-in with a key. The browser holds a random token (in an
# HttpOnly cookie); the database holds its hash and the key it stands for, never the key.
SESSION_TOKEN_BYTES = 32


async def open_session(conn: asyncpg.Connection, key: str, ttl: timedelta) -> tuple[str, Grant]:
    """A new session for a working key: (token, what the key grants). The session ends at
    `ttl`, or earlier when the key expires or is revoked."""
    grant = await authenticate(conn, key)
    token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
    await conn.execute(
        """INSERT INTO console_sessions (token_hash, key_id, expires_at)
           VALUES ($1, $2, now() + $3::interval)""",
        hash_api_key(token), grant.key_id, ttl,
    )  # fmt: skip
    return token, grant


async def session_grant(conn: asyncpg.Connection, token: str) -> Grant:
    """What the session's key grants now: Unauthenticated once the session has ended or its
    key is revoked or expired (so revoking a key signs its sessions out)."""
    row = await conn.fetchrow(
        """SELECT k.id, k.prefix, k.scopes, k.expires_at, t.id AS tenant_id, t.name
           FROM console_sessions s
           JOIN api_keys k ON k.id = s.key_id AND k.revoked_at IS NULL
           JOIN tenants t ON t.id = k.tenant_id
           WHERE s.token_hash = $1 AND s.expires_at > now()""",
        hash_api_key(token),
    )
    if row is None:
        raise Unauthenticated(
            "your console session has ended (signed out, expired, or its API key was "
            "revoked): sign in again with a working key"
        )
    return _live_grant(row)


async def close_session(conn: asyncpg.Connection, token: str) -> None:
    await conn.execute("DELETE FROM console_sessions WHERE token_hash = $1", hash_api_key(token))


class ApiKeyCache:
    """Remembers recent key hash → grant lookups for `ttl_s` seconds, so a hot key costs no
    database round trip; a revoked key stops working within `ttl_s` (an expired one at once:
    callers check `Grant.check_live`). Keyed by `hash_api_key(key)` so plain keys are never
    held in memory longer than a request."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: dict[str, tuple[float, Grant]] = {}

    def get(self, key_hash: str) -> Grant | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key_hash: str, grant: Grant) -> None:
        if len(self._entries) >= self._max:
            now = time.monotonic()
            self._entries = {h: e for h, e in self._entries.items() if e[0] >= now}
            if len(self._entries) >= self._max:
                self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self._ttl_s, grant)
