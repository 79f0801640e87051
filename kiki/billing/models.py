"""What billing stores and what callers send: customers, subscriptions, invoices, payments.

Records mirror their table rows; inputs are validated at the edge (currencies, IANA time
zones, exact tax rates), so the services below never see a malformed value.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, Field, field_validator

from kiki.billing.catalog import Code, Currency, ExactDecimal, FrozenModel, Version
from kiki.billing.invoice import DraftInvoice, InvoiceStatus
from kiki.billing.periods import zone
from kiki.db.values import PgText

CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
CustomerId = Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN)]


def _known_zone(name: str) -> str:
    zone(name)
    return name


TimeZone = Annotated[str, AfterValidator(_known_zone)]


class CustomerIn(FrozenModel):
    """A tenant's customer: its own id, where to send invoices, its time zone and tax rate."""

    customer_id: CustomerId
    name: PgText = Field("", max_length=200)
    email: PgText | None = Field(None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    timezone: TimeZone = "UTC"
    tax_percent: ExactDecimal = Decimal(0)
    currency: Currency

    @field_validator("tax_percent")
    @classmethod
    def _at_most_100(cls, rate: Decimal) -> Decimal:
        if rate > 100 or rate.as_tuple().exponent < -6:  # type: ignore[operator]
            raise ValueError("tax_percent must be 0 to 100 with at most 6 decimal places")
        return rate


class Customer(CustomerIn):
    credit_balance_minor: int
    # The gateway the customer pays through (kiki.billing.gateway), and its ids there.
    payment_gateway: Literal["stripe", "paypal"] = "stripe"
    stripe_customer_id: str | None
    stripe_payment_method_id: str | None
    paypal_customer_id: str | None = None
    paypal_payment_token_id: str | None = None
    created_at: datetime

    @property
    def payment_method_id(self) -> str | None:
        """The saved payment method invoices are charged to, on the chosen gateway."""
        if self.payment_gateway == "paypal":
            return self.paypal_payment_token_id
        return self.stripe_payment_method_id

    @property
    def payable(self) -> bool:
        """Whether an invoice can be paid: Stripe charges a saved card only; PayPal charges a
        vaulted token, or without one sends the payer an approval link."""
        return self.payment_gateway == "paypal" or self.payment_method_id is not None


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    CANCELED = "canceled"


class Subscription(FrozenModel):
    id: UUID
    customer_id: str
    status: SubscriptionStatus
    plan_code: str
    plan_version: int
    plan_since: datetime
    started_at: datetime
    trial_ends_at: datetime | None
    anchor: date
    timezone: str
    period_index: int
    period_start: datetime
    period_end: datetime
    pending_plan_code: str | None
    pending_plan_version: int | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    last_closed_at: datetime | None
    created_at: datetime


class PlanRef(FrozenModel):
    """A plan by code; without a version, its latest."""

    plan_code: Code
    plan_version: Version | None = None


class Invoice(DraftInvoice):
    """A stored invoice: the draft's lines and totals, and where it stands."""

    id: UUID
    customer_id: str
    subscription_id: UUID | None
    number: str | None
    status: InvoiceStatus
    plan_code: str | None
    plan_version: int | None
    period_start: datetime | None
    period_end: datetime | None
    refunded_minor: int
    created_at: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None


class PaymentStatus(StrEnum):
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Payment(FrozenModel):
    invoice_id: UUID
    gateway: Literal["stripe", "paypal"] = "stripe"
    payment_intent_id: str | None
    status: PaymentStatus
    amount_minor: int
    currency: str
    attempts: int
    next_retry_at: datetime | None
    last_error: str | None
    approval_url: str | None = None
    updated_at: datetime
