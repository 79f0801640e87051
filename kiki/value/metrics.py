"""How good a lifetime-value forecast is: ranking (Gini, Spearman), error (MAE, RMSE) and
calibration (decile MAPE, total error), as the ZILN paper and Google's lifetime_value report.

Every function takes the true and the predicted value per customer, in the same order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

ArrayLike = npt.ArrayLike
METRICS = ("gini", "spearman", "mae", "rmse", "decile_mape", "total_error")
HIGHER_IS_BETTER = frozenset({"gini", "spearman"})  # the others: closer to 0 is better


def _arrays(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(y_true, dtype="float64").ravel()
    pred = np.asarray(y_pred, dtype="float64").ravel()
    if true.shape != pred.shape or true.size == 0:
        raise ValueError("y_true and y_pred need the same, non-zero length")
    return true, pred


def _ranked(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sorted by descending prediction, each y_true replaced by the mean of its tie group.

    A model that gives many customers the same prediction ranks them in no order; averaging
    their outcomes scores it by the expectation over every order, so no metric depends on the
    order of the input rows.
    """
    order = np.argsort(-y_pred, kind="stable")
    pred, true = y_pred[order], y_true[order]
    starts = np.flatnonzero(np.r_[True, pred[1:] != pred[:-1]])
    sizes = np.diff(np.r_[starts, pred.size])
    return np.repeat(np.add.reduceat(true, starts) / sizes, sizes), pred


def _gini(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Raw Gini of the gain chart: 2 × mean cumulative share of y_true, customers taken by
    descending y_pred, − 1."""
    true, _ = _ranked(y_true, y_pred)
    return float(2.0 * (np.cumsum(true) / true.sum()).mean() - 1.0)


def normalized_gini(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Gini of y_true ranked by y_pred over the Gini of the perfect ranking (1 = perfect,
    0 = random, < 0 = worse than random): scale-free, so it judges the ranking alone."""
    true, pred = _arrays(y_true, y_pred)
    return _gini(true, pred) / _gini(true, true)


def spearman(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Spearman rank correlation (ties get average ranks)."""
    true, pred = _arrays(y_true, y_pred)
    return float(stats.spearmanr(true, pred).statistic)


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    true, pred = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(pred - true)))


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    true, pred = _arrays(y_true, y_pred)
    return float(np.sqrt(np.mean((pred - true) ** 2)))


def decile_mape(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """lifetime_value's decile MAPE: customers split into 10 equal-sized buckets by prediction,
    then the mean over buckets of |mean predicted − mean actual| / mean actual.

    Buckets are cut on rank (as `pd.qcut` on values cannot when many predictions tie), with
    tied customers' outcomes averaged as in `_ranked`.
    """
    true, pred = _ranked(*_arrays(y_true, y_pred))
    bucket = np.arange(true.size) * 10 // true.size
    means = pd.DataFrame({"true": true, "pred": pred}).groupby(bucket).mean()
    return float((np.abs(means["pred"] - means["true"]) / means["true"]).mean())


def total_error(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """sum(pred) / sum(true) − 1: how far off the forecast of the whole book of business is."""
    true, pred = _arrays(y_true, y_pred)
    return float(pred.sum() / true.sum() - 1.0)


def evaluate(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """All six metrics, keyed as in the benchmark table (METRICS)."""
    return {
        "gini": normalized_gini(y_true, y_pred),
        "spearman": spearman(y_true, y_pred),
        "mae": mae(y_true, y_pred),
        "rmse": rmse(y_true, y_pred),
        "decile_mape": decile_mape(y_true, y_pred),
        "total_error": total_error(y_true, y_pred),
    }


def beats(metric: str, ours: float, theirs: float) -> float:
    """1 if `ours` is the better value of `metric`, 0.5 on a tie, 0 if worse."""
    if metric not in HIGHER_IS_BETTER:
        ours, theirs = -abs(ours), -abs(theirs)
    return 1.0 if ours > theirs else 0.5 if ours == theirs else 0.0


def win_shares(
    y_true: ArrayLike, ours: ArrayLike, theirs: ArrayLike, resamples: int = 200, seed: int = 0
) -> dict[str, float]:
    """Paired customer bootstrap: per metric, the share of `resamples` books (customers drawn
    with replacement, the same draw scored for both forecasts) in which `ours` beats `theirs`.

    Near 1 or 0, a win or a loss in the table holds whichever customers happen to be in the
    book; near 0.5 a handful of them decide it. It cannot see the noise of time (which months
    the holdout fell on), so it flatters the total's firmness most.
    """
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    true, ours_array = _arrays(y_true, ours)
    _, theirs_array = _arrays(y_true, theirs)
    rng = np.random.default_rng(seed)
    wins = dict.fromkeys(METRICS, 0.0)
    for _ in range(resamples):
        drawn = rng.integers(0, true.size, true.size)
        a, b = evaluate(true[drawn], ours_array[drawn]), evaluate(true[drawn], theirs_array[drawn])
        for metric in wins:
            wins[metric] += beats(metric, a[metric], b[metric])
    return {metric: won / resamples for metric, won in wins.items()}
