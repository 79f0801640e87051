"""LTV metrics on vectors whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kiki.value.metrics import (
    METRICS,
    beats,
    decile_mape,
    evaluate,
    mae,
    normalized_gini,
    rmse,
    spearman,
    total_error,
    win_shares,
)

Y = np.array([0.0, 0.0, 3.0, 1.0, 10.0, 0.0, 7.0, 2.0])


def test_gini_of_the_perfect_order_is_one_and_of_the_reverse_at_most_zero() -> None:
    assert normalized_gini(Y, Y) == pytest.approx(1.0)
    assert normalized_gini(Y, Y * 3 + 1) == pytest.approx(1.0)  # only the order counts
    assert normalized_gini(Y, -Y) <= 0.0


def test_gini_does_not_depend_on_the_order_of_tied_predictions() -> None:
    pred = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    shuffled = np.array([5, 1, 7, 3, 0, 2, 6, 4])
    assert normalized_gini(Y, pred) == pytest.approx(normalized_gini(Y[shuffled], pred[shuffled]))


def test_mae_rmse_spearman_and_total_error_on_known_vectors() -> None:
    true, pred = np.array([0.0, 2.0, 4.0]), np.array([1.0, 2.0, 1.0])
    assert mae(true, pred) == pytest.approx(4 / 3)
    assert rmse(true, pred) == pytest.approx(math.sqrt(10 / 3))
    assert total_error(true, pred) == pytest.approx(4 / 6 - 1)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)


def test_decile_mape_on_a_constructed_case() -> None:
    pred = np.arange(1.0, 21.0)  # 20 customers, two per decile
    assert decile_mape(pred, pred) == pytest.approx(0.0)
    assert decile_mape(2 * pred, pred) == pytest.approx(0.5)  # every decile half of the truth
    true = pred.copy()
    true[-2:] *= 2  # only the top decile is off, by half
    assert decile_mape(true, pred) == pytest.approx(0.05)


def test_evaluate_reports_all_six_metrics() -> None:
    result = evaluate(Y, Y + 1)
    assert set(result) == {"gini", "spearman", "mae", "rmse", "decile_mape", "total_error"}
    assert result["mae"] == pytest.approx(1.0)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        mae([1.0, 2.0], [1.0])


def test_beats_knows_which_way_each_metric_is_better() -> None:
    assert beats("gini", 0.7, 0.6) == 1.0 and beats("spearman", 0.4, 0.5) == 0.0
    assert beats("rmse", 80.0, 90.0) == 1.0 and beats("mae", 30.0, 30.0) == 0.5
    assert beats("total_error", -0.02, 0.05) == 1.0  # closest to 0 wins, either side
    assert beats("total_error", 0.05, -0.02) == 0.0


SPEND = np.random.default_rng(7).lognormal(3.0, 1.0, 60) * (np.arange(60) % 3 > 0)


def test_a_win_on_every_customer_holds_in_every_resample() -> None:
    perfect, shifted = SPEND, SPEND + 1.0 + np.arange(60)[::-1] * 0.5
    shares = win_shares(SPEND, perfect, shifted, resamples=50)
    assert list(shares) == list(METRICS)
    assert shares == {metric: 1.0 for metric in METRICS}
    assert win_shares(SPEND, shifted, perfect, resamples=50)["rmse"] == 0.0
    assert win_shares(SPEND, shifted, shifted, resamples=50) == {m: 0.5 for m in METRICS}


def test_a_win_one_customer_decides_is_not_firm() -> None:
    theirs = SPEND + 1.0  # off by 1 for everyone: MAE 1
    ours = SPEND.copy()
    ours[0] += 0.9 * SPEND.size  # right for all but one, who alone costs an MAE of 0.9
    assert mae(SPEND, ours) < mae(SPEND, theirs)
    share = win_shares(SPEND, ours, theirs, resamples=400)["mae"]
    # ours loses every resample that draws that customer twice or more (about 26%)
    assert 0.6 < share < 0.85
    assert win_shares(SPEND, ours, theirs, resamples=400) == win_shares(
        SPEND, ours, theirs, resamples=400
    )  # the same seed, the same draws


def test_win_shares_needs_a_resample() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        win_shares(SPEND, SPEND, SPEND, resamples=0)
