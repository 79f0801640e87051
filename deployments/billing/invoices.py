"""Billing's usage in and invoices out: usage events, closing periods, invoices (with PDFs),
their status, payments and refunds."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Query, Response

from deployments._serve import Admin, Connection, DecimalJSONRoute, Reader, Writer
from deployments.billing.context import BillingContext, Context
from deployments.billing.schemas import (
    CloseIn,
    CustomerQuery,
    EventsIn,
    InvoiceView,
    PaymentView,
    RefundIn,
)
from kiki.billing import metering, payments, repository
from kiki.billing.closing import CloseReport, close_period
from kiki.billing.invoice import InvoiceStatus
from kiki.billing.metering import IngestResult
from kiki.billing.pdf import render_invoice
from kiki.billing.rounding import exact_minor
from kiki.errors import NotFound

router = APIRouter(prefix="/api/v1", route_class=DecimalJSONRoute)


@router.post("/events", response_model=IngestResult, tags=["usage"])
async def post_events(body: EventsIn, tenant: Writer, conn: Connection) -> Any:
    """Up to 10,000 usage events; each `transaction_id` counts once, however often it is
    sent. `duplicates` counts the events already stored (retries)."""
    return await metering.ingest(conn, tenant.id, body.events)


@router.post("/periods/close", response_model=CloseReport, tags=["invoices"])
async def close(body: CloseIn, tenant: Admin, ctx: Context, conn: Connection) -> Any:
    """Invoice every period that ended by `as_of` (what `kiki billing close-period` runs)."""
    return await close_period(conn, tenant, body.as_of or ctx.clock.now())


@router.get("/invoices", response_model=list[InvoiceView], tags=["invoices"])
async def list_invoices(
    tenant: Reader,
    conn: Connection,
    customer_id: CustomerQuery = None,
    status: InvoiceStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    found = await repository.list_invoices(conn, tenant.id, customer_id, status, limit)
    return [InvoiceView.of(i) for i in found]


@router.get("/invoices/{invoice_id}", response_model=InvoiceView, tags=["invoices"])
async def get_invoice(invoice_id: UUID, tenant: Reader, conn: Connection) -> Any:
    return InvoiceView.of(await repository.get_invoice(conn, tenant.id, invoice_id))


@router.get(
    "/invoices/{invoice_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
    tags=["invoices"],
)
async def invoice_pdf(invoice_id: UUID, tenant: Reader, conn: Connection) -> Response:
    invoice = await repository.get_invoice(conn, tenant.id, invoice_id)
    customer = await repository.get_customer(conn, tenant.id, invoice.customer_id)
    name = invoice.number or str(invoice.id)
    return Response(
        render_invoice(invoice, customer, tenant.name),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'},
    )


async def _mark(
    invoice_id: UUID,
    target: InvoiceStatus,
    tenant_id: UUID,
    conn: asyncpg.Connection,
    ctx: BillingContext,
) -> InvoiceView:
    async with conn.transaction():
        invoice = await payments.mark(conn, tenant_id, invoice_id, target, ctx.clock.now())
    return InvoiceView.of(invoice)


@router.post("/invoices/{invoice_id}/void", response_model=InvoiceView, tags=["invoices"])
async def void(invoice_id: UUID, tenant: Admin, ctx: Context, conn: Connection) -> Any:
    return await _mark(invoice_id, InvoiceStatus.VOID, tenant.id, conn, ctx)


@router.post(
    "/invoices/{invoice_id}/mark-uncollectible", response_model=InvoiceView, tags=["invoices"]
)
async def mark_uncollectible(
    invoice_id: UUID, tenant: Admin, ctx: Context, conn: Connection
) -> Any:
    return await _mark(invoice_id, InvoiceStatus.UNCOLLECTIBLE, tenant.id, conn, ctx)


@router.post("/invoices/{invoice_id}/pay", response_model=PaymentView, tags=["invoices"])
async def pay(invoice_id: UUID, tenant: Admin, ctx: Context) -> Any:
    """Charge the customer's payment method now, through the customer's gateway (a Stripe
    PaymentIntent, a PayPal order). A PayPal customer without a vaulted token gets the
    payment `processing` with the `approval_url` to send the payer to."""
    payment = await payments.pay(
        await ctx.pool(), ctx.payments_configured(), tenant.id, invoice_id, ctx.clock.now()
    )
    return PaymentView.of(payment)


@router.get("/invoices/{invoice_id}/payment", response_model=PaymentView, tags=["invoices"])
async def get_payment(invoice_id: UUID, tenant: Reader, conn: Connection) -> Any:
    payment = await repository.get_payment(conn, tenant.id, invoice_id)
    if payment is None:
        await repository.get_invoice(conn, tenant.id, invoice_id)  # 404 for a stranger's
        raise NotFound(f"invoice {invoice_id} has no payment yet; POST .../pay first")
    return PaymentView.of(payment)


@router.post("/invoices/{invoice_id}/refund", response_model=InvoiceView, tags=["invoices"])
async def refund(invoice_id: UUID, body: RefundIn, tenant: Admin, ctx: Context) -> Any:
    pool = await ctx.pool()
    amount = None
    if body.amount is not None:
        async with pool.acquire() as conn:
            invoice = await repository.get_invoice(conn, tenant.id, invoice_id)
        amount = exact_minor(body.amount, invoice.currency)
    refunded = await payments.refund(
        pool, ctx.gateways, tenant.id, invoice_id, amount, ctx.clock.now()
    )
    return InvoiceView.of(refunded)
