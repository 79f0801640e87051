"""The pricing engine: what one charge costs for one period's usage, in exact minor units.

Rounding rule: every step is exact Decimal arithmetic in major units; the charge line's total
is rounded once, at the end, to the currency's minor unit, half up (`rounding.to_minor`), so
sub-cent unit prices add up before anything is rounded. Zero usage costs nothing in every
model: a tier's flat fee is due only once a unit falls in that tier. Negative usage is refused:
refunds are credit notes, not negative usage.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, localcontext

from kiki.billing.catalog import (
    Charge,
    FrozenModel,
    GraduatedCharge,
    PackageCharge,
    PercentageCharge,
    StandardCharge,
    Tier,
    VolumeCharge,
)
from kiki.billing.rounding import EXACT, to_minor
from kiki.errors import InvalidInput
from kiki.money import to_decimal

ZERO = Decimal(0)


class TierLine(FrozenModel):
    """One tier's part of a graduated or volume charge, exact, in major units."""

    from_units: Decimal
    up_to: Decimal | None
    units: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Decimal


class ChargeAmount(FrozenModel):
    """A priced charge line: the exact amount and the one rounding of it to minor units."""

    metric_code: str
    charge_model: str
    units: Decimal
    currency: str
    amount: Decimal
    amount_minor: int
    tiers: tuple[TierLine, ...] = ()


def price(
    charge: Charge,
    quantity: Decimal | int | str,
    currency: str,
    *,
    transactions: Sequence[Decimal] = (),
) -> ChargeAmount:
    """Price `quantity` units of a charge's metric; percentage charges also need the amount
    of each transaction, in time order, adding up to `quantity`."""
    units = to_decimal(quantity)
    if units < 0:
        raise InvalidInput(f"usage {units} of {charge.metric_code!r} is negative")
    tiers: tuple[TierLine, ...] = ()
    with localcontext(EXACT):
        match charge:
            case StandardCharge():
                amount = units * charge.unit_price
            case GraduatedCharge():
                tiers = _graduated(charge.tiers, units)
                amount = sum((line.amount for line in tiers), ZERO)
            case VolumeCharge():
                tiers = _volume(charge.tiers, units)
                amount = sum((line.amount for line in tiers), ZERO)
            case PackageCharge():
                amount = _packages(charge, units) * charge.package_price
            case PercentageCharge():
                amount = _percentage(charge, units, transactions)
    return ChargeAmount(
        metric_code=charge.metric_code,
        charge_model=charge.charge_model,
        units=units,
        currency=currency,
        amount=amount,
        amount_minor=to_minor(amount, currency),
        tiers=tiers,
    )


def _tier_line(tier: Tier, from_units: Decimal, units: Decimal) -> TierLine:
    return TierLine(
        from_units=from_units,
        up_to=tier.up_to,
        units=units,
        unit_price=tier.unit_price,
        flat_fee=tier.flat_fee,
        amount=units * tier.unit_price + tier.flat_fee,
    )


def _graduated(tiers: Sequence[Tier], units: Decimal) -> tuple[TierLine, ...]:
    lines: list[TierLine] = []
    lower = ZERO
    for tier in tiers:
        if units <= lower:
            break
        upper = units if tier.up_to is None else min(units, tier.up_to)
        lines.append(_tier_line(tier, lower, upper - lower))
        if tier.up_to is None:
            break
        lower = tier.up_to
    return tuple(lines)


def _volume(tiers: Sequence[Tier], units: Decimal) -> tuple[TierLine, ...]:
    lower = ZERO
    for tier in tiers:
        if tier.up_to is None or units <= tier.up_to:
            break
        lower = tier.up_to
    return (_tier_line(tier, lower, units),) if units > 0 else ()


def _packages(charge: PackageCharge, units: Decimal) -> Decimal:
    """Started packages after the free units: 201 units, 100 free, size 100 -> 2."""
    paid = units - charge.free_units
    if paid <= 0:
        return ZERO
    whole, rest = divmod(paid, charge.package_size)
    return whole + (1 if rest else 0)


def _percentage(
    charge: PercentageCharge, units: Decimal, transactions: Sequence[Decimal]
) -> Decimal:
    values = [to_decimal(value) for value in transactions]
    if any(value < 0 for value in values) or sum(values, ZERO) != units:
        raise InvalidInput(
            f"percentage charge on {charge.metric_code!r} needs each transaction's amount "
            f"(non-negative, adding up to the usage {units})"
        )
    events_left = charge.free_events or None
    amount_left = charge.free_amount or None
    free = events_left is not None or amount_left is not None
    total = ZERO
    for value in values:
        chargeable = value
        if free and events_left != 0:
            if amount_left is None or value <= amount_left:
                events_left = None if events_left is None else events_left - 1
                amount_left = None if amount_left is None else amount_left - value
                continue
            chargeable, free = value - amount_left, False
        fee = chargeable * charge.rate / 100 + charge.fixed_fee
        if charge.per_transaction_min is not None:
            fee = max(fee, charge.per_transaction_min)
        if charge.per_transaction_max is not None:
            fee = min(fee, charge.per_transaction_max)
        total += fee
    return total
