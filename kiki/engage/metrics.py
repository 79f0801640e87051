"""How good a churn score is: ranking (ROC AUC, PR AUC), probabilities (Brier score, log loss)
and a calibration table.

Every function takes the outcome (1 = churned) and the score per customer, in the same order.
Tied scores are ranked in no order: AUCs count a tie as half right, and the precision-recall
curve steps once per distinct score, so no figure depends on the order of the input rows.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel
from scipy import stats


def _arrays(y_true: npt.ArrayLike, score: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype="float64").ravel()
    s = np.asarray(score, dtype="float64").ravel()
    if y.shape != s.shape or y.size == 0:
        raise ValueError("y_true and score need the same, non-zero length")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be 0 or 1")
    if y.min() == y.max():
        raise ValueError("y_true needs both classes")
    return y, s


def roc_auc(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """P(a random churner scores above a random stayer), ties counting one half
    (Mann-Whitney U over the product of the class sizes)."""
    y, s = _arrays(y_true, score)
    ranks = stats.rankdata(s)
    positives = y.sum()
    negatives = y.size - positives
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def pr_auc(y_true: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """Average precision: the precision at each distinct score threshold, weighted by the
    recall gained there (the step-wise area under the precision-recall curve)."""
    y, s = _arrays(y_true, score)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    hits = np.cumsum(y)[last_of_tie]
    taken = np.arange(1, y.size + 1)[last_of_tie]
    recall = hits / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * hits / taken))


def _probabilities(y_true: npt.ArrayLike, p: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y, prob = _arrays(y_true, p)
    if (prob < 0).any() or (prob > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    return y, prob


def brier(y_true: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Mean squared error of the probability (0 = perfect, 0.25 = a coin)."""
    y, prob = _probabilities(y_true, p)
    return float(np.mean((prob - y) ** 2))


def log_loss(y_true: npt.ArrayLike, p: npt.ArrayLike) -> float:
    y, prob = _probabilities(y_true, p)
    prob = np.clip(prob, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob)))


class CalibrationBin(BaseModel):
    decile: int  # 1 = the lowest predicted churn
    customers: int
    mean_predicted: float
    observed: float


def calibration_table(
    y_true: npt.ArrayLike, p: npt.ArrayLike, bins: int = 10
) -> list[CalibrationBin]:
    """Customers cut into `bins` equal groups by predicted probability (on rank, so ties
    spread evenly), each with its mean prediction and the share that churned."""
    y, prob = _probabilities(y_true, p)
    order = np.argsort(prob, kind="stable")
    group = np.empty(y.size, dtype="int64")
    group[order] = np.arange(y.size) * bins // y.size
    table = pd.DataFrame({"y": y, "p": prob, "g": group}).groupby("g")
    summary = table.agg(
        customers=("y", "size"), mean_predicted=("p", "mean"), observed=("y", "mean")
    )
    return [
        CalibrationBin(
            decile=int(g) + 1,
            customers=int(row.customers),
            mean_predicted=float(row.mean_predicted),
            observed=float(row.observed),
        )
        for g, row in summary.iterrows()
    ]


def calibration_error(table: list[CalibrationBin]) -> float:
    """Expected calibration error: |mean predicted - observed| weighted by bin size."""
    total = sum(b.customers for b in table)
    return sum(b.customers * abs(b.mean_predicted - b.observed) for b in table) / total
