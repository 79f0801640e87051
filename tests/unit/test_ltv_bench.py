"""The benchmark's stacked training examples: labels come only from inside the calibration
period, and every cut sees only the customers who had bought by then. Its forecast over a
longer horizon grows the book halfway (in logs) between the network's rate holding and
fading as BG/NBD expects, shares it among customers by BG/NBD, and moves its total halfway
(in logs) to another model's when given one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.ltv import forecast
from kiki.value.bgnbd import BGNBD
from kiki.value.features import compute_features
from kiki.value.training import LTVTrainingConfig, training_examples
from kiki.value.ziln import ZILNConfig, train_ziln

END = pd.Timestamp("2024-01-20")
# cuts Jan 10 (window Jan 11..20) and Jan 5 (Jan 6..15); a third, Dec 31, has no customers
CONFIG = LTVTrainingConfig(horizon_days=10, cuts=3, cut_step_days=5)


@pytest.fixture
def transactions() -> pd.DataFrame:
    rows = [(f"c{i:02d}", "2024-01-01", 10.0) for i in range(60)]
    rows += [
        ("c00", "2024-01-12", 20.0),  # inside both label windows
        ("c00", "2024-01-25", 99.0),  # after the end: never a label
        ("new", "2024-01-08", 5.0),  # first bought after the Jan 5 cut
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "ts", "amount"])
    return frame.assign(ts=pd.to_datetime(frame["ts"]))


def test_cuts_stack_newest_first_and_labels_stop_at_the_end(transactions: pd.DataFrame) -> None:
    x, y, customers = training_examples(transactions, END, CONFIG)
    assert len(x) == 61 + 60  # the empty Dec 31 cut ends the stacking
    newest, older = slice(0, 61), slice(61, None)
    assert "new" in customers[newest] and "new" not in customers[older]
    labels = pd.Series(y, index=customers)
    assert labels.iloc[newest].to_dict()["c00"] == 20.0
    assert labels.iloc[older].to_dict()["c00"] == 20.0
    assert y.sum() == 40.0  # the $99 of Jan 25 lies past the end
    assert x["monetary_total"].iloc[newest].to_dict()["new"] == 5.0


def test_purchases_after_the_end_change_nothing(transactions: pd.DataFrame) -> None:
    kept = transactions[transactions["ts"] <= END]
    with_future = training_examples(transactions, END, CONFIG)
    without = training_examples(kept, END, CONFIG)
    pd.testing.assert_frame_equal(with_future[0], without[0])
    assert with_future[1].tolist() == without[1].tolist()


def test_forecast_grows_the_book_between_holding_and_fading_and_shares_it_as_bgnbd_expects(
    transactions: pd.DataFrame,
) -> None:
    x, y, _ = training_examples(transactions, END, CONFIG)
    config = ZILNConfig(hidden=(4,), max_epochs=2)
    model = train_ziln(x, y, config, horizon_days=CONFIG.horizon_days)
    own = model.predict(compute_features(transactions, END))["expected"]
    window = forecast(model, transactions, END, CONFIG.horizon_days)["expected"]
    np.testing.assert_allclose(window, own)  # its own window: the network's forecast as is

    features = compute_features(transactions, END)
    ratio = BGNBD.fit(features).purchase_ratio(features, 40, 10)
    fades = np.average(ratio, weights=own)  # the book's purchases over 40 days / over 10
    holds = forecast(model, transactions, END, 40, rate_holds=1.0)["expected"]
    assert holds.sum() == pytest.approx(4 * own.sum())  # the rate holds: 40 / 10
    fading = forecast(model, transactions, END, 40, rate_holds=0.0)["expected"]
    np.testing.assert_allclose(fading, own * ratio)  # each customer as BG/NBD expects
    longer = forecast(model, transactions, END, 40)["expected"]
    assert longer.sum() == pytest.approx(np.sqrt(4 * fades) * own.sum())  # halfway, in logs
    np.testing.assert_allclose(longer / own / ratio, (longer / own / ratio).iloc[0])


def test_an_anchor_moves_the_book_total_halfway_in_logs_and_keeps_every_share(
    transactions: pd.DataFrame,
) -> None:
    x, y, _ = training_examples(transactions, END, CONFIG)
    model = train_ziln(x, y, ZILNConfig(hidden=(4,), max_epochs=2), horizon_days=10)
    alone = forecast(model, transactions, END, 40)["expected"]
    anchor = 9.0 * alone.sum()
    combined = forecast(model, transactions, END, 40, anchor_total=anchor)["expected"]
    assert combined.sum() == pytest.approx(3.0 * alone.sum())  # sqrt(ours · 9 ours)
    np.testing.assert_allclose(combined / combined.sum(), alone / alone.sum())


@pytest.mark.parametrize(
    ("options", "message"),
    [({"rate_holds": 1.5}, "rate_holds"), ({"anchor_total": 0.0}, "anchor_total")],
)
def test_forecast_refuses_a_weight_outside_0_1_and_a_book_total_that_is_not_positive(
    transactions: pd.DataFrame, options: dict[str, float], message: str
) -> None:
    x, y, _ = training_examples(transactions, END, CONFIG)
    model = train_ziln(x, y, ZILNConfig(hidden=(4,), max_epochs=1), horizon_days=10)
    with pytest.raises(ValueError, match=message):
        forecast(model, transactions, END, 40, **options)
