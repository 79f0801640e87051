"""Outbound webhooks: tenants hear about their invoices (invoice.finalized, invoice.paid, ...).

An outbox: `enqueue` writes one delivery per matching endpoint in the transaction that changes
the invoice, so a notification exists exactly when the change does. `deliver_due` (run by the
billing app's worker) posts them, signed as Stripe signs its own: the header
`Kiki-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the endpoint's secret>`.
A failed delivery is retried with exponential backoff (30 s, 1 min, 2 min, ... at most 6 h
apart) and given up after 8 attempts. Endpoint secrets are stored sealed (kiki.vault), as CRM
credentials are; `seal_plain_secrets` seals those stored before that.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
from pydantic import AnyHttpUrl, Field

from kiki.billing.catalog import FrozenModel
from kiki.errors import ConfigError, InvalidInput, NotFound
from kiki.vault import Vault, is_token

SIGNATURE_HEADER = "Kiki-Signature"
MAX_ATTEMPTS = 8
BACKOFF_S = 30.0
MAX_BACKOFF_S = 6 * 3600.0
EVENT_TYPES = (
    "invoice.finalized",
    "invoice.paid",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "invoice.payment_failed",
    "invoice.refunded",
)
# How long a delivery taken by a worker stays invisible to the others while it is posted.
_LEASE = timedelta(seconds=60)


def sign(secret: str, payload: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    payload: bytes, header: str, secret: str, now: datetime, tolerance_s: float = 300
) -> None:
    """What a tenant's receiver does: check the signature, then the timestamp's age."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        raise InvalidInput(f"{SIGNATURE_HEADER} has no t=<unix time>") from None
    expected = sign(secret, payload, timestamp).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise InvalidInput("signature does not match the payload and the endpoint's secret")
    if abs(now.timestamp() - timestamp) > tolerance_s:
        raise InvalidInput(f"signature timestamp is more than {tolerance_s:.0f}s away")


def backoff(attempts: int, base_s: float = BACKOFF_S) -> timedelta:
    """Wait before attempt `attempts + 1`: base, 2 x base, 4 x base, ... capped at 6 h."""
    return timedelta(seconds=min(base_s * 2 ** (attempts - 1), MAX_BACKOFF_S))


class EndpointIn(FrozenModel):
    url: AnyHttpUrl
    events: tuple[str, ...] | None = Field(
        None, description=f"event types to send (of {', '.join(EVENT_TYPES)}); null = all"
    )


class Endpoint(FrozenModel):
    id: UUID
    url: str
    events: tuple[str, ...] | None
    created_at: datetime


async def create_endpoint(
    conn: asyncpg.Connection, tenant_id: UUID, endpoint: EndpointIn, vault: Vault
) -> tuple[Endpoint, str]:
    """A new endpoint and its signing secret (shown once; stored sealed)."""
    unknown = sorted(set(endpoint.events or ()) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(f"unknown event types {unknown}; choose from {list(EVENT_TYPES)}")
    secret = f"whsec_{secrets.token_urlsafe(32)}"
    row = await conn.fetchrow(
        """INSERT INTO billing_webhook_endpoints (tenant_id, url, secret, events)
           VALUES ($1, $2, $3, $4) RETURNING id, url, events, created_at""",
        tenant_id, str(endpoint.url), vault.seal(secret),
        None if endpoint.events is None else list(endpoint.events),
    )  # fmt: skip
    return Endpoint(**dict(row)), secret


async def seal_plain_secrets(pool: asyncpg.Pool, vault: Vault) -> int:
    """Seal the endpoint secrets stored in plain text before they were encrypted; returns
    how many. A migration cannot (the key is not in the database): the billing worker runs
    this each round. Each update checks the old value, so replicas running it at once never
    seal a secret twice."""
    rows = await pool.fetch("SELECT id, secret FROM billing_webhook_endpoints")
    plain = [(r["id"], r["secret"], vault.seal(r["secret"])) for r in rows
             if not is_token(r["secret"])]  # fmt: skip
    if plain:
        await pool.executemany(
            "UPDATE billing_webhook_endpoints SET secret = $3 WHERE id = $1 AND secret = $2", plain
        )
    return len(plain)


async def list_endpoints(conn: asyncpg.Connection, tenant_id: UUID) -> list[Endpoint]:
    rows = await conn.fetch(
        """SELECT id, url, events, created_at FROM billing_webhook_endpoints
           WHERE tenant_id = $1 ORDER BY created_at""",
        tenant_id,
    )
    return [Endpoint(**dict(r)) for r in rows]


async def delete_endpoint(conn: asyncpg.Connection, tenant_id: UUID, endpoint_id: UUID) -> None:
    status = await conn.execute(
        "DELETE FROM billing_webhook_endpoints WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        endpoint_id,
    )
    if status.endswith(" 0"):
        raise NotFound(f"no webhook endpoint {endpoint_id}")


async def enqueue(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    event_type: str,
    objects: Sequence[dict[str, Any]],
    now: datetime,
) -> int:
    """One delivery per object and endpoint that wants `event_type`; call it inside the
    transaction that makes the change."""
    if not objects:
        return 0
    payloads = [
        json.dumps(
            {
                "id": f"evt_{uuid.uuid4().hex}",
                "type": event_type,
                "created": int(now.timestamp()),
                "data": {"object": obj},
            },
            separators=(",", ":"),
        )
        for obj in objects
    ]
    status = await conn.execute(
        """INSERT INTO billing_webhook_deliveries (tenant_id, endpoint_id, event_type, payload,
                                                   next_attempt_at)
           SELECT $1, e.id, $2, p.payload, $4
           FROM billing_webhook_endpoints e, unnest($3::jsonb[]) AS p(payload)
           WHERE e.tenant_id = $1 AND (e.events IS NULL OR $2 = ANY(e.events))""",
        tenant_id, event_type, payloads, now,
    )  # fmt: skip
    return int(status.rsplit(" ", 1)[1])


async def has_endpoints(conn: asyncpg.Connection, tenant_id: UUID) -> bool:
    """Whether any delivery would be written: lets a bulk caller skip building payloads."""
    return await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM billing_webhook_endpoints WHERE tenant_id = $1)", tenant_id
    )


