"""LTV metrics on vectors whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kiki.value.metrics import (
    decile_mape,
    evaluate,
    mae,
    normalized_gini,
    rmse,
    spearman,
    total_error,
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
