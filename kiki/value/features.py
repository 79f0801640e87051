"""Customer features for the lifetime-value model: the one function training and serving share.

A customer is described only by their own purchase days up to `as_of`, so the same code scores
a training cut in the past and a live customer today, and nothing after `as_of` can leak in.
Every feature is a non-negative count, number of days or dollar amount (the model's scaler
takes log1p of all of them), and a customer with one purchase gets 0 where a feature needs two.

Naming follows `lifetimes`: `frequency` counts repeat purchase days, `recency_days` is the age
at the last purchase (last − first), `tenure_days` the age at `as_of` (as_of − first).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

WINDOWS: tuple[int, ...] = (30, 90, 180)

FEATURE_NAMES: tuple[str, ...] = (
    "frequency",
    "recency_days",
    "tenure_days",
    "days_since_last",
    "monetary_total",
    "monetary_mean",
    "monetary_max",
    "monetary_std",
    "monetary_first",
    "monetary_last",
    "monetary_repeat_mean",
    "gap_mean",
    "gap_std",
    "gap_last",
    "overdue",
    "purchase_rate",
    "spend_rate",
    *(f"count_{w}d" for w in WINDOWS),
    *(f"spend_{w}d" for w in WINDOWS),
    "count_prev_90d",
    "spend_prev_90d",
)


def _day(value: date | pd.Timestamp | str) -> pd.Timestamp:
    return pd.Timestamp(value).normalize()


def transactions_to_daily(df: pd.DataFrame) -> pd.DataFrame:
    """Merge each customer's purchases of one day into one transaction (as BG/NBD counts them).

    Returns columns customer_id, ts (midnight), amount, sorted by customer then day.
    """
    days = df["ts"].dt.normalize()
    return (
        df.assign(ts=days).groupby(["customer_id", "ts"], as_index=False, sort=True)["amount"].sum()
    )


def compute_features(transactions: pd.DataFrame, as_of: date | pd.Timestamp | str) -> pd.DataFrame:
    """Features of every customer with a purchase on or before `as_of`, indexed by customer_id.

    `transactions` needs customer_id, ts and amount (dollars); later rows are ignored. Columns are
    exactly FEATURE_NAMES, float64, never NaN.
    """
    cut = _day(as_of)
    past = transactions.loc[
        transactions["ts"].dt.normalize() <= cut, ["customer_id", "ts", "amount"]
    ]
    daily = transactions_to_daily(past)
    if daily.empty:
        return pd.DataFrame(
            columns=list(FEATURE_NAMES), index=pd.Index([], name="customer_id"), dtype="float64"
        )

    customer = daily["customer_id"]
    age = (cut - daily["ts"]).dt.days.to_numpy()  # days before as_of, 0 on as_of
    same = customer.eq(customer.shift()).to_numpy()
    gap = np.where(same, -np.diff(age, prepend=age[0]), np.nan)  # days since previous purchase
    frame = daily.assign(age=age, gap=gap)
    grouped = frame.groupby("customer_id", sort=True)
    out = grouped.agg(
        n=("amount", "size"),
        first_age=("age", "max"),
        last_age=("age", "min"),
        monetary_total=("amount", "sum"),
        monetary_mean=("amount", "mean"),
        monetary_max=("amount", "max"),
        monetary_first=("amount", "first"),
        monetary_last=("amount", "last"),
        gap_mean=("gap", "mean"),
        gap_last=("gap", "last"),
    )
    out["monetary_std"] = grouped["amount"].std(ddof=0)
    out["gap_std"] = grouped["gap"].std(ddof=0)

    frequency = out["n"] - 1
    tenure = out["first_age"].astype("float64")
    out["frequency"] = frequency
    out["tenure_days"] = tenure
    out["days_since_last"] = out["last_age"]
    out["recency_days"] = tenure - out["last_age"]
    repeat_spend = out["monetary_total"] - out["monetary_first"]
    out["monetary_repeat_mean"] = repeat_spend / frequency.where(frequency > 0)
    out["overdue"] = out["last_age"] / (out["gap_mean"].fillna(0.0) + 1.0)
    out["purchase_rate"] = frequency / (tenure + 1.0)
    out["spend_rate"] = out["monetary_total"] / (tenure + 1.0)
    for w in WINDOWS:
        recent = frame.loc[frame["age"] < w].groupby("customer_id")["amount"]
        out[f"count_{w}d"] = recent.size()
        out[f"spend_{w}d"] = recent.sum()
    previous = frame.loc[(frame["age"] >= 90) & (frame["age"] < 180)].groupby("customer_id")
    out["count_prev_90d"] = previous["amount"].size()
    out["spend_prev_90d"] = previous["amount"].sum()

    return out[list(FEATURE_NAMES)].astype("float64").fillna(0.0)


def features_for_new_customer(
    spend: float, as_of: date | pd.Timestamp | str, customer_id: str = "new"
) -> pd.DataFrame:
    """Features of a customer we have never seen whose only purchase, of `spend`, is on as_of."""
    one = pd.DataFrame({"customer_id": [customer_id], "ts": [_day(as_of)], "amount": [spend]})
    return compute_features(one, as_of)
