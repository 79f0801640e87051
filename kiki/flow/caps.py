"""Platform-side caps: each pool's budget lease pushed to the platform as a daily budget.

A platform only stops delivering when its own budget says so; KIKI's lease lives in SyncShield.
So in the live market the most a platform may spend today on one of its campaigns is made
to equal what KIKI can account for: the spend already reported today plus what is left of the
leases behind it. A platform may deliver more than its daily budget on a day (its own terms,
`BudgetTerms.day_factor`), so the budget pushed is that allowance divided by the factor,
rounded down to the currency's minor unit: even a platform using its full overshoot stays
within the lease.

Pure: which budget to push, when a change is worth a push, and each platform's terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from kiki.money import minor_unit_micros

Credit = Literal["automatic", "none"]


@dataclass(frozen=True, slots=True)
class BudgetTerms:
    """How a platform treats the daily budget KIKI pushes (`push_budget`), from its own help
    pages; `credit` says whether it documents giving back spend beyond its own limits."""

    platform: str
    level: str  # the object whose daily budget push_budget sets
    day_factor: Fraction  # the most it delivers on a day, as a multiple of the daily budget
    period_limit: str  # what it promises over a longer period
    credit: Credit
    credit_note: str


TERMS: dict[str, BudgetTerms] = {
    terms.platform: terms
    for terms in (
        BudgetTerms(
            "google_ads",
            "campaign budget (amountMicros)",
            Fraction(2),
            "charges at most 30.4 x the average daily budget per monthly billing period",
            "automatic",
            "Google applies an overdelivery credit to the invoice by itself; no claim is filed",
        ),
        BudgetTerms(
            "meta",
            "campaign daily_budget",
            Fraction(7, 4),
            "spends at most 7 x the daily budget in a calendar week",
            "automatic",
            "Meta does not charge spend beyond its weekly limit; no claim process is documented",
        ),
        BudgetTerms(
            "tiktok",
            "campaign budget",
            Fraction(1),
            "its help pages say spend will not exceed a daily budget",
            "none",
            "no over-delivery credit process is documented: disputes go through TikTok support",
        ),
        BudgetTerms(
            "linkedin",
            "campaign (KIKI's ad group) dailyBudget",
            Fraction(3, 2),
            "charges at most 7 x the daily budget a week (continuous schedule)",
            "automatic",
            "LinkedIn does not charge beyond its weekly limit; no claim process is documented",
        ),
        BudgetTerms(
            "amazon",
            "Sponsored Products campaign budget (DAILY)",
            Fraction(5, 4),
            "averages the daily budget over the calendar month (unused budget carries over)",
            "none",
            "no over-delivery credit process is documented: disputes go through Amazon support",
        ),
    )
}


def daily_budget(platform: str, allowed_today_micros: int, currency: str) -> int:
    """The daily budget to push so that the platform, using all of its daily overshoot,
    delivers at most `allowed_today_micros` today: allowed / day_factor, rounded DOWN to the
    currency's minor unit (the platforms take whole cents, and never above the allowance)."""
    factor = TERMS[platform].day_factor
    budget = max(0, allowed_today_micros) * factor.denominator // factor.numerator
    return budget - budget % minor_unit_micros(currency)


def most_delivered(platform: str, budget_micros: int) -> int:
    """The most the platform's terms let it deliver in a day on `budget_micros`."""
    factor = TERMS[platform].day_factor
    return budget_micros * factor.numerator // factor.denominator


def push_due(last_micros: int | None, wanted_micros: int, threshold: float) -> bool:
    """Whether a new daily budget is worth a push. Never pushed (or the last push failed):
    yes. Any cut: yes, or the platform could spend beyond the lease. A rise only when it
    exceeds `threshold` (a fraction of the last budget): a budget a little below the lease
    costs some delivery, a push per tick costs the platform's rate budget."""
    if last_micros is None or wanted_micros < last_micros:
        return True
    return wanted_micros > last_micros * (1 + threshold)
