"""Collecting invoices: payments through each customer's gateway (Stripe or PayPal, one
PaymentGateway interface), the dunning schedule, refunds, and the gateways' webhooks.

Dunning: a failed payment is retried 1, 3 and 5 days after each failure (a new PaymentIntent
or PayPal order each time); when the fourth attempt fails the invoice is marked uncollectible
(a later payment still settles it). The payment row is written before the gateway is called,
so two callers never both charge one invoice; the idempotency key (invoice, attempt) makes a
retried call safe.

Gateway events are verified (kiki.billing.stripe_gateway, kiki.billing.paypal_gateway), then
stored by (gateway, id) in the same transaction that applies them: a replayed event is refused
and nothing is applied twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg

from kiki.billing import repository, webhooks
from kiki.billing.closing import invoice_payload
from kiki.billing.gateway import ChargeResult, Gateways, gateway_of
from kiki.billing.invoice import InvoiceStatus
from kiki.billing.models import Invoice, Payment, PaymentStatus
from kiki.billing.paypal_gateway import (
    PayPalGateway,
    from_paypal_value,
    invoice_of_custom_id,
    order_outcome,
)
from kiki.billing.stripe_gateway import INVOICE_KEY, TENANT_KEY
from kiki.errors import Conflict, FailedPrecondition, InvalidInput, KikiError, NotFound

logger = logging.getLogger("kiki.billing")

DUNNING_DAYS = (1, 3, 5)
# A payment left "processing" without an intent (the caller died mid-call) may be retried
# after this, with the same idempotency key.
STALE_PROCESSING = timedelta(minutes=5)
_PAYABLE = (InvoiceStatus.FINALIZED, InvoiceStatus.UNCOLLECTIBLE)


async def pay(
    pool: asyncpg.Pool, gateways: Gateways, tenant_id: UUID, invoice_id: UUID, now: datetime
) -> Payment:
    """Charge the invoice's total due through the customer's gateway, now (a PayPal customer
    without a vaulted token gets an approval link to pay at)."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            invoice = await repository.get_invoice(conn, tenant_id, invoice_id, for_update=True)
            if invoice.status not in _PAYABLE:
                raise FailedPrecondition(
                    f"invoice {invoice.number or invoice.id} is {invoice.status}; only finalized "
                    "or uncollectible invoices are paid"
                )
            customer = await repository.get_customer(conn, tenant_id, invoice.customer_id)
            gateway = gateway_of(gateways, customer.payment_gateway)
            if not customer.payable:
                raise FailedPrecondition(
                    f"customer {customer.customer_id!r} has no payment method; attach one with "
                    f"POST /billing/api/v1/customers/{customer.customer_id}/payment-method"
                )
            previous = await repository.get_payment(conn, tenant_id, invoice_id, for_update=True)
            attempts = 1 if previous is None else previous.attempts + 1
            if previous is not None and previous.status is PaymentStatus.PROCESSING:
                if previous.payment_intent_id or previous.updated_at > now - STALE_PROCESSING:
                    waiting = ""
                    if previous.approval_url:
                        waiting = f" (the payer approves it at {previous.approval_url})"
                    raise Conflict(
                        f"a payment of invoice {invoice.number} is in progress{waiting}; wait "
                        "for it"
                    )
                attempts = previous.attempts  # same key: Stripe answers the first call's result
            await repository.save_payment(
                conn,
                tenant_id,
                Payment(
                    invoice_id=invoice_id,
                    gateway=customer.payment_gateway,
                    payment_intent_id=None,
                    status=PaymentStatus.PROCESSING,
                    amount_minor=invoice.total_due_minor,
                    currency=invoice.currency,
                    attempts=attempts,
                    next_retry_at=None,
                    last_error=None,
                    updated_at=now,
                ),
            )
        result = await gateway.charge(tenant_id, invoice, customer, f"kiki:{invoice_id}:{attempts}")
        async with conn.transaction():
            return await _record(
                conn, tenant_id, invoice_id, attempts, result, now, customer.payment_gateway
            )


