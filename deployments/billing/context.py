"""What a billing replica works with: its pool, its clock, Stripe once it is configured, the
vault of webhook endpoint secrets, and the background worker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated

from fastapi import Depends

from deployments._serve import context_of
from kiki.billing.stripe_gateway import StripeGateway
from kiki.clock import Clock, WallClock
from kiki.db.pool import PoolSource
from kiki.vault import Vault


@dataclass
class BillingContext:
    pool: PoolSource
    stripe_api_key: str | None  # a secret: from the replica's settings, never from args
    stripe_api_base: str
    stripe_webhook_secret: str | None
    stripe_webhook_tolerance_s: int
    vault: Vault  # seals and opens the tenants' webhook endpoint secrets
    clock: Clock = field(default_factory=WallClock)
    worker: asyncio.Task[None] | None = None

    @property
    def payments_configured(self) -> bool:
        return bool(self.stripe_api_key)

    @cached_property
    def gateway(self) -> StripeGateway:
        """Made on first use: without a Stripe key the payment routes answer what to set
        (409), and everything else works."""
        return StripeGateway.configured(
            self.stripe_api_key,
            self.stripe_api_base,
            self.stripe_webhook_secret,
            self.stripe_webhook_tolerance_s,
        )


billing_context = context_of(BillingContext)
Context = Annotated[BillingContext, Depends(billing_context)]
