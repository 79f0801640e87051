"""The payment gateways a process can use, made from its settings: Stripe once
KIKI_STRIPE_API_KEY is set, PayPal once KIKI_PAYPAL_CLIENT_ID and _SECRET are. A customer who
chose a gateway that is not configured gets the error saying what to set (gateway_of)."""

from __future__ import annotations

from kiki.billing.gateway import PaymentGateway
from kiki.billing.paypal_gateway import PayPalGateway
from kiki.billing.stripe_gateway import StripeGateway
from kiki.config import Settings


def configured(settings: Settings) -> dict[str, PaymentGateway]:
    gateways: dict[str, PaymentGateway] = {}
    if settings.stripe_api_key:
        gateways["stripe"] = StripeGateway(
            settings.stripe_api_key,
            settings.stripe_api_base,
            settings.stripe_webhook_secret,
            settings.stripe_webhook_tolerance_s,
        )
    if settings.paypal_client_id and settings.paypal_client_secret:
        gateways["paypal"] = PayPalGateway(
            settings.paypal_client_id,
            settings.paypal_client_secret,
            settings.paypal_api_base,
            settings.paypal_webhook_id,
            redirect_base=settings.paypal_redirect_base,
            tolerance_s=settings.paypal_webhook_tolerance_s,
        )
    return gateways