async def _record(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    invoice_id: UUID,
    attempts: int,
    result: ChargeResult,
    now: datetime,
    gateway: str = "stripe",
) -> Payment:
    """Apply a payment attempt's outcome to the payment row and the invoice."""
    invoice = await repository.get_invoice(conn, tenant_id, invoice_id, for_update=True)
    status, next_retry = PaymentStatus(result.status), None
    if status is PaymentStatus.SUCCEEDED:
        await _mark_paid(conn, tenant_id, invoice, now)
    elif status is PaymentStatus.FAILED and invoice.status in _PAYABLE:
        if attempts <= len(DUNNING_DAYS):
            next_retry = now + timedelta(days=DUNNING_DAYS[attempts - 1])
        elif invoice.status is InvoiceStatus.FINALIZED:
            await mark(conn, tenant_id, invoice_id, InvoiceStatus.UNCOLLECTIBLE, now)
        failed = invoice_payload(invoice) | {"attempts": attempts, "error": result.error}
        await webhooks.enqueue(conn, tenant_id, "invoice.payment_failed", [failed], now)
    return await repository.save_payment(
        conn,
        tenant_id,
        Payment(
            invoice_id=invoice_id,
            gateway=gateway,
            payment_intent_id=result.payment_intent_id,
            status=status,
            amount_minor=invoice.total_due_minor,
            currency=invoice.currency,
            attempts=attempts,
            next_retry_at=next_retry,
            last_error=result.error,
            approval_url=result.approval_url,
            updated_at=now,
        ),
    )


_EVENTS = {
    InvoiceStatus.PAID: "invoice.paid",
    InvoiceStatus.VOID: "invoice.voided",
    InvoiceStatus.UNCOLLECTIBLE: "invoice.marked_uncollectible",
}


async def mark(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    invoice_id: UUID,
    target: InvoiceStatus,
    now: datetime,
) -> Invoice:
    """Move an invoice to `target` (void, uncollectible, paid) and tell the tenant."""
    invoice = await repository.set_invoice_status(conn, tenant_id, invoice_id, target, now)
    await webhooks.enqueue(conn, tenant_id, _EVENTS[target], [invoice_payload(invoice)], now)
    return invoice


async def _mark_paid(
    conn: asyncpg.Connection, tenant_id: UUID, invoice: Invoice, now: datetime
) -> bool:
    if invoice.status not in _PAYABLE:
        return False
    await mark(conn, tenant_id, invoice.id, InvoiceStatus.PAID, now)
    return True


async def collect_due(
    pool: asyncpg.Pool,
    gateways: Gateways,
    now: datetime,
    *,
    tenant_id: UUID | None = None,
    limit: int = 100,
) -> list[Payment]:
    """First attempts for finalized invoices and dunning retries that are due, for the
    customers with a saved payment method on a configured gateway (a payer who approves
    each PayPal order is asked through POST .../pay instead)."""
    async with pool.acquire() as conn:
        due = await conn.fetch(
            """SELECT i.tenant_id, i.id FROM billing_invoices i
               JOIN billing_customers c
                 ON c.tenant_id = i.tenant_id AND c.customer_id = i.customer_id
               LEFT JOIN billing_payments p ON p.invoice_id = i.id
               WHERE i.status = 'finalized' AND i.total_due_minor > 0
                 AND c.payment_gateway = ANY($4::text[])
                 AND CASE c.payment_gateway WHEN 'paypal' THEN c.paypal_payment_token_id
                     ELSE c.stripe_payment_method_id END IS NOT NULL
                 AND ($2::uuid IS NULL OR i.tenant_id = $2)
                 AND (p.invoice_id IS NULL OR (p.status = 'failed' AND p.next_retry_at <= $1))
               ORDER BY i.finalized_at LIMIT $3""",
            now, tenant_id, limit, list(gateways),
        )  # fmt: skip
    done = []
    for row in due:
        try:
            done.append(await pay(pool, gateways, row["tenant_id"], row["id"], now))
        except KikiError as exc:
            logger.warning("payment attempt failed", extra={"invoice": str(row["id"]),
                                                            "error": exc.message})  # fmt: skip
    return done


