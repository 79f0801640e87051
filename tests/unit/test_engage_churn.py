"""The churn model: BG/NBD's closed forms against lifetimes, labels that never look past their
window, training that never looks past its end, the metrics, and a model that survives a
save and explains each score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from lifetimes import BetaGeoFitter
from scipy.special import expit

from kiki.engage import metrics
from kiki.engage.churn import (
    MODEL_FEATURES,
    BGNBDParams,
    ChurnConfig,
    TrainedChurnModel,
    bgnbd_scores,
    churn_inputs,
    churned,
    fit_churn_model,
    level_shift,
    logit,
    training_set,
)

START = pd.Timestamp("2024-01-01")
END = pd.Timestamp("2024-09-30")
SMALL = ChurnConfig(horizon_days=30, cuts=3, rounds=20, min_child_weight=1.0)


def simulate(customers: int = 400, days: int = 360, seed: int = 1) -> pd.DataFrame:
    """Purchases from a BG/NBD-like world: each customer joins in the first 60 days, buys at
    their own Poisson rate and may leave for good after each purchase."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(customers):
        day = float(rng.integers(0, 60))
        rate, leave = rng.gamma(1.5, 1 / 40), rng.beta(1.0, 4.0)
        while day < days:
            rows.append(
                (f"c{i:03d}", START + pd.Timedelta(days=int(day)), float(rng.integers(5, 80)))
            )
            if rng.random() < leave:
                break
            day += rng.exponential(1 / rate)
    return pd.DataFrame(rows, columns=["customer_id", "ts", "amount"])


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return simulate()


def test_bgnbd_closed_forms_match_lifetimes() -> None:
    params = BGNBDParams(r=0.24, alpha=4.4, a=0.79, b=2.43)
    rfm = pd.DataFrame({"x": [0.0, 1, 4, 10], "t_x": [0.0, 3, 20, 30], "T": [38.0, 38, 38, 31]})
    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series(params.model_dump())
    scores = bgnbd_scores(params, rfm, horizon_days=70)
    alive = fitter.conditional_probability_alive(rfm["x"], rfm["t_x"], rfm["T"])
    expected = fitter.conditional_expected_number_of_purchases_up_to_time(
        10, rfm["x"], rfm["t_x"], rfm["T"]
    )
    np.testing.assert_allclose(scores["bgnbd_p_alive"], alive, rtol=1e-9)
    np.testing.assert_allclose(scores["bgnbd_expected_purchases"], expected, rtol=1e-7)
    # P(no purchase) falls as the window grows, and never below P(dead).
    longer = bgnbd_scores(params, rfm, horizon_days=700)["bgnbd_p_no_purchase"]
    assert (longer < scores["bgnbd_p_no_purchase"]).all()
    assert (longer >= 1 - scores["bgnbd_p_alive"] - 1e-12).all()


def test_labels_count_only_the_window_and_zero_dollar_purchases(history: pd.DataFrame) -> None:
    rows = [
        ("zero", "2024-01-05", 10.0),
        ("zero", "2024-05-05", 0.0),  # a $0 purchase inside the window: not churned
        ("late", "2024-01-05", 10.0),
        ("late", "2024-06-20", 25.0),  # after the window: still churned
        ("cut_day", "2024-01-05", 10.0),
        ("cut_day", "2024-05-01", 25.0),  # on the cut day itself: before the window
    ]
    extra = pd.DataFrame(rows, columns=["customer_id", "ts", "amount"])
    frame = pd.concat([history, extra.assign(ts=pd.to_datetime(extra["ts"]))])
    inputs = churn_inputs(frame, "2024-05-01", 30)
    labels = pd.Series(churned(frame, inputs), index=inputs.features.index)
    assert labels[["zero", "late", "cut_day"]].tolist() == [0, 1, 1]
    days = frame["ts"]
    window = frame[(days > "2024-05-01") & (days <= "2024-05-31")]
    assert set(labels[labels == 0].index) == set(window["customer_id"]) & set(labels.index)
    assert list(inputs.features.columns) == list(MODEL_FEATURES)


