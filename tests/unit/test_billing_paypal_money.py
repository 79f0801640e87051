"""PayPal's amounts are decimal strings in the currency's minor-unit digits: the conversion
from and to KIKI's integer minor units is exact both ways, and anything finer is refused."""

from __future__ import annotations

import pytest

from kiki.billing.paypal_gateway import from_paypal_value, to_paypal_value
from kiki.errors import InvalidInput


@pytest.mark.parametrize(
    ("minor", "currency", "value"),
    [(6780, "EUR", "67.80"), (5, "USD", "0.05"), (1000, "JPY", "1000"), (1234, "KWD", "1.234"),
     (999_999_999_999, "USD", "9999999999.99")],
)  # fmt: skip
def test_minor_units_round_trip_through_paypal_strings(
    minor: int, currency: str, value: str
) -> None:
    assert to_paypal_value(minor, currency) == value
    assert from_paypal_value(value, currency) == minor


def test_finer_than_the_currency_or_not_a_number_is_refused() -> None:
    with pytest.raises(InvalidInput, match="finer"):
        from_paypal_value("1.005", "USD")
    with pytest.raises(InvalidInput, match="not an amount"):
        from_paypal_value("ten", "USD")