async def refund(
    pool: asyncpg.Pool,
    gateways: Gateways,
    tenant_id: UUID,
    invoice_id: UUID,
    amount_minor: int | None,
    now: datetime,
) -> Invoice:
    """Give back part or all of a paid invoice (all that is left when no amount is given)."""
    async with pool.acquire() as conn:
        invoice = await repository.get_invoice(conn, tenant_id, invoice_id)
        payment = await repository.get_payment(conn, tenant_id, invoice_id)
        if payment is None or payment.status is not PaymentStatus.SUCCEEDED:
            raise FailedPrecondition(
                f"invoice {invoice.number} has no successful payment to refund"
            )
        refundable = payment.amount_minor - invoice.refunded_minor
        amount = refundable if amount_minor is None else amount_minor
        if not 0 < amount <= refundable:
            raise InvalidInput(
                f"refund must be above 0 and at most {refundable} (minor units still refundable)"
            )
        key = f"kiki-refund:{invoice_id}:{invoice.refunded_minor}:{amount}"
        gateway = gateway_of(gateways, payment.gateway)  # the one that took the money
        refunded = await gateway.refund(
            payment.payment_intent_id or "", amount, invoice.currency, key
        )
        async with conn.transaction():
            return await _set_refunded(
                conn, tenant_id, invoice_id, invoice.refunded_minor + refunded, now
            )


async def _set_refunded(
    conn: asyncpg.Connection, tenant_id: UUID, invoice_id: UUID, total: int, now: datetime
) -> Invoice:
    """Record the total refunded so far (from our call or Stripe's event, whichever is first)."""
    row = await conn.fetchrow(
        f"""UPDATE billing_invoices SET refunded_minor = $3
            WHERE tenant_id = $1 AND id = $2 AND refunded_minor < $3
            RETURNING {repository.INVOICE_COLUMNS}""",
        tenant_id, invoice_id, total,
    )  # fmt: skip
    if row is None:
        return await repository.get_invoice(conn, tenant_id, invoice_id)
    invoice = repository.invoice_of(row)
    await webhooks.enqueue(conn, tenant_id, "invoice.refunded", [invoice_payload(invoice)], now)
    return invoice


Settle = Literal["return", "cancel", "expire"]


async def settle_order(
    pool: asyncpg.Pool,
    gateway: PayPalGateway,
    invoice_id: UUID,
    order_id: str,
    how: Settle,
    now: datetime,
) -> tuple[Invoice, Payment]:
    """Settle an invoice's PayPal order awaiting approval, from where PayPal says it stands:
    the payer came back approving it (`return`, PayPal's redirect), cancelled at PayPal
    (`cancel`), or let it wait past KIKI_PAYPAL_APPROVAL_TTL_S (`expire`, the worker).

    An approved order is captured whatever the path (the payer may have approved in another
    tab); one not approved stays waiting on a return, and fails on a cancel or past its time
    (PayPal forgets unapproved orders): a failed attempt on the dunning schedule, the invoice
    open for a new approval link. Only the order the invoice's payment is waiting on counts:
    any other order id, or an invoice with no PayPal payment waiting, is NotFound, the same
    answer whatever tenant the invoice belongs to (the redirect carries no key)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT tenant_id FROM billing_payments
               WHERE invoice_id = $1 AND gateway = 'paypal' AND payment_intent_id = $2
                 AND status = 'processing'""",
            invoice_id, order_id,
        )  # fmt: skip
        if row is None:
            raise NotFound(
                f"no PayPal payment of invoice {invoice_id} is waiting on order {order_id!r}; "
                "the link may have expired: ask for a new one (POST .../invoices/{id}/pay)"
            )
        tenant_id = row["tenant_id"]
    order = await gateway.order(order_id)
    status = None if order is None else order.get("status")
    result: ChargeResult | None = None
    if status == "APPROVED":  # the same request id as the webhook's: one capture at PayPal
        result = await gateway.capture(order_id, f"kiki-capture:{order_id}")
    elif order is not None and status == "COMPLETED":
        result = order_outcome(order)
    elif how == "cancel":
        result = ChargeResult(payment_intent_id=order_id, status="failed",
                              error=f"the payer cancelled PayPal order {order_id}")  # fmt: skip
    elif how == "expire":
        result = ChargeResult(
            payment_intent_id=order_id, status="failed",
            error=f"PayPal order {order_id} was not approved in time ({status or 'expired'})",
        )  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        payment = await repository.get_payment(conn, tenant_id, invoice_id, for_update=True)
        waiting = (
            payment is not None
            and payment.status is PaymentStatus.PROCESSING
            and payment.payment_intent_id == order_id
        )
        if result is not None and waiting and payment is not None:
            payment = await _record(
                conn, tenant_id, invoice_id, payment.attempts, result, now, "paypal"
            )
        invoice = await repository.get_invoice(conn, tenant_id, invoice_id)
    assert payment is not None  # a payment row is never deleted
    return invoice, payment


