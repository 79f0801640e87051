"""The two CDNOW benchmark runners on simulated purchases: their split, and that nothing
after the calibration end reaches a model (other holdout purchases change the outcomes,
never the forecasts)."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.churn import run_churn_benchmark
from benchmarks.ltv import run_ltv_benchmark
from kiki.value.cdnow import split
from kiki.value.metrics import win_shares
from kiki.value.training import LTVTrainingConfig
from kiki.value.ziln import ZILNConfig
from tests.unit.test_engage_churn import END, SMALL, simulate

HOLDOUT_END = END + pd.Timedelta(days=60)
TINY_LTV = LTVTrainingConfig(
    horizon_days=30, cuts=2, model=ZILNConfig(hidden=(4,), max_epochs=2, members=1)
)


@pytest.fixture(scope="module")
def purchases() -> pd.DataFrame:
    return simulate(customers=300)


def another_holdout(purchases: pd.DataFrame) -> pd.DataFrame:
    """The same calibration period; in the holdout every other purchase gone, the rest x3."""
    late = purchases["ts"] > END
    kept = purchases[~late | (purchases.index % 2 == 0)].copy()
    kept.loc[kept["ts"] > END, "amount"] *= 3
    return kept


def test_the_split_keeps_only_the_calibration_period(purchases: pd.DataFrame) -> None:
    cut = split(END.date(), HOLDOUT_END.date(), purchases)
    assert cut.holdout_days == 60 and cut.calibration["ts"].max() <= END
    assert len(cut.data) == len(purchases) > len(cut.calibration)
    with pytest.raises(ValueError, match="holdout_end must come after"):
        split(END.date(), END.date(), purchases)


def test_churn_benchmark_scores_never_see_the_holdout(purchases: pd.DataFrame) -> None:
    full = run_churn_benchmark(END.date(), HOLDOUT_END.date(), SMALL, transactions=purchases)
    assert set(full.metrics) == {"xgboost", "bgnbd", "recency"}
    assert 0.5 < full.metrics["xgboost"]["roc_auc"] <= 1.0
    other = another_holdout(purchases)
    blind = run_churn_benchmark(END.date(), HOLDOUT_END.date(), SMALL, transactions=other)
    assert blind.predictions["churned"].sum() > full.predictions["churned"].sum()
    pd.testing.assert_series_equal(
        full.predictions["xgboost_p_churn"], blind.predictions["xgboost_p_churn"]
    )


def test_ltv_benchmark_forecasts_never_see_the_holdout(purchases: pd.DataFrame) -> None:
    full = run_ltv_benchmark(
        END.date(), HOLDOUT_END.date(), TINY_LTV, transactions=purchases, resamples=20
    )
    assert set(full.metrics) == {"ziln", "bgnbd_gg", "naive"}
    predictions = full.predictions
    assert full.win_share == win_shares(
        predictions["actual"], predictions["ziln_expected"], predictions["bgnbd_gg"], 20
    )
    assert "ziln beats bgnbd_gg in resamples" in full.table()
    assert full.customers == purchases.loc[purchases["ts"] <= END, "customer_id"].nunique()
    other = another_holdout(purchases)
    blind = run_ltv_benchmark(END.date(), HOLDOUT_END.date(), TINY_LTV, transactions=other)
    assert blind.win_share == {}  # none asked for
    assert not blind.predictions["actual"].equals(full.predictions["actual"])
    for column in ("ziln_expected", "bgnbd_gg", "naive"):
        pd.testing.assert_series_equal(full.predictions[column], blind.predictions[column])
