"""Billing (`/billing`): plans, subscriptions, metering, invoices, payments, analytics.

A thin HTTP shell over kiki.billing. Amounts go out as MoneyOut (exact decimal, micros and
currency); amounts that come in are exact decimals in the customer's currency, refused when
finer than its minor unit. `POST /webhooks/stripe` takes no API key: Stripe's signature
authenticates it, and the tenant is the one of the invoice the event names. A background
worker per replica delivers tenants' webhooks and runs the dunning schedule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import asyncpg
import httpx
from fastapi import Depends, FastAPI, Path, Query, Request, Response
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field
from ray import serve

from deployments._serve import (
    CurrentTenant,
    MoneyOut,
    ServiceIngress,
    ServiceRuntime,
    create_service_api,
    runtime_of,
)
from kiki.billing import metering, payments, reports, repository, subscriptions, webhooks
from kiki.billing.aggregation import Event
from kiki.billing.catalog import CODE_PATTERN, BillableMetric, Code, Coupon, Plan, Version
from kiki.billing.closing import CloseReport, close_period
from kiki.billing.invoice import InvoiceStatus
from kiki.billing.metering import MAX_BATCH, IngestResult
from kiki.billing.models import (
    CUSTOMER_ID_PATTERN,
    Customer,
    CustomerIn,
    Invoice,
    Payment,
    PlanRef,
    Subscription,
)
from kiki.billing.pdf import render_invoice
from kiki.billing.proration import ChangeKind
from kiki.billing.rounding import exact_minor, minor_to_micros
from kiki.billing.stripe_gateway import StripeGateway
from kiki.clock import WallClock
from kiki.db.values import INT4_MAX, PgText
from kiki.errors import KikiError, NotFound
from kiki.money import MAX_AMOUNT, DecimalAmount

logger = logging.getLogger("kiki.billing")
_clock = WallClock()


def _start_worker(app: FastAPI, runtime: ServiceRuntime) -> None:
    app.state.worker = asyncio.get_running_loop().create_task(_worker(runtime))


async def _worker(runtime: ServiceRuntime) -> None:
    """Every KIKI_BILLING_WORKER_S: deliver due tenant webhooks, retry due payments."""
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            await asyncio.sleep(runtime.settings.billing_worker_s)
            try:
                pool = await runtime.pool()
                await webhooks.deliver_due(pool, http, _clock.now())
                if runtime.settings.stripe_api_key:
                    await payments.collect_due(pool, _gateway(runtime), _clock.now())
            except Exception:
                logger.exception("billing worker round failed")


def _gateway(runtime: ServiceRuntime) -> StripeGateway:
    if "stripe" not in runtime.extras:
        runtime.extras["stripe"] = StripeGateway.from_settings(runtime.settings)
    return runtime.extras["stripe"]


api = create_service_api(
    "billing",
    "Billing",
    "Usage-based billing for your customers: billable metrics, versioned plans (standard, "
    "graduated, volume, package, percentage charges), subscriptions in each customer's time "
    "zone, exactly-once usage events, invoices with gapless numbers and PDFs, Stripe payments "
    "with dunning, signed webhooks, and MRR analytics.",
    on_startup=_start_worker,
)


async def _connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        yield conn


# Declared after CurrentTenant in each route, so a bad key never takes a pooled connection.
Connection = Annotated[asyncpg.Connection, Depends(_connection)]
# Ids in paths and queries have the shape the tables hold: anything else (a NUL, a number past
# an integer column) is a 422 naming the parameter, never a query that fails.
CustomerPath = Annotated[str, Path(pattern=CUSTOMER_ID_PATTERN, description="your customer id")]
CustomerQuery = Annotated[str | None, Query(pattern=CUSTOMER_ID_PATTERN)]
CodePath = Annotated[str, Path(pattern=CODE_PATTERN)]


def money(minor: int, currency: str) -> MoneyOut:
    return MoneyOut.of(minor_to_micros(minor, currency), currency)


# --- views -------------------------------------------------------------------------------


class CustomerView(BaseModel):
    customer_id: str
    name: str
    email: str | None
    timezone: str
    tax_percent: str
    currency: str
    credit_balance: MoneyOut
    stripe_customer_id: str | None
    has_payment_method: bool

    @classmethod
    def of(cls, c: Customer) -> CustomerView:
        return cls(
            customer_id=c.customer_id,
            name=c.name,
            email=c.email,
            timezone=c.timezone,
            tax_percent=format(c.tax_percent.normalize(), "f"),
            currency=c.currency,
            credit_balance=money(c.credit_balance_minor, c.currency),
            stripe_customer_id=c.stripe_customer_id,
            has_payment_method=c.stripe_payment_method_id is not None,
        )


class LineView(BaseModel):
    kind: str
    description: str
    amount: MoneyOut
    metric_code: str | None
    units: str | None


class InvoiceView(BaseModel):
    id: UUID
    number: str | None
    status: InvoiceStatus
    customer_id: str
    subscription_id: UUID | None
    plan: str | None
    period_start: datetime | None
    period_end: datetime | None
    lines: list[LineView]
    subtotal: MoneyOut
    discount: MoneyOut
    tax_percent: str
    tax: MoneyOut
    total: MoneyOut
    credits_applied: MoneyOut
    amount_due: MoneyOut
    refunded: MoneyOut
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None

    @classmethod
    def of(cls, i: Invoice) -> InvoiceView:
        cur = i.currency
        return cls(
            id=i.id,
            number=i.number,
            status=i.status,
            customer_id=i.customer_id,
            subscription_id=i.subscription_id,
            plan=f"{i.plan_code} v{i.plan_version}" if i.plan_code else None,
            period_start=i.period_start,
            period_end=i.period_end,
            lines=[
                LineView(
                    kind=line.kind.value,
                    description=line.description,
                    amount=money(line.amount_minor, cur),
                    metric_code=line.metric_code,
                    units=None if line.units is None else format(line.units, "f"),
                )
                for line in i.lines
            ],
            subtotal=money(i.subtotal_minor, cur),
            discount=money(i.discount_minor, cur),
            tax_percent=format(i.tax_percent.normalize(), "f"),
            tax=money(i.tax_minor, cur),
            total=money(i.total_minor, cur),
            credits_applied=money(i.credits_applied_minor, cur),
            amount_due=money(i.total_due_minor, cur),
            refunded=money(i.refunded_minor, cur),
            finalized_at=i.finalized_at,
            paid_at=i.paid_at,
            voided_at=i.voided_at,
        )


class PaymentView(BaseModel):
    invoice_id: UUID
    payment_intent_id: str | None
    status: str
    amount: MoneyOut
    attempts: int
    next_retry_at: datetime | None
    last_error: str | None

    @classmethod
    def of(cls, p: Payment) -> PaymentView:
        return cls(
            invoice_id=p.invoice_id,
            payment_intent_id=p.payment_intent_id,
            status=p.status.value,
            amount=money(p.amount_minor, p.currency),
            attempts=p.attempts,
            next_retry_at=p.next_retry_at,
            last_error=p.last_error,
        )


class MrrView(BaseModel):
    month: str
    currency: str
    mrr: MoneyOut
    arr: MoneyOut
    arpu: MoneyOut
    paying_customers: int
    new: MoneyOut
    expansion: MoneyOut
    contraction: MoneyOut
    churned: MoneyOut
    reactivated: MoneyOut
    starting_mrr: MoneyOut
    net_revenue_retention_percent: str | None

    @classmethod
    def of(cls, r: reports.MrrReport) -> MrrView:
        m, cur = r.movements, r.currency
        nrr = r.net_revenue_retention_percent
        return cls(
            month=r.month,
            currency=cur,
            mrr=money(r.mrr_minor, cur),
            arr=money(r.arr_minor, cur),
            arpu=money(r.arpu_minor, cur),
            paying_customers=r.paying_customers,
            new=money(m.new, cur),
            expansion=money(m.expansion, cur),
            contraction=money(m.contraction, cur),
            churned=money(m.churned, cur),
            reactivated=money(m.reactivated, cur),
            starting_mrr=money(m.starting_mrr, cur),
            net_revenue_retention_percent=None if nrr is None else format(nrr, "f"),
        )


# --- requests ----------------------------------------------------------------------------


class MetricIn(BillableMetric):
    name: str = Field("", max_length=200)


class PaymentMethodIn(BaseModel):
    payment_method: PgText = Field(
        min_length=3, max_length=255, description="a Stripe PaymentMethod id, e.g. pm_card_visa"
    )


class CreditsIn(BaseModel):
    amount: DecimalAmount = Field(
        gt=0, le=MAX_AMOUNT, description="prepaid credits in the customer's currency"
    )


class CouponApply(BaseModel):
    coupon_code: Code


class SubscriptionIn(BaseModel):
    customer_id: str = Field(pattern=CUSTOMER_ID_PATTERN)
    plan_code: Code
    plan_version: Version | None = Field(None, description="default: the latest version")
    start_at: AwareDatetime | None = Field(None, description="default: now")


class CancelIn(BaseModel):
    immediately: bool = Field(False, description="end now with a final invoice, not at period end")


class EventsIn(BaseModel):
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)


class CloseIn(BaseModel):
    as_of: AwareDatetime | None = Field(None, description="default: now")


class RefundIn(BaseModel):
    amount: DecimalAmount | None = Field(
        None, gt=0, le=MAX_AMOUNT, description="default: all that is refundable"
    )


class EndpointCreated(BaseModel):
    endpoint: webhooks.Endpoint
    secret: str = Field(description="signs every delivery (Kiki-Signature); shown only once")


class StripeAck(BaseModel):
    received: bool
    outcome: str


# --- catalogue ---------------------------------------------------------------------------


@api.post("/api/v1/metrics", status_code=201, response_model=BillableMetric, tags=["catalog"])
async def create_metric(body: MetricIn, tenant: CurrentTenant, conn: Connection) -> Any:
    metric = BillableMetric(**body.model_dump(exclude={"name"}))
    return await repository.create_metric(conn, tenant.id, metric, body.name)


@api.get("/api/v1/metrics", response_model=list[BillableMetric], tags=["catalog"])
async def list_metrics(tenant: CurrentTenant, conn: Connection) -> Any:
    return list((await repository.metrics(conn, tenant.id)).values())


@api.post("/api/v1/plans", status_code=201, response_model=Plan, tags=["catalog"])
async def create_plan(body: Plan, tenant: CurrentTenant, conn: Connection) -> Any:
    """A new plan, or a new version of one (`version`); existing versions never change."""
    return await repository.create_plan(conn, tenant.id, body)


@api.get("/api/v1/plans", response_model=list[Plan], tags=["catalog"])
async def list_plans(tenant: CurrentTenant, conn: Connection) -> Any:
    return list((await repository.plans(conn, tenant.id)).values())


@api.get("/api/v1/plans/{code}", response_model=Plan, tags=["catalog"])
async def get_plan(
    code: CodePath,
    tenant: CurrentTenant,
    conn: Connection,
    version: Annotated[int | None, Query(ge=1, le=INT4_MAX)] = None,
) -> Any:
    return await repository.get_plan(conn, tenant.id, code, version)


@api.post("/api/v1/coupons", status_code=201, response_model=Coupon, tags=["catalog"])
async def create_coupon(body: Coupon, tenant: CurrentTenant, conn: Connection) -> Any:
    return await repository.create_coupon(conn, tenant.id, body)


# --- customers ---------------------------------------------------------------------------


@api.post("/api/v1/customers", status_code=201, response_model=CustomerView, tags=["customers"])
async def create_customer(body: CustomerIn, tenant: CurrentTenant, conn: Connection) -> Any:
    return CustomerView.of(await repository.create_customer(conn, tenant.id, body))


@api.get("/api/v1/customers", response_model=list[CustomerView], tags=["customers"])
async def list_customers(tenant: CurrentTenant, conn: Connection) -> Any:
    return [CustomerView.of(c) for c in await repository.list_customers(conn, tenant.id)]


@api.get("/api/v1/customers/{customer_id}", response_model=CustomerView, tags=["customers"])
async def get_customer(customer_id: CustomerPath, tenant: CurrentTenant, conn: Connection) -> Any:
    return CustomerView.of(await repository.get_customer(conn, tenant.id, customer_id))


@api.post(
    "/api/v1/customers/{customer_id}/payment-method",
    response_model=CustomerView,
    tags=["customers"],
)
async def attach_payment_method(
    customer_id: CustomerPath, body: PaymentMethodIn, tenant: CurrentTenant, request: Request
) -> Any:
    """Create the customer in Stripe (once) and attach the payment method invoices charge."""
    pool = await runtime_of(request).pool()
    async with pool.acquire() as conn:
        customer = await repository.get_customer(conn, tenant.id, customer_id)
    stripe_id, method = await _gateway(runtime_of(request)).sync_customer(
        tenant.id, customer, body.payment_method
    )
    async with pool.acquire() as conn:
        updated = await repository.set_stripe_ids(conn, tenant.id, customer_id, stripe_id, method)
    return CustomerView.of(updated)


@api.post("/api/v1/customers/{customer_id}/credits", response_model=CustomerView,
          tags=["customers"])  # fmt: skip
async def add_credits(
    customer_id: CustomerPath, body: CreditsIn, tenant: CurrentTenant, conn: Connection
) -> Any:
    """Prepaid credits, spent on the customer's next invoices after tax."""
    customer = await repository.get_customer(conn, tenant.id, customer_id)
    minor = exact_minor(body.amount, customer.currency)
    return CustomerView.of(await repository.add_credits(conn, tenant.id, customer_id, minor))