class DeliveryReport(FrozenModel):
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


class Backlog(FrozenModel):
    """Deliveries not yet made, every tenant's: what an operator watches for endpoints that
    stopped answering or a worker that stopped running."""

    pending: int
    oldest_age_s: float  # 0 when nothing is pending


async def backlog(conn: asyncpg.Connection, now: datetime) -> Backlog:
    row = await conn.fetchrow(
        """SELECT count(*) AS pending, min(created_at) AS oldest
           FROM billing_webhook_deliveries WHERE status = 'pending'"""
    )
    oldest = row["oldest"]
    return Backlog(
        pending=row["pending"],
        oldest_age_s=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
    )


async def deliver_due(
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    vault: Vault,
    now: datetime,
    *,
    limit: int = 100,
    backoff_s: float = BACKOFF_S,
) -> DeliveryReport:
    """Post the deliveries due at `now` (several workers may run: each takes its own)."""
    async with pool.acquire() as conn:
        due = await conn.fetch(
            """UPDATE billing_webhook_deliveries d SET next_attempt_at = $1::timestamptz + $3
               FROM (SELECT id FROM billing_webhook_deliveries
                     WHERE status = 'pending' AND next_attempt_at <= $1
                     ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) due,
                    billing_webhook_endpoints e
               WHERE d.id = due.id AND e.id = d.endpoint_id
               RETURNING d.id, d.payload::text AS payload, d.attempts, e.url, e.secret""",
            now, limit, _LEASE,
        )  # fmt: skip
    if not due:
        return DeliveryReport()

    async def post(row: asyncpg.Record) -> tuple[int | None, str | None]:
        body = row["payload"].encode()
        try:
            secret = vault.open(row["secret"], "the webhook endpoint's secret")
        except ConfigError as exc:  # sealed under another key: retried once the key is back
            return None, exc.message
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, int(now.timestamp())),
        }
        try:
            response = await http.post(row["url"], content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{exc.__class__.__name__}: {exc}"
        ok = 200 <= response.status_code < 300
        return response.status_code, None if ok else f"HTTP {response.status_code}"

    outcomes = await asyncio.gather(*(post(row) for row in due))
    report = {"delivered": 0, "retrying": 0, "failed": 0}
    updates = []
    for row, (status, error) in zip(due, outcomes, strict=True):
        attempts = row["attempts"] + 1
        if error is None:
            state, next_at = "delivered", now
        elif attempts >= MAX_ATTEMPTS:
            state, next_at = "failed", now
        else:
            state, next_at = "pending", now + backoff(attempts, backoff_s)
        report[{"pending": "retrying"}.get(state, state)] += 1
        updates.append((row["id"], state, attempts, next_at, status, error, now))
    async with pool.acquire() as conn:
        await conn.executemany(
            """UPDATE billing_webhook_deliveries SET status = $2, attempts = $3,
                   next_attempt_at = $4, last_status = $5, last_error = $6,
                   delivered_at = CASE WHEN $2 = 'delivered' THEN $7::timestamptz END
               WHERE id = $1""",
            updates,
        )
    return DeliveryReport(**report)
