"""Customer features, checked against numbers worked out by hand on three tiny customers."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from kiki.value.features import (
    FEATURE_NAMES,
    compute_features,
    features_for_new_customer,
    transactions_to_daily,
)

AS_OF = date(1997, 2, 28)


@pytest.fixture
def transactions() -> pd.DataFrame:
    rows = [
        ("a", "1997-01-01 09:00", 10.0),
        ("a", "1997-01-01 17:30", 5.0),  # same day: one $15 transaction
        ("a", "1997-01-11", 20.0),
        ("a", "1997-02-10", 30.0),
        ("a", "1997-03-01", 100.0),  # the day after as_of: must not leak in
        ("b", "1997-02-01", 0.0),  # a $0 purchase is still a purchase day
        ("c", "1997-03-05", 50.0),  # first seen after as_of: not a customer yet
        ("d", "1997-02-28 23:59", 12.0),  # late on as_of itself: counts
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "ts", "amount"])
    return frame.assign(ts=pd.to_datetime(frame["ts"], format="ISO8601"))


def test_same_day_purchases_merge_into_one_transaction(transactions: pd.DataFrame) -> None:
    daily = transactions_to_daily(transactions)
    a = daily[daily["customer_id"] == "a"]
    assert a["amount"].tolist() == [15.0, 20.0, 30.0, 100.0]
    assert a["ts"].tolist() == list(
        pd.to_datetime(["1997-01-01", "1997-01-11", "1997-02-10", "1997-03-01"])
    )


def test_columns_index_and_no_missing_values(transactions: pd.DataFrame) -> None:
    features = compute_features(transactions, AS_OF)
    assert tuple(features.columns) == FEATURE_NAMES
    assert features.index.tolist() == ["a", "b", "d"]  # c had bought nothing by as_of
    assert not features.isna().any().any()


def test_rfm_of_a_repeat_customer(transactions: pd.DataFrame) -> None:
    a = compute_features(transactions, AS_OF).loc["a"]
    # days: Jan 1 ($15), Jan 11 ($20), Feb 10 ($30); as_of Feb 28
    assert a["frequency"] == 2
    assert a["recency_days"] == 40  # Feb 10 − Jan 1
    assert a["tenure_days"] == 58  # Feb 28 − Jan 1
    assert a["days_since_last"] == 18
    assert a["monetary_total"] == 65.0
    assert a["monetary_mean"] == pytest.approx(65.0 / 3)
    assert a["monetary_max"] == 30.0
    assert a["monetary_first"] == 15.0
    assert a["monetary_last"] == 30.0
    assert a["monetary_repeat_mean"] == 25.0  # (20 + 30) / 2, as lifetimes' monetary_value
    assert a["gap_mean"] == 20.0  # gaps of 10 and 30 days
    assert a["gap_std"] == 10.0
    assert a["gap_last"] == 30.0
    assert a["overdue"] == pytest.approx(18 / 21)
    assert a["purchase_rate"] == pytest.approx(2 / 59)
    assert a["spend_rate"] == pytest.approx(65 / 59)
    assert (a["count_30d"], a["spend_30d"]) == (1, 30.0)  # only Feb 10 is within 30 days
    assert (a["count_90d"], a["spend_90d"]) == (3, 65.0)
    assert (a["count_prev_90d"], a["spend_prev_90d"]) == (0, 0.0)


def test_one_time_buyers_get_zeros_where_two_purchases_are_needed(
    transactions: pd.DataFrame,
) -> None:
    features = compute_features(transactions, AS_OF)
    b = features.loc["b"]
    assert (b["frequency"], b["recency_days"], b["tenure_days"]) == (0, 0, 27)
    assert b["monetary_total"] == 0.0
    assert (b["gap_mean"], b["gap_std"], b["gap_last"], b["monetary_repeat_mean"]) == (0, 0, 0, 0)
    assert b["overdue"] == 27.0
    d = features.loc["d"]
    assert (d["tenure_days"], d["days_since_last"], d["count_30d"]) == (0, 0, 1)


def test_nothing_after_as_of_changes_the_features(transactions: pd.DataFrame) -> None:
    later = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "ts": pd.to_datetime(["1997-03-02", "1998-01-01"]),
            "amount": [999.0, 1.0],
        }
    )
    with_future = pd.concat([transactions, later], ignore_index=True)
    pd.testing.assert_frame_equal(
        compute_features(with_future, AS_OF), compute_features(transactions, AS_OF)
    )


def test_a_new_customer_looks_like_a_first_purchase_today() -> None:
    new = features_for_new_customer(42.0, AS_OF)
    assert tuple(new.columns) == FEATURE_NAMES
    row = new.iloc[0]
    assert (row["frequency"], row["tenure_days"], row["days_since_last"]) == (0, 0, 0)
    assert (row["monetary_total"], row["monetary_last"], row["spend_30d"]) == (42.0, 42.0, 42.0)
    assert row["count_180d"] == 1


def test_no_purchases_yet_gives_an_empty_frame(transactions: pd.DataFrame) -> None:
    empty = compute_features(transactions, date(1996, 12, 31))
    assert empty.empty
    assert tuple(empty.columns) == FEATURE_NAMES
