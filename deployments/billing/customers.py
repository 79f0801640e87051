"""Billing's customers: who is billed, in which currency and time zone, with which payment
method, prepaid credits and coupons."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from deployments._serve import Admin, Connection, DecimalJSONRoute, Reader, Writer
from deployments.billing.context import Context
from deployments.billing.schemas import (
    CouponApply,
    CreditsIn,
    CustomerPath,
    CustomerView,
    PaymentMethodIn,
)
from kiki.billing import repository
from kiki.billing.models import CustomerIn
from kiki.billing.rounding import exact_minor

router = APIRouter(prefix="/api/v1/customers", route_class=DecimalJSONRoute, tags=["customers"])


@router.post("", status_code=201, response_model=CustomerView)
async def create_customer(body: CustomerIn, tenant: Writer, conn: Connection) -> Any:
    return CustomerView.of(await repository.create_customer(conn, tenant.id, body))


@router.get("", response_model=list[CustomerView])
async def list_customers(tenant: Reader, conn: Connection) -> Any:
    return [CustomerView.of(c) for c in await repository.list_customers(conn, tenant.id)]


@router.get("/{customer_id}", response_model=CustomerView)
async def get_customer(customer_id: CustomerPath, tenant: Reader, conn: Connection) -> Any:
    return CustomerView.of(await repository.get_customer(conn, tenant.id, customer_id))


@router.post("/{customer_id}/payment-method", response_model=CustomerView)
async def attach_payment_method(
    customer_id: CustomerPath, body: PaymentMethodIn, tenant: Writer, ctx: Context
) -> Any:
    """Choose the customer's gateway and payment method: a Stripe PaymentMethod (the customer
    is created in Stripe once), a vaulted PayPal payment token, or PayPal without one (each
    invoice is then paid at an approval link)."""
    # No pooled connection is held while the gateway answers.
    pool = await ctx.pool()
    async with pool.acquire() as conn:
        customer = await repository.get_customer(conn, tenant.id, customer_id)  # 404 first
    gateway = ctx.gateway(body.gateway)
    gateway_id, method = await gateway.sync_customer(tenant.id, customer, body.payment_method)
    async with pool.acquire() as conn:
        updated = await repository.set_payment_method(
            conn, tenant.id, customer_id, body.gateway, gateway_id, method
        )
    return CustomerView.of(updated)


@router.post("/{customer_id}/credits", response_model=CustomerView)
async def add_credits(
    customer_id: CustomerPath, body: CreditsIn, tenant: Admin, conn: Connection
) -> Any:
    """Prepaid credits, spent on the customer's next invoices after tax."""
    customer = await repository.get_customer(conn, tenant.id, customer_id)
    minor = exact_minor(body.amount, customer.currency)
    return CustomerView.of(await repository.add_credits(conn, tenant.id, customer_id, minor))


@router.post("/{customer_id}/coupons", status_code=204)
async def apply_coupon(
    customer_id: CustomerPath, body: CouponApply, tenant: Admin, conn: Connection
) -> Response:
    await repository.apply_coupon(conn, tenant.id, customer_id, body.coupon_code)
    return Response(status_code=204)
