from decimal import Decimal

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from kiki.errors import InvalidInput
from kiki.money import DecimalAmount, Money, micros_to_decimal_str, sum_micros_by


def test_amounts_convert_exactly_to_micros() -> None:
    assert Money.of("0.1", "usd") == Money(100_000, "USD")
    assert Money.of(Decimal("12.345678"), "EUR").micros == 12_345_678
    assert Money.of(7, "JPY").micros == 7_000_000
    # 0.1 + 0.2 is exactly 0.3 here, unlike binary floats.
    assert Money.of("0.1", "USD") + Money.of("0.2", "USD") == Money.of("0.3", "USD")


@pytest.mark.parametrize("bad", [0.1, True, "abc", "1e400000", "NaN", None, [1]])
def test_bad_amounts_are_refused_with_a_reason(bad: object) -> None:
    with pytest.raises(InvalidInput):
        Money.of(bad, "USD")


def test_finer_than_a_micro_is_refused_not_rounded() -> None:
    with pytest.raises(InvalidInput, match="more than 6 decimal places"):
        Money.of("0.0000001", "USD")


def test_currency_must_be_iso_shaped_and_match() -> None:
    with pytest.raises(InvalidInput, match="ISO 4217"):
        Money(1, "US")
    with pytest.raises(InvalidInput, match="cannot combine USD with EUR"):
        Money(1, "USD") + Money(1, "EUR")
    with pytest.raises(InvalidInput):
        assert Money(1, "USD") < Money(2, "EUR")


def test_minor_units_follow_the_currency_exponent() -> None:
    assert Money.of("12.345", "USD").minor_units() == 1234  # half-even
    assert Money.of("12.355", "USD").minor_units() == 1236
    assert Money.of("1500", "JPY").minor_units() == 1500
    assert Money.of("1.2345", "KWD").minor_units() == 1234


def test_rendering_is_the_shortest_exact_decimal() -> None:
    assert micros_to_decimal_str(12_500_000) == "12.5"
    assert micros_to_decimal_str(3_000_000) == "3"
    assert micros_to_decimal_str(-1) == "-0.000001"
    assert Money.of("12.50", "USD").to_json() == {
        "amount": "12.5",
        "micros": 12_500_000,
        "currency": "USD",
    }


class _Body(BaseModel):
    amount: DecimalAmount


def test_decimal_amount_field_accepts_strings_ints_decimals_and_refuses_floats() -> None:
    assert _Body(amount="12.34").amount == Decimal("12.34")
    assert _Body(amount=12).amount == Decimal(12)
    assert _Body.model_validate_json('{"amount": "0.1"}').amount == Decimal("0.1")
    assert _Body(amount=Decimal("0.1")).model_dump(mode="json") == {"amount": "0.1"}
    # Refused by pydantic, so the API's 422 names the field.
    with pytest.raises(ValidationError, match=r"amount\n.*binary float"):
        _Body(amount=0.1)
    with pytest.raises(ValidationError, match="more than 6 decimal places"):
        _Body(amount="0.0000001")
    with pytest.raises(ValidationError, match="too large"):
        _Body(amount="1e40")


def test_micros_sum_per_group_exactly_where_floats_would_not() -> None:
    groups = np.array([0, 0, 0, 2])
    micros = np.array([2**53, 1, 1, 7])
    assert sum_micros_by(groups, micros, 3).tolist() == [2**53 + 2, 0, 7]
    assert np.bincount(groups, weights=micros)[0] != 2**53 + 2  # why floats will not do
