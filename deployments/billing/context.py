"""What a billing replica works with: its pool, its clock, the payment gateways configured
(Stripe, PayPal), the vault of webhook endpoint secrets, and the background worker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, cast

from fastapi import Depends

from deployments._serve import context_of
from kiki.billing.gateway import SETUP, PaymentGateway, gateway_of
from kiki.billing.paypal_gateway import PayPalGateway
from kiki.clock import Clock, WallClock
from kiki.db.pool import PoolSource
from kiki.errors import FailedPrecondition
from kiki.vault import Vault


@dataclass
class BillingContext:
    pool: PoolSource
    # By name, those whose secrets the replica's settings hold (never args). Without one,
    # the payment routes answer what to set (409), and everything else works.
    gateways: dict[str, PaymentGateway]
    vault: Vault  # seals and opens the tenants' webhook endpoint secrets
    clock: Clock = field(default_factory=WallClock)
    worker: asyncio.Task[None] | None = None
    # Where the PayPal routes send the payer on (KIKI_PAYPAL_RETURN_URL / _CANCEL_URL), and
    # how long an approval link waits (KIKI_PAYPAL_APPROVAL_TTL_S).
    paypal_return_url: str = "https://example.com/paid"
    paypal_cancel_url: str = "https://example.com/canceled"
    paypal_approval_ttl: timedelta = timedelta(hours=3)

    def gateway(self, name: str) -> PaymentGateway:
        return gateway_of(self.gateways, name)

    def payments_configured(self) -> dict[str, PaymentGateway]:
        """The gateways; with none at all, the 409 saying what to set, before any lookup
        (the same answer whatever invoice id is named)."""
        if not self.gateways:
            raise FailedPrecondition(
                f"payments are not configured: for Stripe {SETUP['stripe']}; for PayPal "
                f"{SETUP['paypal']}"
            )
        return self.gateways

    @property
    def paypal(self) -> PayPalGateway:
        return cast(PayPalGateway, self.gateway("paypal"))  # processors only makes that one


billing_context = context_of(BillingContext)
Context = Annotated[BillingContext, Depends(billing_context)]
