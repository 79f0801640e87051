"""The churn model: the probability that a customer makes no purchase in the N days after a day.

Features are SyncValue's (`kiki.value.features.compute_features`, the function its LTV model
trains and serves with) plus four numbers from a BG/NBD model fitted on the same purchases:
P(alive), the posterior purchase rate, and for the window being predicted the expected purchase
weeks and P(no purchase). The XGBoost classifier does not start from zero: each row's starting
margin is the logit of BG/NBD's P(no purchase in the window), so the trees learn a correction
to a model that already knows how the chance of a purchase grows with the window's length.
That is how a model trained on 90-day windows inside the calibration period scores a 273-day
holdout: the horizon enters through BG/NBD, which extrapolates it by its own assumptions.

BG/NBD sets the level, the trees the order: when a population is scored, one log-odds offset
makes its mean P(churn) equal to BG/NBD's mean P(no purchase) for it (`level_shift`). The trees'
mean correction depends on the windows they were trained on (BG/NBD fitted on the short
histories of early cuts under-predicts churn there) and does not carry over to the window
being scored, while BG/NBD, a population model, gets the level right: on CDNOW, at seven cut
dates from 1997-06-30 to 1998-01-31, its mean P(churn) was within 1.7 points of the observed
rate. What the trees add to the ranking is kept.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from lifetimes import BetaGeoFitter
from pydantic import BaseModel, ConfigDict, Field
from scipy import optimize, special

from kiki.errors import InvalidInput
from kiki.value import FEATURE_NAMES, compute_features, spend_between

DAYS_PER_WEEK = 7.0  # BG/NBD counts purchase weeks, as kiki.value.baselines does on CDNOW
MIN_CUSTOMERS = 50
PENALIZERS = (0.0, 0.001, 0.01)
BGNBD_FEATURES: tuple[str, ...] = (
    "bgnbd_p_alive",
    "bgnbd_rate_per_week",
    "bgnbd_p_no_purchase",
    "bgnbd_expected_purchases",
)
MODEL_FEATURES: tuple[str, ...] = (*FEATURE_NAMES, *BGNBD_FEATURES)
BOOSTER_FILE, META_FILE = "booster.json", "churn.json"

RoundCallback = Callable[[int, xgb.Booster], None]


class BGNBDParams(BaseModel):
    """A fitted BG/NBD (Fader, Hardie & Lee 2005): purchase rates ~ Gamma(r, alpha) per week,
    drop-out after each purchase ~ Beta(a, b)."""

    model_config = ConfigDict(frozen=True)

    r: float
    alpha: float
    a: float
    b: float


def weekly_rfm(transactions: pd.DataFrame, as_of: date | pd.Timestamp) -> pd.DataFrame:
    """BG/NBD's inputs per customer as of the day, in weeks: x (repeat purchase weeks),
    t_x (age at the last purchase) and T (age at as_of), as kiki.value.baselines counts them."""
    cut = pd.Timestamp(as_of).normalize()
    past = transactions.loc[transactions["ts"].dt.normalize() <= cut]
    weekly = past.assign(ts=past["ts"].dt.to_period("W").dt.start_time)
    rfm = compute_features(weekly, pd.Period(cut, "W").start_time)
    return pd.DataFrame(
        {
            "x": rfm["frequency"],
            "t_x": rfm["recency_days"] / DAYS_PER_WEEK,
            "T": rfm["tenure_days"] / DAYS_PER_WEEK,
        }
    )


def fit_bgnbd(transactions: pd.DataFrame, as_of: date | pd.Timestamp) -> BGNBDParams:
    """BG/NBD fitted by lifetimes on the purchases up to as_of: unpenalised (the textbook fit,
    as the benchmark uses), or with the small penalty lifetimes advises when a short or
    uniform history keeps that from converging."""
    rfm = weekly_rfm(transactions, as_of)
    if len(rfm) < MIN_CUSTOMERS or not (rfm["x"] > 0).any():
        raise InvalidInput(
            f"BG/NBD needs at least {MIN_CUSTOMERS} customers, some with repeat purchases, by "
            f"{pd.Timestamp(as_of).date()}; found {len(rfm)}: load more history or pick a "
            "later date"
        )
    problem = ""
    for penalizer in PENALIZERS:
        fitter = BetaGeoFitter(penalizer_coef=penalizer)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # lifetimes prints failed fits
                fitter.fit(rfm["x"], rfm["t_x"], rfm["T"])
        except Exception as exc:  # lifetimes' ConvergenceError and the optimiser's own errors
            problem = str(exc).strip()
            continue
        return BGNBDParams(**{k: float(fitter.params_[k]) for k in ("r", "alpha", "a", "b")})
    raise InvalidInput(f"BG/NBD did not converge on this history: {problem}")


def bgnbd_scores(params: BGNBDParams, rfm: pd.DataFrame, horizon_days: float) -> pd.DataFrame:
    """Per customer: P(alive), the posterior rate while alive (purchases a week), the expected
    number of purchase weeks in the next horizon_days (the paper's equation (10), how BG/NBD
    ranks customers) and P(no purchase in them).

    P(alive) is the paper's equation (11). Alive, purchases are Poisson at rate lambda, whose
    posterior is Gamma(r + x, alpha + T), and a customer drops out only right after a purchase,
    so P(none in t | alive) = E[exp(-lambda t)] = ((alpha + T) / (alpha + T + t))^(r + x) and
    P(none in t) = 1 - P(alive) + P(alive) ((alpha + T) / (alpha + T + t))^(r + x).
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, big_t = (rfm[c].to_numpy(dtype="float64") for c in ("x", "t_x", "T"))
    t = horizon_days / DAYS_PER_WEEK
    with np.errstate(divide="ignore", over="ignore"):
        log_odds_dead = (
            np.log(a)
            - np.log(np.maximum(b + x - 1.0, 1e-12))
            + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
        )
    p_alive = np.where(x > 0, special.expit(-log_odds_dead), 1.0)
    p_none_alive = np.exp((r + x) * (np.log(alpha + big_t) - np.log(alpha + big_t + t)))
    tail = special.hyp2f1(r + x, b + x, a + b + x - 1.0, t / (alpha + big_t + t))
    expected = p_alive * (a + b + x - 1.0) / (a - 1.0) * (1.0 - p_none_alive * tail)
    return pd.DataFrame(
        {
            "bgnbd_p_alive": p_alive,
            "bgnbd_rate_per_week": (r + x) / (alpha + big_t),
            "bgnbd_expected_purchases": expected,
            "bgnbd_p_no_purchase": 1.0 - p_alive + p_alive * p_none_alive,
        },
        index=rfm.index,
    )