def test_training_windows_never_read_past_the_end(history: pd.DataFrame) -> None:
    data = training_set(history, END, SMALL)
    clipped = training_set(history[history["ts"] <= END], END, SMALL)
    pd.testing.assert_frame_equal(data.features, clipped.features)
    assert data.labels.tolist() == clipped.labels.tolist()
    newest = churn_inputs(history, END - pd.Timedelta(days=30), 30)
    assert len(data.features) > len(newest.features)  # three windows stacked
    assert data.features.iloc[: len(newest.features)].index.equals(newest.features.index)


def test_model_saves_loads_and_explains_its_scores(history: pd.DataFrame, tmp_path: Path) -> None:
    model = fit_churn_model(history, END, SMALL)
    inputs = model.inputs(history, END, 90)
    p = model.predict(inputs)
    assert ((p > 0) & (p < 1)).all() and len(p) == len(inputs.features)
    again = TrainedChurnModel.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(again.predict(inputs), p, rtol=1e-6)
    contributions = model.contributions(inputs)
    np.testing.assert_allclose(contributions.sum(axis=1), logit(p), atol=1e-4)
    assert list(contributions.columns) == [*MODEL_FEATURES, "bgnbd_prior"]


def test_bgnbd_sets_the_level_and_the_trees_the_order(history: pd.DataFrame) -> None:
    model = fit_churn_model(history, END, SMALL)
    for horizon in (30, 120):
        inputs = model.inputs(history, END, horizon)
        p = model.predict(inputs)
        # The population's mean P(churn) is BG/NBD's, whatever the horizon ...
        assert p.mean() == pytest.approx(inputs.prior.mean(), abs=1e-6)
        # ... and the order is the trees': one offset on every row's log-odds.
        offset = logit(p) - model.booster.predict(
            xgb.DMatrix(inputs.features[list(MODEL_FEATURES)], base_margin=logit(inputs.prior)),
            output_margin=True,
        )
        assert np.ptp(offset) < 1e-4


def test_level_shift_solves_for_the_mean() -> None:
    margins = np.array([-2.0, 0.0, 1.0, 3.0])
    shift = level_shift(margins, np.array([0.2, 0.3, 0.4, 0.5]))
    assert expit(margins - shift).mean() == pytest.approx(0.35, abs=1e-9)
    assert level_shift(np.zeros(0), np.zeros(0)) == 0.0


def test_the_model_ranks_better_than_chance(history: pd.DataFrame) -> None:
    model = fit_churn_model(history[history["ts"] <= END], END, SMALL)
    inputs = model.inputs(history, END, 60)
    assert metrics.roc_auc(churned(history, inputs), model.predict(inputs)) > 0.65


def test_ranking_metrics_on_known_cases() -> None:
    y = [1, 1, 0, 0]
    assert metrics.roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert metrics.roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert metrics.roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5  # ties count one half
    assert metrics.roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == 0.75
    assert metrics.pr_auc(y, [0.9, 0.8, 0.2, 0.1]) == 1.0
    # ranked 1, 0, 1: precision 1 at recall 0.5, 2/3 at recall 1
    assert metrics.pr_auc([1, 0, 1], [0.9, 0.5, 0.1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # all tied: one step, precision = base rate, whatever the row order
    assert metrics.pr_auc([0, 1, 1, 0], [0.3] * 4) == 0.5


def test_probability_metrics_and_calibration_table() -> None:
    y = np.array([0, 1] * 50)
    p = np.where(y == 1, 0.8, 0.3)
    assert metrics.brier(y, p) == pytest.approx((0.2**2 + 0.3**2) / 2)
    table = metrics.calibration_table(y, p, bins=2)
    assert [(b.customers, b.mean_predicted, b.observed) for b in table] == [
        (50, pytest.approx(0.3), 0.0),
        (50, pytest.approx(0.8), 1.0),
    ]
    assert metrics.calibration_error(table) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.brier([0, 1], [0.5, 1.5])
