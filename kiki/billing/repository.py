"""SQL for billing's catalogue, customers, subscriptions, invoices and payments.

Every query names the tenant: a row of another tenant is simply not found (NotFound, never
"forbidden"). Catalogue entries are stored as their validated pydantic models (jsonb).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from kiki.billing.catalog import BillableMetric, Coupon, Plan
from kiki.billing.invoice import InvoiceLine, InvoiceStatus, transition
from kiki.billing.models import Customer, CustomerIn, Invoice, Payment, Subscription
from kiki.errors import Conflict, InvalidInput, NotFound

PlanKey = tuple[str, int]


async def _by_key(
    conn: asyncpg.Connection,
    columns: str,
    table: str,
    key: str,
    tenant_id: UUID,
    value: object,
    for_update: bool,
) -> asyncpg.Record | None:
    """One row of the tenant's, by its key; locked for the transaction if asked."""
    lock = "FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {columns} FROM {table} WHERE tenant_id = $1 AND {key} = $2 {lock}",
        tenant_id,
        value,
    )


# --- catalogue ---------------------------------------------------------------------------


async def create_metric(
    conn: asyncpg.Connection, tenant_id: UUID, metric: BillableMetric, name: str = ""
) -> BillableMetric:
    inserted = await conn.fetchval(
        """INSERT INTO billing_metrics (tenant_id, code, name, spec) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING RETURNING code""",
        tenant_id, metric.code, name, metric.model_dump_json(),
    )  # fmt: skip
    if inserted is None:
        raise Conflict(f"billable metric {metric.code!r} already exists; metrics cannot change")
    return metric


async def metrics(conn: asyncpg.Connection, tenant_id: UUID) -> dict[str, BillableMetric]:
    rows = await conn.fetch(
        "SELECT spec FROM billing_metrics WHERE tenant_id = $1 ORDER BY code", tenant_id
    )
    parsed = [BillableMetric.model_validate_json(r["spec"]) for r in rows]
    return {metric.code: metric for metric in parsed}


async def create_plan(conn: asyncpg.Connection, tenant_id: UUID, plan: Plan) -> Plan:
    """Store a new plan version; its charges must name existing metrics."""
    known = await metrics(conn, tenant_id)
    missing = sorted({c.metric_code for c in plan.charges} - known.keys())
    if missing:
        raise InvalidInput(
            f"plan {plan.code!r} charges unknown metrics {missing}; create them first "
            "(POST /billing/api/v1/metrics)"
        )
    inserted = await conn.fetchval(
        """INSERT INTO billing_plans (tenant_id, code, version, spec) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING RETURNING version""",
        tenant_id, plan.code, plan.version, plan.model_dump_json(),
    )  # fmt: skip
    if inserted is None:
        raise Conflict(
            f"plan {plan.code!r} version {plan.version} exists and cannot change; "
            "create the next version instead"
        )
    return plan


async def get_plan(
    conn: asyncpg.Connection, tenant_id: UUID, code: str, version: int | None = None
) -> Plan:
    """A plan version, or the latest version of the code."""
    spec = await conn.fetchval(
        """SELECT spec FROM billing_plans WHERE tenant_id = $1 AND code = $2
             AND ($3::integer IS NULL OR version = $3)
           ORDER BY version DESC LIMIT 1""",
        tenant_id, code, version,
    )  # fmt: skip
    if spec is None:
        shown = code if version is None else f"{code} v{version}"
        raise NotFound(f"no plan {shown!r}; see GET /billing/api/v1/plans")
    return Plan.model_validate_json(spec)


async def plans(
    conn: asyncpg.Connection, tenant_id: UUID, keys: Iterable[PlanKey] | None = None
) -> dict[PlanKey, Plan]:
    """Plans by (code, version): the ones asked for, or all."""
    wanted = None if keys is None else sorted(set(keys))
    rows = await conn.fetch(
        """SELECT spec FROM billing_plans p WHERE tenant_id = $1
             AND ($2::text[] IS NULL
                  OR (code, version) IN (SELECT * FROM unnest($2::text[], $3::integer[])))
           ORDER BY code, version""",
        tenant_id,
        None if wanted is None else [k[0] for k in wanted],
        None if wanted is None else [k[1] for k in wanted],
    )
    parsed = [Plan.model_validate_json(r["spec"]) for r in rows]
    return {(plan.code, plan.version): plan for plan in parsed}


async def create_coupon(conn: asyncpg.Connection, tenant_id: UUID, coupon: Coupon) -> Coupon:
    inserted = await conn.fetchval(
        """INSERT INTO billing_coupons (tenant_id, code, spec) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING code""",
        tenant_id, coupon.code, coupon.model_dump_json(),
    )  # fmt: skip
    if inserted is None:
        raise Conflict(f"coupon {coupon.code!r} already exists")
    return coupon


