"""SyncEngage's segments: RFM segments, and rule segments evaluated in PostgreSQL."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from deployments._serve import Connection, DecimalJSONRoute, Reader, Writer
from deployments.engage.schemas import (
    AfterCustomer,
    AsOf,
    Currency,
    RuleQuery,
    SegmentCreate,
    SegmentPath,
)
from kiki.engage import rfm, segments
from kiki.engage.service import today
from kiki.errors import InvalidInput
from kiki.money import normalize_currency

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute, tags=["segments"])


@router.get("/rfm", response_model=list[rfm.RFMSegmentSummary])
async def get_rfm(
    tenant: Reader, conn: Connection, as_of: AsOf = None, currency: Currency = "USD"
) -> list[rfm.RFMSegmentSummary]:
    """RFM segments (champions, at_risk, hibernating, ...) with their sizes."""
    return await rfm.rfm_summary(conn, tenant.id, as_of or today(), normalize_currency(currency))


@router.get("/rfm/customers", response_model=list[rfm.RFMCustomer])
async def get_rfm_customers(
    tenant: Reader,
    conn: Connection,
    segment: Annotated[str | None, Query(description="one of the RFM segment names")] = None,
    as_of: AsOf = None,
    currency: Currency = "USD",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: AfterCustomer = None,
) -> list[rfm.RFMCustomer]:
    if segment is not None and segment not in rfm.SEGMENTS:
        raise InvalidInput(f"segment {segment!r} is unknown; use one of {', '.join(rfm.SEGMENTS)}")
    return await rfm.rfm_customers(
        conn, tenant.id, as_of or today(), normalize_currency(currency), segment, limit, after
    )


@router.post("/segments", status_code=201, response_model=segments.Segment)
async def create_segment(body: SegmentCreate, tenant: Writer, conn: Connection) -> segments.Segment:
    """Store a rule segment (see the README for the rule language)."""
    return await segments.create(conn, tenant.id, body.segment_id, body)


@router.get("/segments", response_model=list[segments.Segment])
async def list_segments(tenant: Reader, conn: Connection) -> list[segments.Segment]:
    return await segments.list_segments(conn, tenant.id)


@router.get("/segments/{segment_id}", response_model=segments.Segment)
async def get_segment(
    segment_id: SegmentPath, tenant: Reader, conn: Connection
) -> segments.Segment:
    return await segments.get(conn, tenant.id, segment_id)


@router.put("/segments/{segment_id}", response_model=segments.Segment)
async def put_segment(
    segment_id: SegmentPath, body: segments.SegmentIn, tenant: Writer, conn: Connection
) -> segments.Segment:
    return await segments.replace(conn, tenant.id, segment_id, body)


@router.delete("/segments/{segment_id}", status_code=204)
async def delete_segment(segment_id: SegmentPath, tenant: Writer, conn: Connection) -> None:
    await segments.delete(conn, tenant.id, segment_id)


@router.get("/segments/{segment_id}/customers", response_model=segments.Members)
async def segment_customers(
    segment_id: SegmentPath,
    tenant: Reader,
    conn: Connection,
    as_of: AsOf = None,
    currency: Currency = "USD",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    after: AfterCustomer = None,
) -> segments.Members:
    """The segment's members now (or as of a day), evaluated in PostgreSQL."""
    segment = await segments.get(conn, tenant.id, segment_id)
    return await segments.evaluate(
        conn, tenant.id, segment.rule, as_of or today(), normalize_currency(currency),
        limit, after,
    )  # fmt: skip


@router.post("/segments/preview", response_model=segments.Members)
async def preview_segment(
    body: RuleQuery,
    tenant: Reader,
    conn: Connection,
    as_of: AsOf = None,
    currency: Currency = "USD",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> segments.Members:
    """Evaluate a rule without storing it."""
    return await segments.evaluate(
        conn, tenant.id, body.rule, as_of or today(), normalize_currency(currency), limit
    )
