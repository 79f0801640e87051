"""The catalogue: billable metrics, plans and their charges, coupons and prepaid credits.

Shaped like Lago's. Prices can be finer than a cent ($0.0015 a prediction), so unit prices,
tier bounds and fees of charges are Decimals in major units, validated exactly: floats are
refused, and so is more precision than 12 decimal places, so a price is never a silent
approximation. Amounts that reach an invoice as they are (a plan's base fee, a fixed coupon, a
wallet) are integers in the currency's minor unit.
"""

from __future__ import annotations

from decimal import Decimal, Inexact
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from kiki.billing.rounding import EXACT
from kiki.db.values import INT4_MAX, PgInt, PgText
from kiki.errors import InvalidInput
from kiki.money import MAX_MICROS, MICROS_PER_UNIT, normalize_currency, to_decimal

MAX_PLACES = 12
MAX_VALUE = Decimal(10) ** 18
_QUANTUM = Decimal(1).scaleb(-MAX_PLACES)


def exact_decimal(value: Any) -> Decimal:
    """A decimal in [0, 10^18) with at most 12 places, from a string, int or Decimal."""
    amount = to_decimal(value)
    if not 0 <= amount < MAX_VALUE:
        raise InvalidInput(f"{value!r} must be at least 0 and below 10^18")
    try:
        amount.quantize(_QUANTUM, context=EXACT)
    except Inexact:
        raise InvalidInput(f"{value!r} has more than {MAX_PLACES} decimal places") from None
    return amount


ExactDecimal = Annotated[
    Decimal,
    BeforeValidator(exact_decimal),
    PlainSerializer(lambda d: format(d, "f"), return_type=str),
]
"""A price, rate or quantity at the edge: "0.0015" or 3, never a float; 12 places, below 10^18."""