@api.post("/api/v1/customers/{customer_id}/coupons", status_code=204, tags=["customers"])
async def apply_coupon(
    customer_id: CustomerPath, body: CouponApply, tenant: CurrentTenant, conn: Connection
) -> Response:
    await repository.apply_coupon(conn, tenant.id, customer_id, body.coupon_code)
    return Response(status_code=204)


# --- subscriptions -----------------------------------------------------------------------


@api.post("/api/v1/subscriptions", status_code=201, response_model=Subscription,
          tags=["subscriptions"])  # fmt: skip
async def create_subscription(body: SubscriptionIn, tenant: CurrentTenant, conn: Connection) -> Any:
    start = body.start_at or _clock.now()
    return await subscriptions.create(
        conn, tenant.id, body.customer_id, body.plan_code, body.plan_version, start
    )


@api.get("/api/v1/subscriptions", response_model=list[Subscription], tags=["subscriptions"])
async def list_subscriptions(
    tenant: CurrentTenant, conn: Connection, customer_id: CustomerQuery = None
) -> Any:
    return await repository.list_subscriptions(conn, tenant.id, customer_id)


@api.get("/api/v1/subscriptions/{sub_id}", response_model=Subscription, tags=["subscriptions"])
async def get_subscription(sub_id: UUID, tenant: CurrentTenant, conn: Connection) -> Any:
    return await repository.get_subscription(conn, tenant.id, sub_id)


