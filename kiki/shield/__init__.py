"""SyncShield: budget governance, and the breakers and rate limits that guard it.

The public face other services use: budget commands and their results (the budget actors'
protocol), the shard a campaign lives on, platform admission, rate-limit settings and
consent. Everything else in this package is SyncShield's own."""

from kiki.faces import lazy

__all__, __getattr__ = lazy(
    __name__,
    {
        "PLATFORMS": "kiki.shield.policy",
        "Admission": "kiki.shield.guard",
        "BudgetOp": "kiki.shield.book",
        "CustomerId": "kiki.shield.consent",
        "OpResult": "kiki.shield.book",
        "Purpose": "kiki.shield.consent",
        "RateLimitConfig": "kiki.shield.ratelimit",
        "RateLimiter": "kiki.shield.ratelimit",
        "current_consent": "kiki.shield.consent",
        "shard_of": "kiki.shield.book",
    },
)
