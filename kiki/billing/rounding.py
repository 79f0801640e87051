"""The one rounding rule of billing: compute exactly, round once per amount, half up.

Every charge line, proration, discount and tax is computed exactly (Decimal or integer
fractions) and rounded once, to the currency's minor unit, half up (0.5 cent -> 1 cent), as
Lago does. Half up rather than money.py's half even, so that our invoices print what Lago and
Stripe print for the same inputs; billed amounts are never negative, so half up is also half
away from zero.
"""

from __future__ import annotations

from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from functools import cache

from kiki.errors import InvalidInput
from kiki.money import MICROS_PER_UNIT, Money

# Sums and products of prices (at most 12 decimal places) never need 100 digits; should one
# ever do, Inexact is raised instead of a silent rounding.
EXACT = Context(prec=100, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])


def round_half_up(value: Decimal) -> int:
    """The nearest integer, halves away from zero for positive values."""
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


@cache
def minor_unit_factor(currency: str) -> int:
    """Minor units in one major unit: 100 for USD, 1 for JPY, 1000 for KWD."""
    return Money(MICROS_PER_UNIT, currency).minor_units()


def to_minor(amount: Decimal, currency: str) -> int:
    """An exact amount in major units, rounded once, half up, to the currency's minor unit."""
    with localcontext(EXACT):
        return round_half_up(amount * minor_unit_factor(currency))


def share(total: int, part: int, whole: int) -> int:
    """total × part / whole in integers, rounded half up: a prorated fee, a monthly share."""
    if whole <= 0:
        raise ValueError("share of an empty whole")
    return (2 * total * part + whole) // (2 * whole)


def minor_to_micros(amount_minor: int, currency: str) -> int:
    """Minor units as kiki.money micros (exact: a minor unit is a whole number of micros)."""
    return amount_minor * (MICROS_PER_UNIT // minor_unit_factor(currency))


def exact_minor(amount: Decimal, currency: str) -> int:
    """An amount someone pays or is credited, in minor units; finer than that is refused."""
    minor = amount * minor_unit_factor(currency)
    if minor != minor.to_integral_value():
        raise InvalidInput(f"{amount} {currency} is finer than the currency's smallest unit")
    return int(minor)