async def apply_coupon(
    conn: asyncpg.Connection, tenant_id: UUID, customer_id: str, coupon_code: str
) -> None:
    await get_customer(conn, tenant_id, customer_id)
    if not await conn.fetchval(
        "SELECT 1 FROM billing_coupons WHERE tenant_id = $1 AND code = $2", tenant_id, coupon_code
    ):
        raise NotFound(f"no coupon {coupon_code!r}; create it first")
    status = await conn.execute(
        """INSERT INTO billing_coupon_redemptions (tenant_id, customer_id, coupon_code)
           VALUES ($1, $2, $3) ON CONFLICT DO NOTHING""",
        tenant_id, customer_id, coupon_code,
    )  # fmt: skip
    if status.endswith(" 0"):
        raise Conflict(f"coupon {coupon_code!r} is already applied to {customer_id!r}")


# --- customers ---------------------------------------------------------------------------

CUSTOMER_COLUMNS = """customer_id, name, email, timezone, tax_percent, currency,
    credit_balance_minor, payment_gateway, stripe_customer_id, stripe_payment_method_id,
    paypal_customer_id, paypal_payment_token_id, created_at"""


async def create_customer(
    conn: asyncpg.Connection, tenant_id: UUID, customer: CustomerIn
) -> Customer:
    row = await conn.fetchrow(
        f"""INSERT INTO billing_customers
                (tenant_id, customer_id, name, email, timezone, tax_percent, currency)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
            RETURNING {CUSTOMER_COLUMNS}""",
        tenant_id, customer.customer_id, customer.name, customer.email, customer.timezone,
        customer.tax_percent, customer.currency,
    )  # fmt: skip
    if row is None:
        raise Conflict(f"customer {customer.customer_id!r} already exists")
    return Customer(**dict(row))


async def get_customer(
    conn: asyncpg.Connection, tenant_id: UUID, customer_id: str, *, for_update: bool = False
) -> Customer:
    row = await _by_key(
        conn,
        CUSTOMER_COLUMNS,
        "billing_customers",
        "customer_id",
        tenant_id,
        customer_id,
        for_update,
    )
    if row is None:
        raise NotFound(f"no customer {customer_id!r}; create it with POST /customers")
    return Customer(**dict(row))


async def list_customers(conn: asyncpg.Connection, tenant_id: UUID) -> list[Customer]:
    rows = await conn.fetch(
        f"""SELECT {CUSTOMER_COLUMNS} FROM billing_customers WHERE tenant_id = $1
            ORDER BY customer_id""",
        tenant_id,
    )
    return [Customer(**dict(r)) for r in rows]


async def set_payment_method(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    customer_id: str,
    gateway: str,
    gateway_customer_id: str | None,
    payment_method_id: str | None,
) -> Customer:
    """Make `gateway` the customer's choice, with its ids there. A Stripe card stays until
    another replaces it; a PayPal choice without a token means paying by approval link."""
    row = await conn.fetchrow(
        f"""UPDATE billing_customers SET payment_gateway = $3,
                stripe_customer_id = CASE WHEN $3 = 'stripe' THEN $4 ELSE stripe_customer_id END,
                stripe_payment_method_id = CASE WHEN $3 = 'stripe'
                    THEN coalesce($5, stripe_payment_method_id) ELSE stripe_payment_method_id END,
                paypal_customer_id = CASE WHEN $3 = 'paypal' THEN $4 ELSE paypal_customer_id END,
                paypal_payment_token_id = CASE WHEN $3 = 'paypal' THEN $5
                    ELSE paypal_payment_token_id END
            WHERE tenant_id = $1 AND customer_id = $2 RETURNING {CUSTOMER_COLUMNS}""",
        tenant_id, customer_id, gateway, gateway_customer_id, payment_method_id,
    )  # fmt: skip
    return Customer(**dict(row))


async def add_credits(
    conn: asyncpg.Connection, tenant_id: UUID, customer_id: str, amount_minor: int
) -> Customer:
    """Prepaid credits: spent on the customer's next invoices, after tax."""
    if amount_minor <= 0:
        raise InvalidInput("credits must be a positive amount")
    row = await conn.fetchrow(
        f"""UPDATE billing_customers SET credit_balance_minor = credit_balance_minor + $3
            WHERE tenant_id = $1 AND customer_id = $2 RETURNING {CUSTOMER_COLUMNS}""",
        tenant_id, customer_id, amount_minor,
    )  # fmt: skip
    if row is None:
        raise NotFound(f"no customer {customer_id!r}")
    return Customer(**dict(row))


# --- subscriptions -----------------------------------------------------------------------

SUBSCRIPTION_COLUMNS = """id, customer_id, status, plan_code, plan_version, plan_since,
    started_at, trial_ends_at, anchor, timezone, period_index, period_start, period_end,
    pending_plan_code, pending_plan_version, cancel_at_period_end, canceled_at, ended_at,
    last_closed_at, created_at"""


async def get_subscription(
    conn: asyncpg.Connection, tenant_id: UUID, subscription_id: UUID, *, for_update: bool = False
) -> Subscription:
    row = await _by_key(
        conn, SUBSCRIPTION_COLUMNS, "billing_subscriptions", "id", tenant_id, subscription_id,
        for_update,
    )  # fmt: skip
    if row is None:
        raise NotFound(f"no subscription {subscription_id}")
    return Subscription(**dict(row))


