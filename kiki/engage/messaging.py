"""Sending one message: consent, contact, frequency caps, idempotency and the delivery log.

A message to a customer erased at their request (kiki.gdpr) is refused with Erased (409)
before anything is logged: a log row would store them again. Every other request leaves one
row in `engage_messages`, the delivery log, keyed by the tenant's
idempotency key (a unique index): `refused` with the reason (no consent in SyncShield's
registry, no address on file, a frequency cap), or `sending` and then `sent` with the
provider's id, or `failed` with the provider's error. A retry with the same key returns the
row as it stands, except a `failed` one, which is tried again. The checks and the `sending`
row are written under a per-customer lock, so two concurrent sends cannot both slip under a cap.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import asyncpg
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from kiki.db.values import PgText, refuse_nul
from kiki.engage.channels.base import Channel, MessageChannel, Outgoing
from kiki.engage.templates import generic_context, render
from kiki.errors import Conflict, KikiError, NotFound
from kiki.gdpr import Erased, Suppressions
from kiki.shield import CustomerId, Purpose, current_consent

PURPOSES: dict[Channel, Purpose | None] = {
    "email": Purpose.EMAIL,
    "sms": Purpose.SMS,
    "push": Purpose.PUSH,
    "in_app": None,  # shown only inside the product the customer is using: no opt-in purpose
}
ADDRESS_FIELD: dict[Channel, str] = {"email": "email", "sms": "phone", "push": "push_token"}
Variables = Annotated[
    dict[Annotated[PgText, Field(max_length=100)], Annotated[PgText, Field(max_length=500)]],
    Field(max_length=20),
]


class ProfileIn(BaseModel):
    """How to reach a customer and what templates may say about them."""

    model_config = ConfigDict(extra="forbid")

    email: PgText | None = Field(
        None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", description="address"
    )
    phone: str | None = Field(None, pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164")
    push_token: PgText | None = Field(None, min_length=1, max_length=4096)
    first_name: PgText | None = Field(None, min_length=1, max_length=100)
    attributes: dict[Annotated[PgText, Field(max_length=100)], PgText | int | bool] = Field(
        default_factory=dict, max_length=50
    )


class Profile(ProfileIn):
    customer_id: str
    updated_at: datetime


class MessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: Annotated[CustomerId, AfterValidator(refuse_nul)]
    channel: Channel
    template: PgText = Field(min_length=1, max_length=64)
    personalization: bool = True
    variables: Variables = Field(default_factory=dict)
    idempotency_key: PgText | None = Field(
        None, min_length=1, max_length=255, description="a retry with it sends at most once"
    )


class MessageRecord(BaseModel):
    message_id: int
    idempotency_key: str
    customer_id: str
    channel: Channel
    template: str
    status: str = Field(description="refused, sending, sent or failed")
    reason: str | None
    provider_id: str | None
    subject: str | None
    body: str | None
    created_at: datetime
    updated_at: datetime


class Caps(BaseModel):
    """Messages a customer may receive, all channels together (refused ones do not count)."""

    per_day: int = Field(3, ge=1)
    per_week: int = Field(10, ge=1)


Personalize = Callable[[str, Profile | None], Awaitable[dict[str, Any]]]
_MESSAGE_COLUMNS = """id AS message_id, idempotency_key, customer_id, channel, template, status,
    reason, provider_id, subject, body, created_at, updated_at"""


async def upsert_profile(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    customer_id: str,
    body: ProfileIn,
    suppressions: Suppressions,
) -> Profile:
    """Store the profile, unless the customer was erased (Erased, 409)."""
    async with conn.transaction():
        await suppressions.refuse(conn, tenant_id, customer_id)
        row = await conn.fetchrow(
            """INSERT INTO engage_customers
                   (tenant_id, customer_id, email, phone, push_token, first_name, attributes)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (tenant_id, customer_id) DO UPDATE SET email = $3, phone = $4,
                   push_token = $5, first_name = $6, attributes = $7, updated_at = now()
               RETURNING *""",
            tenant_id, customer_id, body.email, body.phone, body.push_token, body.first_name,
            json.dumps(body.attributes),
        )  # fmt: skip
    return _profile(row)


def _profile(row: asyncpg.Record) -> Profile:
    data = {k: row[k] for k in ("customer_id", "email", "phone", "push_token", "first_name")}
    return Profile(**data, attributes=json.loads(row["attributes"]), updated_at=row["updated_at"])


async def get_profile(conn: asyncpg.Connection, tenant_id: UUID, customer_id: str) -> Profile:
    row = await conn.fetchrow(
        "SELECT * FROM engage_customers WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id,
        customer_id,
    )
    if row is None:
        raise NotFound(f"no profile for customer {customer_id}; PUT /customers/{customer_id}")
    return _profile(row)


async def _find_profile(conn: asyncpg.Connection, tenant_id: UUID, customer_id: str):  # type: ignore[no-untyped-def]
    try:
        return await get_profile(conn, tenant_id, customer_id)
    except NotFound:
        return None


async def _refusal(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    request: MessageRequest,
    profile: Profile | None,
    caps: Caps,
    now: datetime,
) -> str | None:
    """Why this message may not be sent now, or None."""
    purpose = PURPOSES[request.channel]
    if purpose is not None:
        state = (await current_consent(conn, tenant_id, request.customer_id)).get(purpose)
        if state is None:
            return (
                f"no consent: customer {request.customer_id} has no {purpose.value} consent "
                "in the consent registry (POST /shield/api/v1/consent records one)"
            )
        if not state.granted:
            return (
                f"no consent: customer {request.customer_id} withdrew {purpose.value} consent "
                f"on {state.recorded_at.isoformat()} (source {state.source})"
            )
    field = ADDRESS_FIELD.get(request.channel)
    if field and (profile is None or getattr(profile, field) is None):
        return (
            f"no address: customer {request.customer_id} has no {field} on file "
            f"(PUT /engage/api/v1/customers/{request.customer_id})"
        )
    day, week = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE created_at > $3::timestamptz - interval '1 day'),
                  count(*) FILTER (WHERE created_at > $3::timestamptz - interval '7 days')
           FROM engage_messages
           WHERE tenant_id = $1 AND customer_id = $2 AND status IN ('sending', 'sent')
             AND created_at > $3::timestamptz - interval '7 days'""",
        tenant_id, request.customer_id, now,
    )  # fmt: skip
    if day >= caps.per_day:
        return f"frequency cap: {day} messages to this customer in the last 24 hours"
    if week >= caps.per_week:
        return f"frequency cap: {week} messages to this customer in the last 7 days"
    return None


