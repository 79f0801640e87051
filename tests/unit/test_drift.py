import numpy as np
import pandas as pd

from kiki.value.drift import PREDICTION, bins_of, profile, psi, report


def test_same_distribution_is_stable_and_a_shift_is_not() -> None:
    rng = np.random.default_rng(0)
    ref = bins_of(rng.normal(0, 1, 20_000))
    assert psi(ref, rng.normal(0, 1, 20_000)) < 0.01
    assert psi(ref, rng.normal(1, 1, 20_000)) > 0.2


def test_psi_matches_the_formula_on_hand_made_bins() -> None:
    ref = bins_of([1, 1, 2, 2, 3, 3, 4, 4], n_bins=4)
    assert ref.edges == [1.75, 2.5, 3.25]
    assert ref.proportions == [0.25, 0.25, 0.25, 0.25]
    live = [1, 1, 1, 1, 1, 1, 4, 4]  # shares 0.75, 0, 0, 0.25 (empty bins count as 1e-4)
    shares = np.array([0.75, 1e-4, 1e-4, 0.25])
    expected = float(np.sum((shares - 0.25) * np.log(shares / 0.25)))
    assert abs(psi(ref, live) - expected) < 1e-12


def test_report_marks_the_model_stale_when_predictions_drift() -> None:
    rng = np.random.default_rng(1)
    features = pd.DataFrame(
        {"recency": rng.exponential(30, 5_000), "frequency": rng.poisson(2, 5_000)}
    )
    reference = profile(features, rng.gamma(2, 10, 5_000))
    calm = report(reference, features, rng.gamma(2, 10, 5_000))
    assert not calm.stale and calm.drifted == []
    shifted = report(reference, features, rng.gamma(2, 30, 5_000))
    assert shifted.stale and PREDICTION in shifted.drifted
    assert set(shifted.psi) == {"recency", "frequency", PREDICTION}