@dataclass
class ChurnInputs:
    """What the model reads for each customer as of one day and window."""

    features: pd.DataFrame  # indexed by customer_id, columns MODEL_FEATURES
    prior: np.ndarray  # BG/NBD's P(no purchase in the window)
    as_of: date
    horizon_days: int


def churn_inputs(
    transactions: pd.DataFrame,
    as_of: date | pd.Timestamp,
    horizon_days: int,
    params: BGNBDParams | None = None,
) -> ChurnInputs:
    """Inputs of every customer with a purchase by as_of; BG/NBD is fitted on purchases up to
    as_of unless `params` are given. Nothing after as_of is read."""
    cut = pd.Timestamp(as_of).normalize()
    features = compute_features(transactions, cut)
    params = params or fit_bgnbd(transactions, cut)
    scores = bgnbd_scores(params, weekly_rfm(transactions, cut), horizon_days)
    scores = scores.reindex(features.index)
    return ChurnInputs(
        features=features.join(scores[list(BGNBD_FEATURES)])[list(MODEL_FEATURES)],
        prior=scores["bgnbd_p_no_purchase"].to_numpy(),
        as_of=cut.date(),
        horizon_days=horizon_days,
    )


def churned(transactions: pd.DataFrame, inputs: ChurnInputs) -> np.ndarray:
    """1 for each customer of `inputs` with no purchase in the window after its day, else 0.
    A purchase of $0 counts as a purchase."""
    end = inputs.as_of + timedelta(days=inputs.horizon_days)
    buyers = spend_between(transactions, inputs.as_of, end).index
    return (~inputs.features.index.isin(buyers)).astype("int8")


