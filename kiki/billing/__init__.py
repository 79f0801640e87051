"""Usage-based billing: catalogue, metering, pricing, proration, invoices and revenue analytics.

The public face other services use: reporting billable usage (the platform meters its own
tenants' predictions, bid decisions, creatives and messages)."""

from kiki.faces import lazy

__all__, __getattr__ = lazy(
    __name__,
    {
        "BID_DECISIONS": "kiki.billing.metering",
        "CREATIVES_GENERATED": "kiki.billing.metering",
        "MESSAGES_SENT": "kiki.billing.metering",
        "PREDICTIONS_SERVED": "kiki.billing.metering",
        "Usage": "kiki.billing.metering",
        "record_usage": "kiki.billing.metering:record",
        "record_usages": "kiki.billing.metering:record_many",
    },
)