Currency = Annotated[str, AfterValidator(normalize_currency)]
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Code = Annotated[str, Field(pattern=CODE_PATTERN)]
# A zero-decimal currency's minor unit is a million micros: below this, every minor amount's
# micros fit the BIGINT columns and Money.
MinorAmount = Annotated[int, Field(ge=0, le=MAX_MICROS // MICROS_PER_UNIT)]
Version = Annotated[PgInt, Field(ge=1)]
MAX_TRIAL_DAYS = 3650


class FrozenModel(BaseModel):
    """Catalogue entries are values: immutable, and unknown fields are a mistake, not noise."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Aggregation(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"


class BillableMetric(FrozenModel):
    """What is measured: events with this code, aggregated over one property (except count)."""

    code: Code
    aggregation: Aggregation
    field_name: PgText | None = Field(None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _field_when_needed(self) -> BillableMetric:
        if (self.aggregation is Aggregation.COUNT) != (self.field_name is None):
            raise ValueError("field_name is required for every aggregation but count, and only")
        return self


class _Charge(FrozenModel):
    metric_code: Code


class StandardCharge(_Charge):
    """The same price for every unit."""

    charge_model: Literal["standard"] = "standard"
    unit_price: ExactDecimal


class Tier(FrozenModel):
    """Units above the previous tier's `up_to` and up to this one (inclusive); None: no end."""

    up_to: ExactDecimal | None
    unit_price: ExactDecimal = Decimal(0)
    flat_fee: ExactDecimal = Decimal(0)


class _TieredCharge(_Charge):
    tiers: tuple[Tier, ...] = Field(min_length=1)

    @field_validator("tiers")
    @classmethod
    def _ascending_and_open_ended(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        bounds = [tier.up_to for tier in tiers]
        if bounds[-1] is not None or None in bounds[:-1]:
            raise ValueError("only the last tier, and always the last, has no up_to")
        finite = [Decimal(0), *bounds[:-1]]
        if any(low >= high for low, high in pairwise(finite)):
            raise ValueError("tier up_to bounds must be positive and strictly increasing")
        return tiers


class GraduatedCharge(_TieredCharge):
    """Each tier prices the units that fall in it; a tier's flat fee once it has a unit."""

    charge_model: Literal["graduated"] = "graduated"


class VolumeCharge(_TieredCharge):
    """The tier that holds the total volume prices every unit, plus its flat fee."""

    charge_model: Literal["volume"] = "volume"


class PackageCharge(_Charge):
    """A price per started package of `package_size` units, after `free_units`."""

    charge_model: Literal["package"] = "package"
    package_size: ExactDecimal
    package_price: ExactDecimal
    free_units: ExactDecimal = Decimal(0)

    @field_validator("package_size")
    @classmethod
    def _positive(cls, size: Decimal) -> Decimal:
        if size <= 0:
            raise ValueError("package_size must be positive")
        return size


class PercentageCharge(_Charge):
    """`rate` percent of each transaction's amount plus `fixed_fee` per transaction.

    The first `free_events` transactions and the first `free_amount` of value are free (with
    both, the allowance ends when either runs out); each paid transaction's fee is then held
    between `per_transaction_min` and `per_transaction_max`.
    """

    charge_model: Literal["percentage"] = "percentage"
    rate: ExactDecimal
    fixed_fee: ExactDecimal = Decimal(0)
    free_events: int = Field(0, ge=0, le=INT4_MAX)
    free_amount: ExactDecimal = Decimal(0)
    per_transaction_min: ExactDecimal | None = None
    per_transaction_max: ExactDecimal | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> PercentageCharge:
        low, high = self.per_transaction_min, self.per_transaction_max
        if low is not None and high is not None and low > high:
            raise ValueError("per_transaction_min must not exceed per_transaction_max")
        return self


Charge = Annotated[
    StandardCharge | GraduatedCharge | VolumeCharge | PackageCharge | PercentageCharge,
    Field(discriminator="charge_model"),
]


class Interval(StrEnum):
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"


class Plan(FrozenModel):
    """A versioned price list: a base fee per interval and at most one charge per metric."""

    code: Code
    version: Version = 1
    name: PgText = Field("", max_length=200)
    interval: Interval
    currency: Currency
    base_fee_minor: MinorAmount = 0
    pay_in_advance: bool = False
    trial_days: int = Field(0, ge=0, le=MAX_TRIAL_DAYS, description="at most ten years")
    charges: tuple[Charge, ...] = ()

    @field_validator("charges")
    @classmethod
    def _one_charge_per_metric(cls, charges: tuple[Charge, ...]) -> tuple[Charge, ...]:
        codes = [charge.metric_code for charge in charges]
        if len(codes) != len(set(codes)):
            raise ValueError("a plan has at most one charge per billable metric")
        return charges


class CouponDuration(StrEnum):
    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


class Coupon(FrozenModel):
    """A fixed amount or a percentage off the subtotal, for one, N or every billing period."""

    code: Code
    amount_off_minor: MinorAmount | None = Field(None, gt=0)
    currency: Currency | None = None
    percent_off: ExactDecimal | None = None
    duration: CouponDuration = CouponDuration.ONCE
    duration_periods: PgInt | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Coupon:
        if (self.amount_off_minor is None) == (self.percent_off is None):
            raise ValueError("a coupon has either amount_off_minor or percent_off")
        if (self.amount_off_minor is None) != (self.currency is None):
            raise ValueError("currency goes with amount_off_minor, and only with it")
        if self.percent_off is not None and not 0 < self.percent_off <= 100:
            raise ValueError("percent_off must be above 0 and at most 100")
        if (self.duration is CouponDuration.REPEATING) != (self.duration_periods is not None):
            raise ValueError("duration_periods goes with a repeating duration, and only with it")
        return self

    def applies_in(self, periods_since_redeemed: int) -> bool:
        """Whether the coupon discounts the n-th invoice period after redemption (0: first)."""
        if self.duration is CouponDuration.ONCE:
            return periods_since_redeemed == 0
        if self.duration is CouponDuration.REPEATING:
            return periods_since_redeemed < (self.duration_periods or 0)
        return True


class Wallet(FrozenModel):
    """Prepaid credits, spent on invoices after tax (as Lago and Stripe's customer balance)."""

    balance_minor: MinorAmount
    currency: Currency