class ChurnConfig(BaseModel):
    """How training windows are cut from the calibration period, and the trees to grow.

    The defaults are what `choose_config` in benchmarks/churn.py picks on CDNOW's standard
    split (judged on the last 90 days before 1997-09-30)."""

    model_config = ConfigDict(frozen=True)

    horizon_days: int = Field(90, ge=1, description="label: no purchase in this many days")
    cuts: int = Field(4, ge=1, description="stacked training windows, newest ending at the end")
    cut_step_days: int = Field(30, ge=1)
    max_depth: int = Field(2, ge=1, le=12)
    learning_rate: float = Field(0.03, gt=0, le=1)
    rounds: int = Field(300, ge=1, le=5000)
    min_child_weight: float = Field(50.0, ge=0)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)

    def booster_params(self, seed: int) -> dict[str, object]:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "min_child_weight": self.min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "seed": seed,
            "nthread": 0,
        }


@dataclass
class TrainingSet:
    """Stacked windows, newest first: inputs as of each cut and whether the customer churned."""

    features: pd.DataFrame
    prior: np.ndarray
    labels: np.ndarray

    def matrix(self) -> xgb.DMatrix:
        return xgb.DMatrix(self.features, label=self.labels, base_margin=logit(self.prior))


def logit(p: np.ndarray) -> np.ndarray:
    return special.logit(np.clip(p, 1e-6, 1.0 - 1e-6))


def training_set(
    transactions: pd.DataFrame, end: date | pd.Timestamp, config: ChurnConfig
) -> TrainingSet:
    """`config.cuts` windows, the newest ending on `end`, none after it; stacking stops at a
    cut with fewer than MIN_CUSTOMERS customers (or too few for BG/NBD)."""
    end = pd.Timestamp(end).normalize()
    known = transactions.loc[transactions["ts"].dt.normalize() <= end]
    parts: list[tuple[ChurnInputs, np.ndarray]] = []
    for k in range(config.cuts):
        cut = end - pd.Timedelta(days=config.horizon_days + k * config.cut_step_days)
        try:
            inputs = churn_inputs(known, cut, config.horizon_days)
        except InvalidInput:
            if not parts:
                raise
            break
        parts.append((inputs, churned(known, inputs)))
    return TrainingSet(
        features=pd.concat([p.features for p, _ in parts]),
        prior=np.concatenate([p.prior for p, _ in parts]),
        labels=np.concatenate([labels for _, labels in parts]),
    )


class ChurnModelMeta(BaseModel):
    """Everything besides the trees: how they were trained, and the BG/NBD prior to score with."""

    config: ChurnConfig
    bgnbd: BGNBDParams  # fitted on every purchase up to calibration_end
    feature_names: tuple[str, ...]
    calibration_end: date
    seed: int