async def _change(
    kind: ChangeKind, sub_id: UUID, body: PlanRef, tenant_id: UUID, conn: asyncpg.Connection
) -> Subscription:
    sub, _ = await subscriptions.change(
        conn, tenant_id, sub_id, body.plan_code, body.plan_version, _clock.now(), kind
    )
    return sub


@api.post("/api/v1/subscriptions/{sub_id}/upgrade", response_model=Subscription,
          tags=["subscriptions"])  # fmt: skip
async def upgrade(sub_id: UUID, body: PlanRef, tenant: CurrentTenant, conn: Connection) -> Any:
    """Switch now to a plan with a base fee at least the current one's; the prorated credit
    and charges go on the next invoice."""
    return await _change(ChangeKind.UPGRADE, sub_id, body, tenant.id, conn)


@api.post("/api/v1/subscriptions/{sub_id}/downgrade", response_model=Subscription,
          tags=["subscriptions"])  # fmt: skip
async def downgrade(sub_id: UUID, body: PlanRef, tenant: CurrentTenant, conn: Connection) -> Any:
    """Switch to a cheaper plan at the end of the current period."""
    return await _change(ChangeKind.DOWNGRADE, sub_id, body, tenant.id, conn)


@api.post("/api/v1/subscriptions/{sub_id}/cancel", response_model=Subscription,
          tags=["subscriptions"])  # fmt: skip
