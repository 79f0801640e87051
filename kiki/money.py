"""Exact money: integer micros (1 unit = 1,000,000 micros) plus an ISO 4217 currency.

Floats never enter: amounts come in as `Decimal`, `int` or decimal strings and are converted
exactly; an amount finer than one micro is refused rather than rounded silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field, PlainSerializer

from kiki.errors import InvalidInput

MICROS_PER_UNIT = 1_000_000
# Micros are stored as PostgreSQL bigint: about 9.2 trillion units at most.
MAX_MICROS = 2**63 - 1
# The largest amount in major units whose micros fit: a bound for amounts at the edge.
MAX_AMOUNT = Decimal(MAX_MICROS) / MICROS_PER_UNIT
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# Minor units where they differ from 2 (ISO 4217); used for invoices and payment processors.
_MINOR_UNIT_EXPONENTS = {
    "BHD": 3, "CLP": 0, "IQD": 3, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3,
    "LYD": 3, "OMR": 3, "PYG": 0, "TND": 3, "UGX": 0, "VND": 0, "XAF": 0, "XOF": 0,
}  # fmt: skip


def normalize_currency(code: str) -> str:
    """Upper-case a currency code and check it has the ISO 4217 shape."""
    if not isinstance(code, str) or not _CURRENCY_RE.match(code.strip().upper()):
        raise InvalidInput(f"currency {code!r} is not an ISO 4217 code such as 'USD' or 'EUR'")
    return code.strip().upper()


def minor_unit_micros(currency: str) -> int:
    """Micros in one minor unit of the currency: 10,000 for USD cents, 1,000,000 for JPY."""
    return MICROS_PER_UNIT // 10 ** _MINOR_UNIT_EXPONENTS.get(normalize_currency(currency), 2)


def to_decimal(value: Any) -> Decimal:
    """Convert a decimal string, int or Decimal to Decimal exactly; floats are refused."""
    if isinstance(value, bool | float):
        raise InvalidInput(
            f'amount {value!r} is a binary float; send a decimal string such as "12.34"'
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidInput(
                f'amount {value!r} is not a decimal number such as "12.34"'
            ) from None
    else:
        raise InvalidInput(f"amount {value!r} must be a decimal string or an integer")
    if not result.is_finite():
        raise InvalidInput(f"amount {value!r} must be a finite number")
    return result


def decimal_to_micros(amount: Decimal) -> int:
    """Exact conversion; more precision than one micro is an error, never a rounding."""
    scaled = amount * MICROS_PER_UNIT
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"amount {amount} has more than 6 decimal places (finer than a micro)")
    if abs(scaled) > MAX_MICROS:
        raise InvalidInput(
            f"amount {amount} is too large (at most {MAX_MICROS // MICROS_PER_UNIT:,})"
        )
    return int(scaled)


def micros_to_decimal_str(micros: int) -> str:
    """'12.5' for 12,500,000 micros: shortest exact decimal, no exponent."""
    text = format(Decimal(micros) / MICROS_PER_UNIT, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@dataclass(frozen=True, slots=True, order=False)
class Money:
    micros: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.micros, int) or isinstance(self.micros, bool):
            raise InvalidInput(f"Money.micros must be an int, got {type(self.micros).__name__}")
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @classmethod
    def of(cls, amount: Any, currency: str) -> Money:
        """Money from a decimal amount in major units: Money.of("12.34", "USD")."""
        return cls(decimal_to_micros(to_decimal(amount)), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @property
    def amount(self) -> Decimal:
        return Decimal(self.micros) / MICROS_PER_UNIT

    def __str__(self) -> str:
        return f"{micros_to_decimal_str(self.micros)} {self.currency}"

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise InvalidInput(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.micros + other.micros, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.micros - other.micros, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.micros, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.micros < other.micros

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.micros <= other.micros

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.micros > other.micros

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.micros >= other.micros

    def minor_units(self, rounding: str = ROUND_HALF_EVEN) -> int:
        """Amount in the currency's minor unit (cents for USD, yen for JPY)."""
        minor = Decimal(self.micros) / minor_unit_micros(self.currency)
        return int(minor.to_integral_value(rounding=rounding))

    def to_json(self) -> dict[str, str | int]:
        return {
            "amount": micros_to_decimal_str(self.micros),
            "micros": self.micros,
            "currency": self.currency,
        }


def _parse_amount(value: Any) -> Decimal:
    # The HTTP layer parses JSON numbers as Decimal, so a float here is a programming error.
    # Refused here as a ValueError, so the 422 names the field: not a number, finer than a
    # micro, or beyond what integer micros can hold.
    try:
        amount = to_decimal(value)
        decimal_to_micros(amount)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None
    return amount


DecimalAmount = Annotated[
    Decimal,
    BeforeValidator(_parse_amount),
    PlainSerializer(lambda d: format(d, "f"), return_type=str),
]
"""A money amount at the public edge: accepts "12.34", 12.34 or 12 and keeps it exact."""
NonNegativeAmount = Annotated[DecimalAmount, Field(ge=0)]
PositiveAmount = Annotated[DecimalAmount, Field(gt=0)]


def sum_micros_by(group: np.ndarray, micros: np.ndarray, groups: int) -> np.ndarray:
    """Exact int64 sums of integer micros per group (`np.bincount` would add them as floats,
    inexact past 2**53)."""
    out = np.zeros(groups, dtype=np.int64)
    np.add.at(out, group, np.asarray(micros, dtype=np.int64))
    return out
