"""SyncShield's consent registry and GDPR endpoints, as a router the shield app includes.

Thin: each route authenticates, takes a pooled connection and calls `kiki.shield.consent` or
`kiki.gdpr`; domain errors become `{"error": ...}` bodies through the app's handlers.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from pydantic import BaseModel, Field, RootModel

from deployments._serve import (
    Admin,
    Connection,
    DecimalJSONRoute,
    Reader,
    Suppressing,
    Writer,
)
from kiki import gdpr
from kiki.shield.consent import (
    ConsentHistory,
    ConsentRecord,
    CustomerId,
    Purpose,
    Recorded,
    customer_consent,
    filter_audience,
    record_consent,
)

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute)


CustomerPath = Annotated[str, Path(min_length=1, max_length=128, description="your customer id")]


class ConsentBatch(BaseModel):
    records: list[ConsentRecord] = Field(min_length=1, max_length=1000)


class AudienceQuery(BaseModel):
    purpose: Purpose
    customer_ids: list[CustomerId] = Field(min_length=1, max_length=10_000)


class Audience(BaseModel):
    purpose: Purpose
    allowed: list[str]
    denied: list[str]


class CustomerExport(RootModel[dict[str, list[dict[str, Any]]]]):
    """The customer's rows, by table."""


class Erasure(BaseModel):
    erased: dict[str, int] = Field(description="rows deleted, by table")


def _requested_by(request: Request) -> str:
    """The API key's display prefix (as `kiki keys list` shows it), for the audit trail; only
    called after the tenant dependency has accepted the key, so it has the `kiki_<prefix>_` form."""
    return request.headers["X-API-Key"].split("_")[1]


@router.post("/consent", status_code=201, response_model=Recorded, tags=["consent"])
async def post_consent(
    body: ConsentBatch,
    tenant: Writer,
    conn: Connection,
    suppressions: Suppressing,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="for records without their own key: record i gets '<this>:<i>'",
        ),
    ] = None,
) -> Recorded:
    """Record grants and withdrawals, all or none; a retried batch is applied once, records
    of customers erased at their request are dropped (counted in `suppressed`)."""
    records = body.records
    if idempotency_key is not None:
        records = [
            r
            if r.idempotency_key
            else r.model_copy(update={"idempotency_key": f"{idempotency_key}:{i}"})
            for i, r in enumerate(records)
        ]
    return await record_consent(conn, tenant.id, records, suppressions)


@router.get("/consent/{customer_id}", response_model=ConsentHistory, tags=["consent"])
async def get_consent(
    customer_id: CustomerPath, tenant: Reader, conn: Connection
) -> ConsentHistory:
    """The customer's current consent per purpose (absent = not given) and its history."""
    return await customer_consent(conn, tenant.id, customer_id)


@router.post("/consent/audience", response_model=Audience, tags=["consent"])
async def post_audience(body: AudienceQuery, tenant: Reader, conn: Connection) -> Audience:
    """Which of these customers may be reached for this purpose now."""
    allowed, denied = await filter_audience(conn, tenant.id, body.customer_ids, body.purpose)
    return Audience(purpose=body.purpose, allowed=allowed, denied=denied)


@router.get("/gdpr/customers/{customer_id}/export", response_model=CustomerExport, tags=["gdpr"])
async def export_customer(
    customer_id: CustomerPath, request: Request, tenant: Admin, conn: Connection
) -> CustomerExport:
    """Everything stored about the customer (right of access); the request is audited."""
    rows = await gdpr.export_customer(conn, tenant.id, customer_id, _requested_by(request))
    return CustomerExport(rows)


@router.delete("/gdpr/customers/{customer_id}", response_model=Erasure, tags=["gdpr"])
async def erase_customer(
    customer_id: CustomerPath,
    request: Request,
    tenant: Admin,
    conn: Connection,
    suppressions: Suppressing,
) -> Erasure:
    """Delete everything stored about the customer (right to erasure) and suppress them, so
    no CRM sync, ingestion or message brings them back; audited by a hash."""
    erased = await gdpr.erase_customer(
        conn, tenant.id, customer_id, _requested_by(request), suppressions
    )
    return Erasure(erased=erased)
