"""Where PayPal sends a payer back from an approval link. No API key: it is the payer's browser
following PayPal's redirect. The invoice id in the path KIKI gave PayPal and the order id PayPal
adds (`token`) must name a PayPal payment KIKI is waiting on, or the answer is the 404 of an
invoice nobody has (kiki.billing.payments.settle_order); the tenant is the invoice's own."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import RedirectResponse

from deployments._serve import DecimalJSONRoute
from deployments.billing.context import BillingContext, Context
from kiki.billing import payments
from kiki.billing.invoice import InvoiceStatus

router = APIRouter(route_class=DecimalJSONRoute, tags=["payments"])

Invoice = Annotated[UUID, Query(description="the invoice KIKI put in the URL it gave PayPal")]
Order = Annotated[
    str,
    Query(description="PayPal's order id, which PayPal adds to the URL", pattern=r"^[\w-]{1,64}$"),
]
REDIRECT = {
    303: {"description": "the payer goes on to the page set in the settings"},
    404: {"description": "no PayPal payment of that invoice waits on that order"},
    409: {"description": "PayPal is not configured here (the error says what to set)"},
}


@router.get("/paypal/return", status_code=303, response_class=RedirectResponse, responses=REDIRECT)
async def paypal_return(invoice: Invoice, token: Order, ctx: Context) -> RedirectResponse:
    """PayPal's `return_url`: the payer approved the order. KIKI captures it now (PayPal's
    CHECKOUT.ORDER.APPROVED event, if it comes later, finds it done) and sends the payer on
    to KIKI_PAYPAL_RETURN_URL with `?invoice=<number>&status=<paid|processing|failed>`."""
    return await _settle(ctx, invoice, token, "return", ctx.paypal_return_url)


@router.get("/paypal/cancel", status_code=303, response_class=RedirectResponse, responses=REDIRECT)
async def paypal_cancel(invoice: Invoice, token: Order, ctx: Context) -> RedirectResponse:
    """PayPal's `cancel_url`: the payer cancelled at PayPal. The attempt is recorded as failed
    (the dunning schedule, the invoice open for a new approval link) unless PayPal shows the
    order approved after all, and the payer goes on to KIKI_PAYPAL_CANCEL_URL."""
    return await _settle(ctx, invoice, token, "cancel", ctx.paypal_cancel_url)


async def _settle(
    ctx: BillingContext, invoice_id: UUID, order_id: str, how: payments.Settle, page: str
) -> RedirectResponse:
    invoice, payment = await payments.settle_order(
        await ctx.pool(), ctx.paypal, invoice_id, order_id, how, ctx.clock.now()
    )
    status = "paid" if invoice.status is InvoiceStatus.PAID else payment.status.value
    query = urlencode({"invoice": invoice.number or str(invoice.id), "status": status})
    return RedirectResponse(f"{page}{'&' if '?' in page else '?'}{query}", status_code=303)