class TrainedChurnModel:
    """Trees plus prior: P(no purchase in a window) for customers as of a day."""

    def __init__(self, booster: xgb.Booster, meta: ChurnModelMeta) -> None:
        self.booster = booster
        self.meta = meta

    def inputs(
        self, transactions: pd.DataFrame, as_of: date | pd.Timestamp, horizon_days: int
    ) -> ChurnInputs:
        """Inputs scored with the model's own BG/NBD (fitted at calibration_end)."""
        return churn_inputs(transactions, as_of, horizon_days, self.meta.bgnbd)

    def _matrix(self, inputs: ChurnInputs) -> xgb.DMatrix:
        return scoring_matrix(self.booster, inputs, self.meta.feature_names)

    def predict(self, inputs: ChurnInputs) -> np.ndarray:
        """P(churn) per row of inputs.features."""
        return self.booster.predict(self._matrix(inputs))

    def contributions(self, inputs: ChurnInputs) -> pd.DataFrame:
        """Each feature's push on the log-odds of churn (XGBoost's exact tree SHAP values) per
        customer, plus `bgnbd_prior`: BG/NBD's own log-odds where the trees start, less the
        population's level shift. The row sums to the logit of `predict` (XGBoost's bias term
        is folded into the prior)."""
        return self._contributions(self._matrix(inputs), inputs.features.index, "bgnbd_prior")

    def feature_contributions(self, features: pd.DataFrame) -> pd.DataFrame:
        """Each feature's push on the log-odds of churn for these rows alone (a page of a
        scored book). Tree SHAP values do not depend on the base margin, which only moves the
        bias term, so a row is explained here exactly as within its whole population."""
        matrix = xgb.DMatrix(features[list(self.meta.feature_names)])
        return self._contributions(matrix, features.index)

    def _contributions(
        self, matrix: xgb.DMatrix, index: pd.Index, bias: str | None = None
    ) -> pd.DataFrame:
        raw = self.booster.predict(matrix, pred_contribs=True)
        frame = pd.DataFrame(raw[:, :-1], index=index, columns=list(self.meta.feature_names))
        if bias is not None:
            frame[bias] = raw[:, -1]
        return frame

    def save(self, directory: str | Path) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(path / BOOSTER_FILE)
        (path / META_FILE).write_text(self.meta.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TrainedChurnModel:
        """From a local folder written by `save` (JSON only: nothing pickled is executed)."""
        path = Path(directory)
        meta = ChurnModelMeta.model_validate(json.loads((path / META_FILE).read_text()))
        booster = xgb.Booster()
        booster.load_model(path / BOOSTER_FILE)
        return cls(booster, meta)


class _EveryRound(xgb.callback.TrainingCallback):
    def __init__(self, on_round: RoundCallback) -> None:
        self.on_round = on_round

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: object) -> bool:
        self.on_round(epoch + 1, model)
        return False


def level_shift(margins: np.ndarray, prior: np.ndarray) -> float:
    """The log-odds offset that, taken off every row's margin, makes the population's mean
    P(churn) BG/NBD's mean P(no purchase) for it."""
    if len(prior) == 0:
        return 0.0
    target = float(np.clip(np.mean(prior), 1e-6, 1.0 - 1e-6))
    # The mean of expit(margins - s) falls from ~1 to ~0 as s runs over the bracket.
    return float(optimize.brentq(lambda s: special.expit(margins - s).mean() - target, -50, 50))


def scoring_matrix(
    booster: xgb.Booster, inputs: ChurnInputs, feature_names: tuple[str, ...] = MODEL_FEATURES
) -> xgb.DMatrix:
    """A population to score: the trees start from BG/NBD's log-odds, less the offset that
    puts the population's mean at BG/NBD's (`level_shift`)."""
    frame = inputs.features[list(feature_names)]
    start = logit(inputs.prior)
    margins = booster.predict(xgb.DMatrix(frame, base_margin=start), output_margin=True)
    # A new matrix, not set_base_margin on the first: XGBoost caches predictions per matrix.
    return xgb.DMatrix(frame, base_margin=start - level_shift(margins, inputs.prior))


def fit_booster(
    data: TrainingSet, config: ChurnConfig, seed: int = 0, on_round: RoundCallback | None = None
) -> xgb.Booster:
    """The trees on a training set. `on_round(n, booster)` hears each round."""
    return xgb.train(
        config.booster_params(seed),
        data.matrix(),
        num_boost_round=config.rounds,
        callbacks=[_EveryRound(on_round)] if on_round else None,
    )


def fit_churn_model(
    transactions: pd.DataFrame,
    calibration_end: date | pd.Timestamp,
    config: ChurnConfig | None = None,
    seed: int = 0,
    data: TrainingSet | None = None,
) -> TrainedChurnModel:
    """Trains on windows inside the calibration period only (pass `data` when it is already
    built), and fits the scoring prior on every purchase up to calibration_end."""
    config = config or ChurnConfig()
    end = pd.Timestamp(calibration_end).normalize()
    data = data or training_set(transactions, end, config)
    booster = fit_booster(data, config, seed)
    meta = ChurnModelMeta(
        config=config,
        bgnbd=fit_bgnbd(transactions, end),
        feature_names=MODEL_FEATURES,
        calibration_end=end.date(),
        seed=seed,
    )
    return TrainedChurnModel(booster, meta)
