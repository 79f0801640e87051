"""SyncEngage's customers and messages: how to reach a customer, consent-aware sending, the
delivery log and the in-app inbox."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from pydantic import AwareDatetime

from deployments._serve import Connection, DecimalJSONRoute, Reader, Suppressing, Writer
from deployments.engage.context import Context
from deployments.engage.schemas import CustomerPath
from kiki.db.values import PgText
from kiki.engage import messaging

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute, tags=["messaging"])


@router.put("/customers/{customer_id}", response_model=messaging.Profile)
async def put_customer(
    customer_id: CustomerPath,
    body: messaging.ProfileIn,
    tenant: Writer,
    conn: Connection,
    suppressions: Suppressing,
) -> messaging.Profile:
    """Set how to reach a customer (email, E.164 phone, push token) and their attributes;
    409 `customer_erased` for a customer erased at their request."""
    return await messaging.upsert_profile(conn, tenant.id, customer_id, body, suppressions)


@router.get("/customers/{customer_id}", response_model=messaging.Profile)
async def get_customer(
    customer_id: CustomerPath, tenant: Reader, conn: Connection
) -> messaging.Profile:
    return await messaging.get_profile(conn, tenant.id, customer_id)


@router.post(
    "/message",
    response_model=messaging.MessageRecord,
    status_code=201,
    responses={200: {"description": "a retry: the message logged under the same key"}},
)
async def post_message(
    body: messaging.MessageRequest,
    tenant: Writer,
    ctx: Context,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> messaging.MessageRecord:
    """Send a templated message; its `status` says what happened: `sent`, `refused` (no
    consent, no address, a frequency cap: `reason` says which) or `failed` (the provider's
    error; retry with the same key)."""
    if body.idempotency_key is None and idempotency_key is not None:
        body = body.model_copy(update={"idempotency_key": idempotency_key})
    record, new = await ctx.service.send(tenant.id, body)
    if not new:
        response.status_code = 200
    return record


@router.get("/messages", response_model=list[messaging.MessageRecord])
async def get_messages(
    tenant: Reader,
    conn: Connection,
    customer_id: Annotated[PgText | None, Query(min_length=1, max_length=128)] = None,
    since: AwareDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[messaging.MessageRecord]:
    """The delivery log, newest first."""
    return await messaging.messages(conn, tenant.id, customer_id, since, limit)


@router.get("/inbox/{customer_id}", response_model=list[messaging.InboxItem])
async def get_inbox(
    customer_id: CustomerPath,
    tenant: Reader,
    conn: Connection,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[messaging.InboxItem]:
    """The customer's in-app messages, newest first."""
    return await messaging.inbox(conn, tenant.id, customer_id, limit)
