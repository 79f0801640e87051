"""Our BG/NBD against `lifetimes`: the same fit where lifetimes fits, the same expected
purchases (through either form of the hypergeometric term), and a fit where lifetimes gives up."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter
from lifetimes.generate_data import beta_geometric_nbd_model
from lifetimes.utils import ConvergenceError

from kiki.value.bgnbd import BGNBD, DAYS_PER_WEEK

CDNOW_LIKE = BGNBD(r=0.25, alpha=4.8, a=0.72, b=2.2)


def _features(weeks: pd.DataFrame) -> pd.DataFrame:
    """compute_features' RFM columns from lifetimes' (frequency, recency, T) in weeks."""
    return pd.DataFrame(
        {
            "frequency": weeks["frequency"].to_numpy(dtype=float),
            "recency_days": weeks["recency"].to_numpy(dtype=float) * DAYS_PER_WEEK,
            "tenure_days": weeks["T"].to_numpy(dtype=float) * DAYS_PER_WEEK,
        }
    )


def _lifetimes(params: BGNBD) -> BetaGeoFitter:
    fitter = BetaGeoFitter()
    fitter.params_ = pd.Series(params.model_dump())
    return fitter


def test_the_fit_matches_lifetimes_on_a_simulated_population() -> None:
    np.random.seed(3)  # lifetimes' simulator draws from numpy's global generator
    weeks = beta_geometric_nbd_model(52, **CDNOW_LIKE.model_dump(), size=4000)
    ours = BGNBD.fit(_features(weeks))
    theirs = BetaGeoFitter().fit(weeks["frequency"], weeks["recency"], weeks["T"]).params_
    for name, value in ours.model_dump().items():
        assert value == pytest.approx(theirs[name], rel=1e-3)


def test_purchase_ratio_matches_lifetimes_expected_purchases() -> None:
    rng = np.random.default_rng(0)
    tenure = rng.uniform(1, 80, 500)
    weeks = pd.DataFrame(
        {
            "frequency": rng.integers(0, 400, 500),  # heavy buyers need Euler's form at 39 weeks
            "recency": rng.uniform(0, 1, 500) * tenure,
            "T": tenure,
        }
    )
    fitter = _lifetimes(CDNOW_LIKE)

    def purchases(days: float) -> np.ndarray:
        return fitter.conditional_expected_number_of_purchases_up_to_time(
            days / DAYS_PER_WEEK, weeks["frequency"], weeks["recency"], weeks["T"]
        ).to_numpy()

    ratio = CDNOW_LIKE.purchase_ratio(_features(weeks), 273, 30)
    month = purchases(30)
    defined = month > 0  # lifetimes' P(alive) underflows to 0 for long-silent heavy buyers
    assert 0 < (~defined).sum() < 100
    np.testing.assert_allclose(ratio[defined], purchases(273)[defined] / month[defined], rtol=1e-9)
    assert np.all((ratio > 1) & (ratio < 273 / 30))  # purchases flatten: never a flat 9.1x
    # given the same age, the heavier buyer's purchases flatten sooner
    assert ratio[np.argmax(weeks["frequency"] / weeks["T"])] < np.median(ratio)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # lifetimes' optimizer on the way down
def test_a_population_on_its_second_day_still_fits() -> None:
    # CDNOW as of 1997-01-02: (frequency, recency, tenure) in days, and how many customers
    counts = {(0, 0, 0): 241, (0, 0, 1): 206, (1, 1, 1): 3}
    days = pd.DataFrame([key for key, n in counts.items() for _ in range(n)], dtype=float)
    weeks = pd.DataFrame(
        {"frequency": days[0], "recency": days[1] / DAYS_PER_WEEK, "T": days[2] / DAYS_PER_WEEK}
    )
    with pytest.raises(ConvergenceError):
        BetaGeoFitter().fit(weeks["frequency"], weeks["recency"], weeks["T"])
    fitted = BGNBD.fit(_features(weeks))
    ratio = fitted.purchase_ratio(_features(weeks), 60, 30)
    assert np.all(np.isfinite(ratio)) and np.all((ratio > 1) & (ratio <= 2))