async def _log(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    key: str,
    request: MessageRequest,
    status: str,
    reason: str | None,
    rendered: tuple[str, str] | None,
    retry_of: int | None,
) -> MessageRecord:
    subject, body = rendered or (None, None)
    if retry_of is not None:
        row = await conn.fetchrow(
            f"""UPDATE engage_messages SET status = $2, reason = $3, subject = $4, body = $5,
                    provider_id = NULL, updated_at = now()
                WHERE id = $1 RETURNING {_MESSAGE_COLUMNS}""",
            retry_of, status, reason, subject, body,
        )  # fmt: skip
    else:
        row = await conn.fetchrow(
            f"""INSERT INTO engage_messages (tenant_id, idempotency_key, customer_id, channel,
                    template, status, reason, subject, body)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_MESSAGE_COLUMNS}""",
            tenant_id, key, request.customer_id, request.channel, request.template, status,
            reason, subject, body,
        )  # fmt: skip
    return MessageRecord(**dict(row))


async def _finish(
    pool: asyncpg.Pool, message_id: int, status: str, reason: str | None, provider_id: str | None
) -> MessageRecord:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"""UPDATE engage_messages SET status = $2, reason = $3, provider_id = $4,
                    updated_at = now() WHERE id = $1 RETURNING {_MESSAGE_COLUMNS}""",
            message_id, status, reason, provider_id,
        )  # fmt: skip
    if row is None:  # erased (with its log) while the provider had it
        raise Erased(
            f"message {message_id} was handed to the provider, but its customer was erased at "
            "their request meanwhile and the message's record with them"
        )
    return MessageRecord(**dict(row))


