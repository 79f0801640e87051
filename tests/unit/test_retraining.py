"""The retraining rules: when a model is due, where a challenger's data ends, the verdict."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from training.retraining import challenger_cut, due, judge

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
WEEK = 7 * 86_400.0


@pytest.mark.parametrize(
    ("age", "interval", "stale", "reason"),
    [
        (timedelta(days=8), WEEK, False, "schedule"),
        (timedelta(days=7), WEEK, False, "schedule"),
        (timedelta(days=6), WEEK, False, None),
        (timedelta(days=1), WEEK, True, "drift"),
        (timedelta(days=400), 0.0, False, None),  # 0 = drift only
        (timedelta(days=400), 0.0, True, "drift"),
    ],
)
def test_due(age: timedelta, interval: float, stale: bool, reason: str | None) -> None:
    assert due(NOW - age, NOW, interval, stale) == reason


def test_a_challenger_learns_up_to_one_horizon_before_the_last_purchase() -> None:
    assert challenger_cut(date(2026, 12, 1), date(2026, 6, 30), 90) == date(2026, 9, 2)
    # No newer labelled data than the champion had: nothing to retrain on.
    assert challenger_cut(date(2026, 12, 1), date(2026, 9, 2), 90) is None
    assert challenger_cut(date(2026, 12, 1), date(2026, 10, 1), 90) is None


def test_an_error_metric_must_drop_by_the_minimum_gain() -> None:
    won = judge("mae", False, challenger=9.89, champion=10.0, champion_version=3, min_gain=0.01)
    assert won.promote and won.rule == "mae <= 9.9 (champion 10 - 1%)"
    lost = judge("mae", False, challenger=9.95, champion=10.0, champion_version=3, min_gain=0.01)
    assert not lost.promote and lost.champion_version == 3 and lost.challenger == 9.95


def test_a_score_metric_must_rise_by_the_minimum_gain() -> None:
    assert judge("roc_auc", True, 0.81, 0.80, 1, 0.01).promote
    assert not judge("roc_auc", True, 0.805, 0.80, 1, 0.01).promote
    assert judge("roc_auc", True, 0.80, 0.80, 1, 0.0).promote  # no gain asked: a tie wins