async def expire_approvals(
    pool: asyncpg.Pool, gateway: PayPalGateway, now: datetime, ttl: timedelta, limit: int = 100
) -> list[Payment]:
    """Settle the PayPal payments whose approval link has waited longer than `ttl`: captured
    if the payer approved after all (an event lost on the way), failed otherwise."""
    async with pool.acquire() as conn:
        due = await conn.fetch(
            """SELECT invoice_id, payment_intent_id FROM billing_payments
               WHERE gateway = 'paypal' AND status = 'processing' AND approval_url IS NOT NULL
                 AND payment_intent_id IS NOT NULL AND updated_at <= $1
               ORDER BY updated_at LIMIT $2""",
            now - ttl, limit,
        )  # fmt: skip
    done = []
    for row in due:
        try:
            _, payment = await settle_order(
                pool, gateway, row["invoice_id"], row["payment_intent_id"], "expire", now
            )
            done.append(payment)
        except KikiError as exc:
            logger.warning("approval not settled", extra={"invoice": str(row["invoice_id"]),
                                                          "error": exc.message})  # fmt: skip
    return done


Locate = Callable[[asyncpg.Connection], Awaitable["tuple[UUID, UUID] | None"]]
# Applies an event to (tenant, its invoice, the invoice's payment), both locked.
Apply = Callable[[asyncpg.Connection, UUID, Invoice, "Payment | None"], Awaitable[str]]


async def _handle_once(
    pool: asyncpg.Pool, gateway: str, event_id: object, kind: str, locate: Locate, apply: Apply
) -> str:
    """Store the event by (gateway, id) and apply it to the invoice it is about, in one
    transaction: a replay is refused (409) and nothing is applied twice."""
    if not isinstance(event_id, str) or not event_id:
        raise InvalidInput("the event has no id", code="webhook_malformed")
    async with pool.acquire() as conn, conn.transaction():
        stored = await conn.fetchval(
            """INSERT INTO billing_stripe_events (gateway, event_id, type, outcome)
               VALUES ($1, $2, $3, '') ON CONFLICT DO NOTHING RETURNING event_id""",
            gateway, event_id, kind,
        )  # fmt: skip
        if stored is None:
            raise Conflict(
                f"event {event_id} was already received; a replay is never applied twice",
                code="webhook_replayed",
            )
        target = await locate(conn)
        if target is None:
            outcome = "ignored: not about a KIKI invoice"
        else:
            invoice = await repository.get_invoice(conn, *target, for_update=True)
            payment = await repository.get_payment(conn, *target, for_update=True)
            outcome = await apply(conn, target[0], invoice, payment)
        await conn.execute(
            """UPDATE billing_stripe_events SET outcome = $3, tenant_id = $4, invoice_id = $5
               WHERE gateway = $1 AND event_id = $2""",
            gateway, event_id, outcome, *(target or (None, None)),
        )  # fmt: skip
    return outcome


async def handle_stripe_event(pool: asyncpg.Pool, event: dict[str, Any], now: datetime) -> str:
    """Apply a verified Stripe event once; returns what was done (also stored with it)."""
    kind, obj = event.get("type", ""), (event.get("data") or {}).get("object") or {}
    return await _handle_once(
        pool,
        "stripe",
        event.get("id"),
        kind,
        lambda conn: _invoice_of(conn, kind, obj),
        lambda conn, tenant_id, invoice, payment: _apply(
            conn, kind, obj, tenant_id, invoice, payment, now
        ),
    )


