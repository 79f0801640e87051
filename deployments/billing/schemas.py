"""Billing's request and response models. Amounts go out as MoneyOut (exact decimal, micros
and currency); amounts that come in are exact decimals in the customer's currency, refused when
finer than its minor unit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import Path, Query
from pydantic import AwareDatetime, BaseModel, Field, model_validator

from deployments._serve import MoneyOut
from kiki.billing import reports, webhooks
from kiki.billing.aggregation import Event
from kiki.billing.catalog import CODE_PATTERN, BillableMetric, Code, Version
from kiki.billing.invoice import InvoiceStatus
from kiki.billing.metering import MAX_BATCH
from kiki.billing.models import CUSTOMER_ID_PATTERN, Customer, Invoice, Payment
from kiki.billing.rounding import minor_to_micros
from kiki.db.values import PgText
from kiki.money import MAX_AMOUNT, DecimalAmount

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
    payment_gateway: str
    stripe_customer_id: str | None
    paypal_customer_id: str | None
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
            payment_gateway=c.payment_gateway,
            stripe_customer_id=c.stripe_customer_id,
            paypal_customer_id=c.paypal_customer_id,
            has_payment_method=c.payment_method_id is not None,
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
    gateway: str
    payment_intent_id: str | None = Field(
        description="the gateway's reference: a Stripe PaymentIntent, a PayPal capture, or a "
        "PayPal order while it awaits the payer"
    )
    status: str
    amount: MoneyOut
    attempts: int
    next_retry_at: datetime | None
    last_error: str | None
    approval_url: str | None = Field(
        description="where the payer approves a PayPal order (status processing until then)"
    )

    @classmethod
    def of(cls, p: Payment) -> PaymentView:
        return cls(
            invoice_id=p.invoice_id,
            gateway=p.gateway,
            payment_intent_id=p.payment_intent_id,
            status=p.status.value,
            amount=money(p.amount_minor, p.currency),
            attempts=p.attempts,
            next_retry_at=p.next_retry_at,
            last_error=p.last_error,
            approval_url=p.approval_url,
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
    name: PgText = Field("", max_length=200)


class PaymentMethodIn(BaseModel):
    gateway: Literal["stripe", "paypal"] = Field(
        "stripe", description="the gateway the customer's invoices are paid through"
    )
    payment_method: PgText | None = Field(
        None,
        min_length=3,
        max_length=255,
        description="a Stripe PaymentMethod id (e.g. pm_card_visa; required for Stripe), or a "
        "vaulted PayPal payment token id; for PayPal without one, each invoice is paid at an "
        "approval link",
    )

    @model_validator(mode="after")
    def _stripe_needs_a_card(self) -> PaymentMethodIn:
        if self.gateway == "stripe" and self.payment_method is None:
            raise ValueError("payment_method is required for Stripe (e.g. pm_card_visa)")
        return self


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


class WebhookAck(BaseModel):
    received: bool
    outcome: str