async def cancel(sub_id: UUID, body: CancelIn, tenant: CurrentTenant, conn: Connection) -> Any:
    """At period end (undo with /resume), or immediately with a prorated final invoice."""
    now = _clock.now()
    sub = await subscriptions.cancel_subscription(
        conn, tenant.id, sub_id, now, immediately=body.immediately
    )
    if body.immediately:
        await close_period(conn, tenant, now, subscription_ids=[sub_id])
        return await repository.get_subscription(conn, tenant.id, sub_id)
    return sub


@api.post("/api/v1/subscriptions/{sub_id}/resume", response_model=Subscription,
          tags=["subscriptions"])  # fmt: skip
async def resume(sub_id: UUID, tenant: CurrentTenant, conn: Connection) -> Any:
    """Keep renewing a subscription that was to end at its period end."""
    return await subscriptions.resume(conn, tenant.id, sub_id)


# --- usage and periods -------------------------------------------------------------------


@api.post("/api/v1/events", response_model=IngestResult, tags=["usage"])
async def post_events(body: EventsIn, tenant: CurrentTenant, conn: Connection) -> Any:
    """Up to 10,000 usage events; each `transaction_id` counts once, however often it is
    sent. `duplicates` counts the events already stored (retries)."""
    return await metering.ingest(conn, tenant.id, body.events)