async def _invoice_of(
    conn: asyncpg.Connection, kind: str, obj: dict[str, Any]
) -> tuple[UUID, UUID] | None:
    """(tenant, invoice) the event is about: from the PaymentIntent's metadata, or for a
    charge, from the payment it belongs to."""
    if kind == "charge.refunded":
        row = await conn.fetchrow(
            "SELECT tenant_id, invoice_id FROM billing_payments WHERE payment_intent_id = $1",
            obj.get("payment_intent"),
        )
        return None if row is None else (row["tenant_id"], row["invoice_id"])
    metadata = obj.get("metadata") or {}
    try:
        tenant_id, invoice_id = UUID(metadata[TENANT_KEY]), UUID(metadata[INVOICE_KEY])
    except (KeyError, ValueError, TypeError):
        return None
    return await _existing(conn, tenant_id, invoice_id)


async def _existing(
    conn: asyncpg.Connection, tenant_id: UUID, invoice_id: UUID
) -> tuple[UUID, UUID] | None:
    found = await conn.fetchval(
        "SELECT 1 FROM billing_invoices WHERE tenant_id = $1 AND id = $2", tenant_id, invoice_id
    )
    return (tenant_id, invoice_id) if found else None


async def _apply(
    conn: asyncpg.Connection,
    kind: str,
    obj: dict[str, Any],
    tenant_id: UUID,
    invoice: Invoice,
    payment: Payment | None,
    now: datetime,
) -> str:
    invoice_id, intent = invoice.id, obj.get("id")
    if kind == "payment_intent.succeeded":
        received = obj.get("amount_received", obj.get("amount"))
        if (
            (obj.get("currency") or "").upper() != invoice.currency
            or not isinstance(received, int)
            or received < invoice.total_due_minor
        ):
            logger.warning("payment does not cover the invoice", extra={"intent": intent})
            return f"ignored: {received} {obj.get('currency')} does not cover the invoice"
        attempts = payment.attempts if payment else 1
        await _record(conn, tenant_id, invoice_id, attempts,
                      ChargeResult(payment_intent_id=intent, status="succeeded"), now)  # fmt: skip
        return "invoice paid" if invoice.status in _PAYABLE else f"invoice already {invoice.status}"
    if kind == "payment_intent.payment_failed":
        if payment is None or payment.status is not PaymentStatus.PROCESSING:
            if payment is not None and payment.payment_intent_id is None:
                await conn.execute(
                    "UPDATE billing_payments SET payment_intent_id = $2 WHERE invoice_id = $1",
                    invoice_id,
                    intent,
                )
            return "failure already recorded"
        error = (obj.get("last_payment_error") or {}).get("message") or "payment failed"
        await _record(conn, tenant_id, invoice_id, payment.attempts,
                      ChargeResult(payment_intent_id=intent, status="failed", error=error),
                      now)  # fmt: skip
        return "payment failure recorded"
    if kind == "charge.refunded":
        total = obj.get("amount_refunded")
        if not isinstance(total, int):
            return "ignored: no amount_refunded"
        await _set_refunded(conn, tenant_id, invoice_id, total, now)
        return f"refunded {total}"
    return f"ignored: {kind} is not handled"


async def handle_paypal_event(
    pool: asyncpg.Pool, gateway: PayPalGateway, event: dict[str, Any], now: datetime
) -> str:
    """Apply a verified PayPal event once; returns what was done (also stored with it).

    CHECKOUT.ORDER.APPROVED (the payer approved the order at its approval link) is captured
    first, outside the transaction, and only while that order is the invoice's payment in
    progress: PayPal-Request-Id makes a second capture of one order answer the first's."""
    kind, resource = str(event.get("event_type", "")), event.get("resource") or {}
    captured = None
    if kind == "CHECKOUT.ORDER.APPROVED" and isinstance(resource.get("id"), str):
        order_id = resource["id"]
        async with pool.acquire() as conn:
            waiting = await conn.fetchval(
                """SELECT NOT EXISTS (SELECT 1 FROM billing_stripe_events
                                      WHERE gateway = 'paypal' AND event_id = $2)
                   FROM billing_payments WHERE gateway = 'paypal' AND payment_intent_id = $1
                     AND status = 'processing'""",
                order_id, event.get("id"),
            )  # fmt: skip
        if waiting:
            captured = await gateway.capture(order_id, f"kiki-capture:{order_id}")
    return await _handle_once(
        pool,
        "paypal",
        event.get("id"),
        kind,
        lambda conn: _paypal_invoice_of(conn, kind, resource),
        lambda conn, tenant_id, invoice, payment: _apply_paypal(
            conn, kind, resource, captured, tenant_id, invoice, payment, now
        ),
    )