async def list_subscriptions(
    conn: asyncpg.Connection, tenant_id: UUID, customer_id: str | None = None
) -> list[Subscription]:
    rows = await conn.fetch(
        f"""SELECT {SUBSCRIPTION_COLUMNS} FROM billing_subscriptions
            WHERE tenant_id = $1 AND ($2::text IS NULL OR customer_id = $2)
            ORDER BY created_at, id""",
        tenant_id,
        customer_id,
    )
    return [Subscription(**dict(r)) for r in rows]


async def add_pending_lines(
    conn: asyncpg.Connection, tenant_id: UUID, subscription_id: UUID, lines: Iterable[InvoiceLine]
) -> None:
    await conn.executemany(
        "INSERT INTO billing_pending_lines (tenant_id, subscription_id, line) VALUES ($1, $2, $3)",
        [(tenant_id, subscription_id, line.model_dump_json()) for line in lines],
    )


# --- invoices and payments ---------------------------------------------------------------

INVOICE_COLUMNS = """id, customer_id, subscription_id, number, status, currency, plan_code,
    plan_version, period_start, period_end, lines, subtotal_minor, discount_minor, tax_percent,
    tax_minor, total_minor, credits_applied_minor, total_due_minor, credit_carried_minor,
    refunded_minor, created_at, finalized_at, paid_at, voided_at"""


def invoice_of(row: asyncpg.Record) -> Invoice:
    data: dict[str, Any] = dict(row)
    data["lines"] = tuple(InvoiceLine.model_validate(line) for line in json.loads(data["lines"]))
    return Invoice(**data)


async def get_invoice(
    conn: asyncpg.Connection, tenant_id: UUID, invoice_id: UUID, *, for_update: bool = False
) -> Invoice:
    row = await _by_key(
        conn, INVOICE_COLUMNS, "billing_invoices", "id", tenant_id, invoice_id, for_update
    )
    if row is None:
        raise NotFound(f"no invoice {invoice_id}")
    return invoice_of(row)


async def list_invoices(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    customer_id: str | None = None,
    status: InvoiceStatus | None = None,
    limit: int = 100,
) -> list[Invoice]:
    rows = await conn.fetch(
        f"""SELECT {INVOICE_COLUMNS} FROM billing_invoices
            WHERE tenant_id = $1 AND ($2::text IS NULL OR customer_id = $2)
              AND ($3::text IS NULL OR status = $3)
            ORDER BY created_at DESC, number DESC LIMIT $4""",
        tenant_id,
        customer_id,
        status.value if status else None,
        limit,
    )
    return [invoice_of(r) for r in rows]


async def set_invoice_status(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    invoice_id: UUID,
    target: InvoiceStatus,
    at: datetime,
) -> Invoice:
    """Move an invoice along its lifecycle (kiki.billing.invoice.transition decides)."""
    current = await get_invoice(conn, tenant_id, invoice_id, for_update=True)
    transition(current.status, target)
    stamp = {InvoiceStatus.PAID: "paid_at", InvoiceStatus.VOID: "voided_at"}.get(target)
    row = await conn.fetchrow(
        f"""UPDATE billing_invoices SET status = $3 {f", {stamp} = $4" if stamp else ""}
            WHERE tenant_id = $1 AND id = $2 RETURNING {INVOICE_COLUMNS}""",
        tenant_id,
        invoice_id,
        target.value,
        *([at] if stamp else []),
    )
    return invoice_of(row)


_PAYMENT = """invoice_id, gateway, payment_intent_id, status, amount_minor, currency, attempts,
              next_retry_at, last_error, approval_url, updated_at"""


async def get_payment(
    conn: asyncpg.Connection, tenant_id: UUID, invoice_id: UUID, *, for_update: bool = False
) -> Payment | None:
    row = await _by_key(
        conn, _PAYMENT, "billing_payments", "invoice_id", tenant_id, invoice_id, for_update
    )
    return None if row is None else Payment(**dict(row))


async def save_payment(conn: asyncpg.Connection, tenant_id: UUID, payment: Payment) -> Payment:
    row = await conn.fetchrow(
        f"""INSERT INTO billing_payments (invoice_id, tenant_id, payment_intent_id, status,
                amount_minor, currency, attempts, next_retry_at, last_error, updated_at, gateway,
                approval_url)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
            ON CONFLICT (invoice_id) DO UPDATE SET payment_intent_id = EXCLUDED.payment_intent_id,
                status = EXCLUDED.status, amount_minor = EXCLUDED.amount_minor,
                attempts = EXCLUDED.attempts, next_retry_at = EXCLUDED.next_retry_at,
                last_error = EXCLUDED.last_error, updated_at = EXCLUDED.updated_at,
                gateway = EXCLUDED.gateway, approval_url = EXCLUDED.approval_url
            RETURNING {_PAYMENT}""",
        payment.invoice_id, tenant_id, payment.payment_intent_id, payment.status.value,
        payment.amount_minor, payment.currency, payment.attempts, payment.next_retry_at,
        payment.last_error, payment.updated_at, payment.gateway, payment.approval_url,
    )  # fmt: skip
    return Payment(**dict(row))
