"""BG/NBD (Fader, Hardie & Lee 2005): how a customer's expected purchase days grow with the
horizon, given their frequency, recency and tenure.

The LTV network learns spend over a short label window; a longer horizon asks how each
customer's rate holds up. BG/NBD answers per customer: anyone may drop out after a purchase,
so a heavy buyer's expected purchases flatten sooner than a light buyer's (benchmarks.ltv
uses that shape). Fitted here by maximum likelihood with bounded log-parameters rather than by
`lifetimes` (the baseline's fitter), which raises instead of returning on small or young
populations.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy import optimize, special

DAYS_PER_WEEK = 7.0  # BG/NBD's clock: weeks, as `lifetimes` summaries count on CDNOW
# every parameter within exp(±10): a population with few repeat buyers otherwise drives the
# fit to a degenerate corner
LOG_BOUNDS = (-10.0, 10.0)

Array = npt.NDArray[np.float64]


def _rfm(features: pd.DataFrame) -> tuple[Array, Array, Array]:
    """frequency, recency and tenure (weeks) of `kiki.value.features.compute_features` rows."""
    return (
        features["frequency"].to_numpy(dtype=np.float64),
        features["recency_days"].to_numpy(dtype=np.float64) / DAYS_PER_WEEK,
        features["tenure_days"].to_numpy(dtype=np.float64) / DAYS_PER_WEEK,
    )


def _negative_log_likelihood(log_params: Array, x: Array, recency: Array, tenure: Array) -> float:
    """Mean over customers of −log L (Fader, Hardie & Lee 2005, eq. 6)."""
    r, alpha, a, b = np.exp(log_params)
    beta = special.betaln(a, b)
    common = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    still_active = special.betaln(a, b + x) - beta - (r + x) * np.log(alpha + tenure)
    gone_after_last = np.where(
        x > 0,
        special.betaln(a + 1, b + np.maximum(x, 1) - 1) - beta - (r + x) * np.log(alpha + recency),
        -np.inf,
    )
    return float(-np.mean(common + np.logaddexp(still_active, gone_after_last)))


class BGNBD(BaseModel):
    """Fitted BG/NBD parameters: purchase rates Gamma(r, alpha) per week, drop-out
    probability after each purchase Beta(a, b)."""

    model_config = ConfigDict(frozen=True)

    r: float
    alpha: float
    a: float
    b: float

    @classmethod
    def fit(cls, features: pd.DataFrame) -> BGNBD:
        """Maximum likelihood on every customer of `features` (compute_features' columns)."""
        result = optimize.minimize(
            _negative_log_likelihood,
            np.zeros(4),
            args=_rfm(features),
            method="L-BFGS-B",
            bounds=[LOG_BOUNDS] * 4,
        )
        r, alpha, a, b = np.exp(result.x)
        return cls(r=r, alpha=alpha, a=a, b=b)

    def purchase_ratio(self, features: pd.DataFrame, days: float, base_days: float) -> Array:
        """Each customer's expected purchase days over the next `days` divided by those over
        the next `base_days` (eq. 10; the chance that they are still active cancels out).
        Where the formula is undefined (a + b < 1 for a customer without repeats), the flat
        days / base_days."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ratio = self._growth(features, days) / self._growth(features, base_days)
        return np.where(np.isfinite(ratio) & (ratio > 0), ratio, days / base_days)

    def _growth(self, features: pd.DataFrame, days: float) -> Array:
        """The factor of eq. 10 that grows with the horizon t:
        1 − ((alpha + T) / (alpha + T + t))^(r + x) · 2F1(r + x, b + x; a + b + x − 1; z)."""
        x, _, tenure = _rfm(features)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        t = days / DAYS_PER_WEEK
        z = t / (alpha + tenure + t)
        c = a + b + x - 1
        log_hyp = np.log(special.hyp2f1(r + x, b + x, c, z))
        # Euler's transformation where the series overflows, as lifetimes does
        euler = np.log(special.hyp2f1(a + b - 1 - r, a - 1, c, z)) + (a - 1 - r - x) * np.log1p(-z)
        log_hyp = np.where(np.isfinite(log_hyp), log_hyp, euler)
        return 1 - np.exp(log_hyp + (r + x) * np.log((alpha + tenure) / (alpha + tenure + t)))