async def _paypal_invoice_of(
    conn: asyncpg.Connection, kind: str, resource: dict[str, Any]
) -> tuple[UUID, UUID] | None:
    """(tenant, invoice) from the purchase unit's custom_id (orders, captures), or for a
    refund, from the payment of the capture it refunds."""
    if kind == "PAYMENT.CAPTURE.REFUNDED":
        up = next((x.get("href", "") for x in resource.get("links", []) if x.get("rel") == "up"),
                  "")  # fmt: skip
        row = await conn.fetchrow(
            """SELECT tenant_id, invoice_id FROM billing_payments
               WHERE gateway = 'paypal' AND payment_intent_id = $1""",
            up.rsplit("/captures/", 1)[-1],
        )
        return None if row is None else (row["tenant_id"], row["invoice_id"])
    if kind == "CHECKOUT.ORDER.APPROVED":
        tag = (resource.get("purchase_units") or [{}])[0].get("custom_id")
    else:
        tag = resource.get("custom_id")
    target = invoice_of_custom_id(tag)
    return None if target is None else await _existing(conn, *target)


async def _apply_paypal(
    conn: asyncpg.Connection,
    kind: str,
    resource: dict[str, Any],
    captured: ChargeResult | None,
    tenant_id: UUID,
    invoice: Invoice,
    payment: Payment | None,
    now: datetime,
) -> str:
    invoice_id, attempts = invoice.id, payment.attempts if payment else 1
    if kind == "CHECKOUT.ORDER.APPROVED":
        if captured is None:
            return "ignored: the order is not the invoice's payment in progress"
        await _record(conn, tenant_id, invoice_id, attempts, captured, now, "paypal")
        return f"order captured: payment {captured.status}"
    capture_id = resource.get("id")
    if kind == "PAYMENT.CAPTURE.COMPLETED":
        amount = resource.get("amount") or {}
        currency = amount.get("currency_code")
        if currency != invoice.currency or (
            from_paypal_value(amount.get("value"), currency) < invoice.total_due_minor
        ):
            logger.warning("payment does not cover the invoice", extra={"capture": capture_id})
            return f"ignored: {amount.get('value')} {currency} does not cover the invoice"
        await _record(conn, tenant_id, invoice_id, attempts,
                      ChargeResult(payment_intent_id=capture_id, status="succeeded"), now,
                      "paypal")  # fmt: skip
        return "invoice paid" if invoice.status in _PAYABLE else f"invoice already {invoice.status}"
    if kind == "PAYMENT.CAPTURE.DENIED":
        if payment is None or payment.status is not PaymentStatus.PROCESSING:
            return "failure already recorded"
        await _record(conn, tenant_id, invoice_id, attempts,
                      ChargeResult(payment_intent_id=capture_id, status="failed",
                                   error="PayPal capture DENIED"), now, "paypal")  # fmt: skip
        return "payment failure recorded"
    if kind == "PAYMENT.CAPTURE.REFUNDED":
        total = ((resource.get("seller_payable_breakdown") or {})
                 .get("total_refunded_amount") or {})  # fmt: skip
        if total.get("currency_code") != invoice.currency:
            return "ignored: no total_refunded_amount in the invoice's currency"
        refunded = from_paypal_value(total.get("value"), invoice.currency)
        await _set_refunded(conn, tenant_id, invoice_id, refunded, now)
        return f"refunded {refunded}"
    return f"ignored: {kind} is not handled"
