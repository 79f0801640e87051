"""The GDPR consent registry: who agreed to what, when, and through which channel.

Consent is an append-only history of events per (tenant, customer, purpose); the current
state of a purpose is its latest event by `recorded_at` (when the customer acted), ties broken
by arrival order. A purpose never recorded means no consent, so the safe answer is the default.
Events of a customer erased at their request (kiki.gdpr) are dropped and counted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated
from uuid import UUID

import asyncpg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool

from kiki.db.values import PgText
from kiki.errors import InvalidInput, NotFound
from kiki.gdpr import Suppressions

# A client clock may run a little fast; more than this and a future-dated grant would outrank
# every later withdrawal, so it is refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)

CustomerId = Annotated[PgText, Field(min_length=1, max_length=128, description="your customer id")]


class Purpose(StrEnum):
    ADS_PERSONALIZATION = "ads_personalization"
    AD_USER_DATA = "ad_user_data"
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


class ConsentRecord(BaseModel):
    """One grant or withdrawal, as a caller reports it."""

    model_config = ConfigDict(extra="forbid")

    customer_id: CustomerId
    purpose: Purpose
    granted: StrictBool = Field(description="true = given, false = withdrawn")
    source: PgText = Field(
        min_length=1, max_length=64, description="where it was captured: web_form, crm_import..."
    )
    recorded_at: AwareDatetime | None = Field(
        None, description="when the customer acted, with a UTC offset; default: now"
    )
    idempotency_key: PgText | None = Field(
        None, min_length=1, max_length=255, description="a retried record with it applies once"
    )


class Recorded(BaseModel):
    recorded: int = Field(description="new events; records already stored (retries) not counted")
    suppressed: int = Field(description="records of customers erased at their request, dropped")


class ConsentState(BaseModel):
    customer_id: str
    purpose: Purpose
    granted: bool
    source: str
    recorded_at: datetime


class ConsentHistory(BaseModel):
    """A customer's consent: the state of each recorded purpose, and every event behind it."""

    customer_id: str
    purposes: dict[Purpose, ConsentState]
    history: list[ConsentState]


_STATE_COLUMNS = "customer_id, purpose, granted, source, recorded_at"


async def record_consent(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    records: list[ConsentRecord],
    suppressions: Suppressions,
) -> Recorded:
    """Store a batch atomically and say how many events were new: a record whose
    idempotency key is already stored (a retried batch) is skipped, one of an erased
    customer dropped."""
    async with conn.transaction():
        now: datetime = await conn.fetchval("SELECT now()")
        for index, r in enumerate(records):
            if r.recorded_at is not None and r.recorded_at > now + MAX_CLOCK_SKEW:
                raise InvalidInput(
                    f"records[{index}].recorded_at {r.recorded_at.isoformat()} is in the future "
                    f"(server time {now.isoformat()}); send when the customer acted"
                )
        records, suppressed = await suppressions.keep(
            conn, tenant_id, records, lambda r: r.customer_id
        )
        status = await conn.execute(
            """INSERT INTO consent_events
                   (tenant_id, customer_id, purpose, granted, source, recorded_at, idempotency_key)
               SELECT $1, r.customer_id, r.purpose, r.granted, r.source,
                      coalesce(r.recorded_at, now()), r.idempotency_key
               FROM unnest($2::text[], $3::text[], $4::boolean[], $5::text[],
                           $6::timestamptz[], $7::text[])
                    WITH ORDINALITY
                    AS r(customer_id, purpose, granted, source, recorded_at, idempotency_key, n)
               ORDER BY r.n
               ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL
               DO NOTHING""",
            tenant_id,
            [r.customer_id for r in records],
            [r.purpose.value for r in records],
            [r.granted for r in records],
            [r.source for r in records],
            [r.recorded_at for r in records],
            [r.idempotency_key for r in records],
        )
    return Recorded(recorded=int(status.rsplit(" ", 1)[1]), suppressed=suppressed)


async def current_consent(
    conn: asyncpg.Connection, tenant_id: UUID, customer_id: str
) -> dict[Purpose, ConsentState]:
    """The latest event of each purpose the customer has one for."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT ON (purpose) {_STATE_COLUMNS}
            FROM consent_events WHERE tenant_id = $1 AND customer_id = $2
            ORDER BY purpose, recorded_at DESC, id DESC""",
        tenant_id, customer_id,
    )  # fmt: skip
    return {Purpose(r["purpose"]): ConsentState(**dict(r)) for r in rows}


async def consent_history(
    conn: asyncpg.Connection, tenant_id: UUID, customer_id: str
) -> list[ConsentState]:
    """Every event of the customer, oldest first (the order in which they took effect)."""
    rows = await conn.fetch(
        f"""SELECT {_STATE_COLUMNS}
            FROM consent_events WHERE tenant_id = $1 AND customer_id = $2
            ORDER BY recorded_at, id""",
        tenant_id, customer_id,
    )  # fmt: skip
    return [ConsentState(**dict(r)) for r in rows]


async def customer_consent(
    conn: asyncpg.Connection, tenant_id: UUID, customer_id: str
) -> ConsentHistory:
    """State and history read from one snapshot, so the two always agree."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        history = await consent_history(conn, tenant_id, customer_id)
        purposes = await current_consent(conn, tenant_id, customer_id)
    if not history:
        raise NotFound(f"no consent recorded for customer {customer_id!r}")
    return ConsentHistory(customer_id=customer_id, purposes=purposes, history=history)


async def filter_audience(
    conn: asyncpg.Connection, tenant_id: UUID, customer_ids: list[str], purpose: Purpose
) -> tuple[list[str], list[str]]:
    """Split customers into (allowed, denied) for a purpose, in the order given, each once.

    Allowed only when the latest event grants it: unknown customers are denied. One query for
    the whole list, however long.
    """
    rows = await conn.fetch(
        """SELECT customer_id FROM (
               SELECT DISTINCT ON (customer_id) customer_id, granted
               FROM consent_events
               WHERE tenant_id = $1 AND purpose = $2 AND customer_id = ANY($3::text[])
               ORDER BY customer_id, recorded_at DESC, id DESC
           ) latest
           WHERE granted""",
        tenant_id, purpose.value, customer_ids,
    )  # fmt: skip
    granted = {r["customer_id"] for r in rows}
    unique = list(dict.fromkeys(customer_ids))
    return [c for c in unique if c in granted], [c for c in unique if c not in granted]
