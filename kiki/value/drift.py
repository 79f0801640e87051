"""Drift: population stability index (PSI) of each feature and of the predictions, live vs the
training reference.

PSI = sum over bins of (live% - ref%) * ln(live% / ref%), with bins cut at the reference's
deciles. Rules of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 a shift worth retraining for.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, Field

EPSILON = 1e-4  # keeps empty bins from dividing by zero
PREDICTION = "prediction"
DEFAULT_THRESHOLD = 0.2  # PSI past which a shift is worth retraining for (above)


class Bins(BaseModel):
    edges: list[float]  # inner cut points; values <= edges[0] fall in bin 0
    proportions: list[float]


class DriftReport(BaseModel):
    psi: dict[str, float]
    threshold: float
    stale: bool
    drifted: list[str]
    live_rows: int
    measured_at: datetime  # up to a minute old, or up to 15 while it is measured again


def bins_of(values: npt.ArrayLike, n_bins: int = 10) -> Bins:
    """Reference bins at the deciles (deduplicated: a mass at one value is one bin)."""
    data = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(data, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return Bins(edges=edges.tolist(), proportions=_shares(data, edges).tolist())


def _shares(data: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, data, side="left"), minlength=len(edges) + 1)
    return counts / max(1, len(data))


def psi(reference: Bins, live: npt.ArrayLike) -> float:
    data = np.asarray(live, dtype=np.float64)
    ref = np.clip(np.asarray(reference.proportions), EPSILON, None)
    cur = np.clip(_shares(data, np.asarray(reference.edges)), EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def profile(features: pd.DataFrame, predictions: npt.ArrayLike) -> dict[str, Bins]:
    """The training reference: bins of every feature column and of the predictions."""
    found = {name: bins_of(features[name]) for name in features.columns}
    found[PREDICTION] = bins_of(predictions)
    return found


class DriftMeasure(BaseModel):
    """PSI of every feature and of the predictions on one live window, before a threshold
    judges it (a cached measure serves every threshold asked)."""

    psi: dict[str, float]
    live_rows: int
    measured_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def judged(self, threshold: float = DEFAULT_THRESHOLD) -> DriftReport:
        drifted = sorted(name for name, v in self.psi.items() if v > threshold)
        return DriftReport(
            psi={k: round(v, 4) for k, v in self.psi.items()},
            threshold=threshold,
            stale=PREDICTION in drifted or len(drifted) * 2 > len(self.psi),
            drifted=drifted,
            live_rows=self.live_rows,
            measured_at=self.measured_at,
        )


def measure(
    reference: dict[str, Bins], features: pd.DataFrame, predictions: npt.ArrayLike
) -> DriftMeasure:
    values = {
        name: psi(ref, features[name])
        for name, ref in reference.items()
        if name != PREDICTION and name in features.columns
    }
    values[PREDICTION] = psi(reference[PREDICTION], predictions)
    return DriftMeasure(psi=values, live_rows=len(features))


def report(
    reference: dict[str, Bins],
    features: pd.DataFrame,
    predictions: npt.ArrayLike,
    threshold: float = DEFAULT_THRESHOLD,
) -> DriftReport:
    return measure(reference, features, predictions).judged(threshold)
