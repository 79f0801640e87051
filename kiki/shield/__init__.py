"""SyncShield: budget governance, and the breakers and rate limits that guard it.

The public face other services use: budget commands and their results (the budget actors'
protocol), the shard a campaign lives on, platform admission, rate-limit settings and
consent. Everything else in this package is SyncShield's own.
"""

from kiki.shield.book import BudgetOp, OpResult, shard_of
from kiki.shield.consent import CustomerId, Purpose, current_consent
from kiki.shield.guard import Admission
from kiki.shield.policy import PLATFORMS
from kiki.shield.ratelimit import RateLimitConfig, RateLimiter

__all__ = [
    "PLATFORMS",
    "Admission",
    "BudgetOp",
    "CustomerId",
    "OpResult",
    "Purpose",
    "RateLimitConfig",
    "RateLimiter",
    "current_consent",
    "shard_of",
]