@api.post("/api/v1/periods/close", response_model=CloseReport, tags=["invoices"])
async def close(body: CloseIn, tenant: CurrentTenant, conn: Connection) -> Any:
    """Invoice every period that ended by `as_of` (what `kiki billing close-period` runs)."""
    return await close_period(conn, tenant, body.as_of or _clock.now())


# --- invoices and payments ---------------------------------------------------------------


@api.get("/api/v1/invoices", response_model=list[InvoiceView], tags=["invoices"])
async def list_invoices(
    tenant: CurrentTenant,
    conn: Connection,
    customer_id: CustomerQuery = None,
    status: InvoiceStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    found = await repository.list_invoices(conn, tenant.id, customer_id, status, limit)
    return [InvoiceView.of(i) for i in found]


@api.get("/api/v1/invoices/{invoice_id}", response_model=InvoiceView, tags=["invoices"])
async def get_invoice(invoice_id: UUID, tenant: CurrentTenant, conn: Connection) -> Any:
    return InvoiceView.of(await repository.get_invoice(conn, tenant.id, invoice_id))


@api.get(
    "/api/v1/invoices/{invoice_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
    tags=["invoices"],
)
async def invoice_pdf(invoice_id: UUID, tenant: CurrentTenant, conn: Connection) -> Response:
    invoice = await repository.get_invoice(conn, tenant.id, invoice_id)
    customer = await repository.get_customer(conn, tenant.id, invoice.customer_id)
    name = invoice.number or str(invoice.id)
    return Response(
        render_invoice(invoice, customer, tenant.name),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'},
    )


async def _mark(
    invoice_id: UUID, target: InvoiceStatus, tenant_id: UUID, conn: asyncpg.Connection
) -> InvoiceView:
    async with conn.transaction():
        invoice = await payments.mark(conn, tenant_id, invoice_id, target, _clock.now())
    return InvoiceView.of(invoice)


@api.post("/api/v1/invoices/{invoice_id}/void", response_model=InvoiceView, tags=["invoices"])
async def void(invoice_id: UUID, tenant: CurrentTenant, conn: Connection) -> Any:
    return await _mark(invoice_id, InvoiceStatus.VOID, tenant.id, conn)


@api.post("/api/v1/invoices/{invoice_id}/mark-uncollectible", response_model=InvoiceView,
          tags=["invoices"])  # fmt: skip
async def mark_uncollectible(invoice_id: UUID, tenant: CurrentTenant, conn: Connection) -> Any:
    return await _mark(invoice_id, InvoiceStatus.UNCOLLECTIBLE, tenant.id, conn)


@api.post("/api/v1/invoices/{invoice_id}/pay", response_model=PaymentView, tags=["invoices"])
async def pay(invoice_id: UUID, tenant: CurrentTenant, request: Request) -> Any:
    """Charge the customer's payment method now (a Stripe PaymentIntent)."""
    runtime = runtime_of(request)
    payment = await payments.pay(
        await runtime.pool(), _gateway(runtime), tenant.id, invoice_id, _clock.now()
    )
    return PaymentView.of(payment)


@api.get("/api/v1/invoices/{invoice_id}/payment", response_model=PaymentView, tags=["invoices"])
async def get_payment(invoice_id: UUID, tenant: CurrentTenant, conn: Connection) -> Any:
    payment = await repository.get_payment(conn, tenant.id, invoice_id)
    if payment is None:
        await repository.get_invoice(conn, tenant.id, invoice_id)  # 404 for a stranger's
        raise NotFound(f"invoice {invoice_id} has no payment yet; POST .../pay first")
    return PaymentView.of(payment)


@api.post("/api/v1/invoices/{invoice_id}/refund", response_model=InvoiceView, tags=["invoices"])
async def refund(invoice_id: UUID, body: RefundIn, tenant: CurrentTenant, request: Request) -> Any:
    runtime = runtime_of(request)
    pool = await runtime.pool()
    amount = None
    if body.amount is not None:
        async with pool.acquire() as conn:
            invoice = await repository.get_invoice(conn, tenant.id, invoice_id)
        amount = exact_minor(body.amount, invoice.currency)
    refunded = await payments.refund(
        pool, _gateway(runtime), tenant.id, invoice_id, amount, _clock.now()
    )
    return InvoiceView.of(refunded)


# --- analytics ---------------------------------------------------------------------------


def _existing_month(month: str | None) -> str | None:
    if month is not None:
        reports.parse_month(month)  # 2026-13 and 0000-01 match the pattern but are no months
    return month


@api.get("/api/v1/analytics/mrr", response_model=list[MrrView], tags=["analytics"])
async def mrr(
    tenant: CurrentTenant,
    conn: Connection,
    month: Annotated[
        str | None,
        Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM"),
        AfterValidator(_existing_month),
    ] = None,
) -> Any:
    """MRR, ARR, ARPU, movements and net revenue retention of a month (default: this one),
    one entry per currency."""
    day = reports.parse_month(month) if month else _clock.now().date().replace(day=1)
    return [MrrView.of(r) for r in await reports.mrr_report(conn, tenant.id, day)]


@api.get("/api/v1/analytics/usage", response_model=list[reports.UsagePoint], tags=["analytics"])
async def usage(
    tenant: CurrentTenant,
    conn: Connection,
    metric: Annotated[str, Query(pattern=CODE_PATTERN)],
    start: Annotated[AwareDatetime, Query(alias="from")],
    end: Annotated[AwareDatetime, Query(alias="to")],
    granularity: reports.Granularity = reports.Granularity.DAY,
    customer_id: CustomerQuery = None,
) -> Any:
    """A metric's aggregate per day, week or month (UTC)."""
    return await reports.usage_series(conn, tenant.id, metric, start, end, granularity, customer_id)


# --- webhooks ----------------------------------------------------------------------------


@api.post("/api/v1/webhook-endpoints", status_code=201, response_model=EndpointCreated,
          tags=["webhooks"])  # fmt: skip
async def create_endpoint(
    body: webhooks.EndpointIn, tenant: CurrentTenant, conn: Connection
) -> Any:
    endpoint, secret = await webhooks.create_endpoint(conn, tenant.id, body)
    return EndpointCreated(endpoint=endpoint, secret=secret)


@api.get("/api/v1/webhook-endpoints", response_model=list[webhooks.Endpoint], tags=["webhooks"])
async def list_endpoints(tenant: CurrentTenant, conn: Connection) -> Any:
    return await webhooks.list_endpoints(conn, tenant.id)


@api.delete("/api/v1/webhook-endpoints/{endpoint_id}", status_code=204, tags=["webhooks"])
async def delete_endpoint(endpoint_id: UUID, tenant: CurrentTenant, conn: Connection) -> Response:
    await webhooks.delete_endpoint(conn, tenant.id, endpoint_id)
    return Response(status_code=204)


@api.post("/webhooks/stripe", response_model=StripeAck, tags=["webhooks"])
async def stripe_webhook(request: Request) -> Any:
    """Stripe's events (no API key: the Stripe-Signature header authenticates them)."""
    runtime = runtime_of(request)
    payload = await request.body()
    try:
        event = _gateway(runtime).verify_event(payload, request.headers.get("Stripe-Signature"))
        outcome = await payments.handle_stripe_event(await runtime.pool(), event, _clock.now())
    except KikiError as exc:  # forged, stale, replayed or malformed: refused and logged
        logger.warning("Stripe webhook rejected", extra={"code": exc.code, "error": exc.message,
                                                         "client": _client(request)})  # fmt: skip
        raise
    return StripeAck(received=True, outcome=outcome)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class BillingIngress(ServiceIngress):
    service = "billing"
    api = api


app = BillingIngress.bind()