async def _earlier(
    conn: asyncpg.Connection, tenant_id: UUID, key: str, request: MessageRequest
) -> MessageRecord | None:
    """The message an earlier request with this idempotency key logged; the key reused for
    another message is a conflict."""
    existing = await conn.fetchrow(
        f"""SELECT {_MESSAGE_COLUMNS} FROM engage_messages
            WHERE tenant_id = $1 AND idempotency_key = $2""",
        tenant_id, key,
    )  # fmt: skip
    if existing is None:
        return None
    same = (existing["customer_id"], existing["channel"], existing["template"]) == (
        request.customer_id, request.channel, request.template,
    )  # fmt: skip
    if not same:
        raise Conflict(
            f"idempotency key {key!r} was used for another message "
            f"({existing['channel']} {existing['template']} to {existing['customer_id']})"
        )
    return MessageRecord(**dict(existing))


async def send_message(
    pool: asyncpg.Pool,
    tenant_id: UUID,
    request: MessageRequest,
    channels: Mapping[Channel, MessageChannel],
    personalize: Personalize,
    caps: Caps,
    suppressions: Suppressions,
) -> tuple[MessageRecord, bool]:
    """Send (or refuse) and log one message; returns the log row and whether this call wrote
    it (False: an earlier request with the same idempotency key did). Erased (409) for a
    customer erased at their request, nothing logged."""
    key = request.idempotency_key or f"auto-{uuid.uuid4().hex}"
    async with pool.acquire() as conn:
        profile = await _find_profile(conn, tenant_id, request.customer_id)
    context = generic_context(request.variables)
    if request.personalization:
        context |= await personalize(request.customer_id, profile)
    rendered = render(request.template, context)  # a bad template fails before anything is logged

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('engage:' || $1::text || ':' || $2))",
            str(tenant_id), request.customer_id,
        )  # fmt: skip
        await suppressions.refuse(conn, tenant_id, request.customer_id)
        existing = await _earlier(conn, tenant_id, key, request)
        if existing is not None and existing.status != "failed":
            return existing, False
        retry_of = existing.message_id if existing is not None else None
        now: datetime = await conn.fetchval("SELECT now()")
        reason = await _refusal(conn, tenant_id, request, profile, caps, now)
        if reason is None and request.channel not in channels:
            reason = (
                f"{request.channel} is not configured on this platform (see README: SyncEngage)"
            )
            record = await _log(conn, tenant_id, key, request, "failed", reason, rendered, retry_of)
            return record, True
        status = "refused" if reason else "sending"
        record = await _log(conn, tenant_id, key, request, status, reason, rendered, retry_of)
    if reason:
        return record, True

    address = request.customer_id
    if request.channel in ADDRESS_FIELD and profile is not None:
        address = getattr(profile, ADDRESS_FIELD[request.channel])
    outgoing = Outgoing(
        message_id=record.message_id,
        tenant_id=str(tenant_id),
        customer_id=request.customer_id,
        to=address,
        subject=rendered[0],
        body=rendered[1],
    )
    try:
        provider_id = await channels[request.channel].send(outgoing)
    except KikiError as exc:  # Rejected, Unavailable, RateLimited: the log says why
        return await _finish(pool, record.message_id, "failed", exc.message, None), True
    return await _finish(pool, record.message_id, "sent", None, provider_id), True


async def messages(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    customer_id: str | None,
    since: datetime | None,
    limit: int,
) -> list[MessageRecord]:
    """The delivery log, newest first."""
    rows = await conn.fetch(
        f"""SELECT {_MESSAGE_COLUMNS} FROM engage_messages
            WHERE tenant_id = $1 AND ($2::text IS NULL OR customer_id = $2)
              AND ($3::timestamptz IS NULL OR created_at >= $3)
            ORDER BY created_at DESC, id DESC LIMIT $4""",
        tenant_id, customer_id, since, limit,
    )  # fmt: skip
    return [MessageRecord(**dict(r)) for r in rows]


class InboxItem(BaseModel):
    inbox_id: int
    message_id: int
    title: str
    body: str
    created_at: datetime
    read_at: datetime | None


async def inbox(
    conn: asyncpg.Connection, tenant_id: UUID, customer_id: str, limit: int
) -> list[InboxItem]:
    rows = await conn.fetch(
        """SELECT id AS inbox_id, message_id, title, body, created_at, read_at FROM engage_inbox
           WHERE tenant_id = $1 AND customer_id = $2 ORDER BY created_at DESC, id DESC
           LIMIT $3""",
        tenant_id, customer_id, limit,
    )  # fmt: skip
    return [InboxItem(**dict(r)) for r in rows]
