"""A two-trial Ray Tune search for the churn model on the session's Ray, and a final fit."""

from __future__ import annotations

from pathlib import Path

from kiki.engage.churn import ChurnConfig, TrainedChurnModel
from tests.integration.conftest import RunningPlatform
from tests.unit.test_engage_churn import END, simulate
from training.churn import train_churn


def test_a_two_trial_tune_search_and_a_final_fit(platform: RunningPlatform, tmp_path: Path) -> None:
    history = simulate()
    # A fraction of a CPU per trial: the session's six Serve apps hold part of this machine.
    result = train_churn(
        history, END.date(), horizon_days=30, trials=2, rounds=50, cpus_per_trial=0.2
    )
    assert isinstance(result.config, ChurnConfig) and result.config.rounds == 50
    assert result.metrics["evaluated_on"].startswith("holdout")  # simulate() runs past END
    assert {"roc_auc", "pr_auc", "brier", "calibration_error"} <= set(result.metrics)
    assert result.metrics["roc_auc"] > 0.6
    loaded = TrainedChurnModel.load(result.model.save(tmp_path / "churn"))
    assert loaded.meta.config == result.config
