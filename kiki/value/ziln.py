"""The zero-inflated log-normal (ZILN) lifetime-value model of Wang, Liu & Miao (2019), in torch.

A customer's future spend is 0 with probability 1 − p (they do not come back) and otherwise
log-normal(mu, sigma): one network gives all three per customer, so the same model ranks
customers, forecasts their mean spend and says how uncertain that is (quantiles).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from kiki.value.features import FEATURE_NAMES

MIN_SIGMA = math.sqrt(1e-7)  # Keras' epsilon, as lifetime_value floors the scale
INPUT_CLIP = 5.0  # z-scores never go beyond: exp(mu) of one outlier would dwarf the rest
WEIGHTS_FILE = "weights.pt"
META_FILE = "model.json"

Features = pd.DataFrame | npt.NDArray[np.floating]
EpochCallback = Callable[[int, dict[str, float]], None]


class ZILNConfig(BaseModel):
    """Network shape and training schedule (what a hyper-parameter search varies)."""

    model_config = ConfigDict(frozen=True)

    hidden: tuple[int, ...] = (64, 32)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-5, ge=0.0)
    batch_size: int = Field(1024, ge=1)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(20, ge=1)  # epochs without a better validation loss before stopping
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # used only when no X_val is given


def ziln_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean ZILN negative log-likelihood over the batch, as lifetime_value's Keras loss:
    BCE of logit 0 on (label > 0) plus, for positive labels only, the log-normal NLL of the
    label with loc = logit 1 and scale = max(softplus(logit 2), sqrt(1e-7))."""
    labels = labels.reshape(-1).to(logits.dtype)
    positive = (labels > 0).to(logits.dtype)
    classification = F.binary_cross_entropy_with_logits(logits[:, 0], positive, reduction="none")
    loc = logits[:, 1]
    scale = torch.clamp(F.softplus(logits[:, 2]), min=MIN_SIGMA)
    safe = torch.where(positive > 0, labels, torch.ones_like(labels))
    log_prob = torch.distributions.LogNormal(loc, scale).log_prob(safe)
    return (classification - positive * log_prob).mean()


class Standardizer(BaseModel):
    """log1p, z-score, then clip to the range seen in training (and ±INPUT_CLIP) per feature.

    Spend and counts are heavy-tailed and non-negative, and the network trains well only on
    inputs of unit scale. The clip means the network never extrapolates: a customer older, or
    richer, than any training example is scored like the most extreme one seen (as a tree
    model would), not by extending a ReLU's straight line. Kept with the weights.
    """

    mean: list[float]
    std: list[float]
    low: list[float]
    high: list[float]

    @classmethod
    def fit(cls, x: npt.NDArray[np.floating]) -> Standardizer:
        logged = np.log1p(np.maximum(x, 0.0))
        mean, std = logged.mean(axis=0), logged.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        z = (logged - mean) / std
        return cls(
            mean=mean.tolist(),
            std=std.tolist(),
            low=np.maximum(z.min(axis=0), -INPUT_CLIP).tolist(),
            high=np.minimum(z.max(axis=0), INPUT_CLIP).tolist(),
        )

    def transform(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        logged = np.log1p(np.maximum(x, 0.0))
        z = (logged - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(z, np.asarray(self.low), np.asarray(self.high)).astype(np.float32)


class ZILNModel(nn.Module):
    """An MLP (ReLU, dropout) ending in the 3 ZILN logits: p logit, mu, pre-softplus sigma."""

    def __init__(self, n_features: int, hidden: Sequence[int] = (64, 32), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 3))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LTVModelMeta(BaseModel):
    """What `save` writes next to the weights, so `load` rebuilds the exact model."""

    feature_names: tuple[str, ...]
    config: ZILNConfig
    scaler: Standardizer
    horizon_days: int | None = None  # the label window: predictions are spend over it
    train_seconds: float = 0.0
    best_epoch: int = 0


def _matrix(x: Features, feature_names: Sequence[str]) -> npt.NDArray[np.float64]:
    if isinstance(x, pd.DataFrame):
        missing = set(feature_names) - set(x.columns)
        if missing:
            raise ValueError(f"features missing: {sorted(missing)}")
        return x[list(feature_names)].to_numpy(dtype=np.float64)
    matrix = np.asarray(x, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(feature_names):
        raise ValueError(f"expected a matrix with {len(feature_names)} feature columns")
    return matrix


def _quantile(p: np.ndarray, mu: np.ndarray, sigma: np.ndarray, q: float) -> np.ndarray:
    """q-quantile of the mixture: 0 while the zero mass 1 − p covers q, else the log-normal
    quantile at the level (q − (1 − p)) / p."""
    level = np.clip((q - (1.0 - p)) / np.maximum(p, 1e-12), 1e-12, 1.0 - 1e-12)
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.as_tensor(level)).numpy()
    return np.where(q > 1.0 - p, np.exp(mu + sigma * z), 0.0)


class TrainedLTVModel:
    """A fitted ZILN network with its scaler: predicts spend distributions from features."""

    def __init__(self, network: ZILNModel, meta: LTVModelMeta):
        self.network = network.eval()
        self.meta = meta

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.meta.feature_names

    @property
    def horizon_days(self) -> int | None:
        return self.meta.horizon_days

    def logits(self, x: Features) -> npt.NDArray[np.float64]:
        """The raw 3 outputs per row (p logit, mu, pre-softplus sigma)."""
        inputs = torch.from_numpy(self.meta.scaler.transform(_matrix(x, self.feature_names)))
        with torch.no_grad():
            return self.network(inputs).double().numpy()

    def predict(self, x: Features) -> dict[str, npt.NDArray[np.float64]]:
        """Per row: p_purchase, expected spend p·exp(mu + sigma²/2), and p10/p50/p90."""
        logits = self.logits(x)
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        mu = logits[:, 1]
        sigma = np.maximum(np.logaddexp(0.0, logits[:, 2]), MIN_SIGMA)
        out = {"p_purchase": p, "expected": p * np.exp(mu + 0.5 * sigma**2)}
        for name, q in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9)):
            out[name] = _quantile(p, mu, sigma, q)
        return out

    def save(self, directory: str | Path) -> Path:
        """Writes weights.pt (state_dict) and model.json (features, config, scaler)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.network.state_dict(), path / WEIGHTS_FILE)
        (path / META_FILE).write_text(self.meta.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TrainedLTVModel:
        """Rebuilds a saved model from a local folder (weights_only: no pickled code runs)."""
        path = Path(directory)
        meta = LTVModelMeta.model_validate(json.loads((path / META_FILE).read_text()))
        network = ZILNModel(len(meta.feature_names), meta.config.hidden, meta.config.dropout)
        network.load_state_dict(torch.load(path / WEIGHTS_FILE, weights_only=True))
        return cls(network, meta)


def _loss_of(network: ZILNModel, x: torch.Tensor, y: torch.Tensor) -> float:
    network.eval()
    with torch.no_grad():
        return float(ziln_loss(network(x), y))


def train_ziln(
    X: Features,
    y: npt.ArrayLike,
    config: ZILNConfig | None = None,
    seed: int = 0,
    X_val: Features | None = None,
    y_val: npt.ArrayLike | None = None,
    on_epoch: EpochCallback | None = None,
    feature_names: Sequence[str] = FEATURE_NAMES,
    horizon_days: int | None = None,
) -> TrainedLTVModel:
    """Fits a ZILN network with Adam, keeping the epoch with the best validation loss.

    Without X_val, a random `config.val_fraction` of the rows validates; pass a split by
    customer when rows repeat customers. `on_epoch(epoch, {"train_loss", "val_loss"})` runs
    after every epoch (how Ray Tune will hear of progress). `horizon_days`, the window the
    labels cover, is recorded with the model. Same seed, same data: same model.
    """
    config = config or ZILNConfig()
    started = time.perf_counter()
    x_all = _matrix(X, feature_names)
    y_all = np.asarray(y, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    if X_val is None or y_val is None:
        order = rng.permutation(len(y_all))
        n_val = max(1, round(len(y_all) * config.val_fraction))
        x_val, y_val_arr = x_all[order[:n_val]], y_all[order[:n_val]]
        x_all, y_all = x_all[order[n_val:]], y_all[order[n_val:]]
    else:
        x_val, y_val_arr = _matrix(X_val, feature_names), np.asarray(y_val, np.float64).ravel()

    scaler = Standardizer.fit(x_all)
    xt = torch.from_numpy(scaler.transform(x_all))
    yt = torch.from_numpy(y_all.astype(np.float32))
    xv = torch.from_numpy(scaler.transform(x_val))
    yv = torch.from_numpy(y_val_arr.astype(np.float32))

    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        network = ZILNModel(xt.shape[1], config.hidden, config.dropout)
        optimizer = torch.optim.Adam(
            network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(network.state_dict())
        for epoch in range(1, config.max_epochs + 1):
            network.train()
            total = 0.0
            for batch in torch.randperm(len(yt), generator=generator).split(config.batch_size):
                optimizer.zero_grad()
                loss = ziln_loss(network(xt[batch]), yt[batch])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            val_loss = _loss_of(network, xv, yv)
            if on_epoch is not None:
                on_epoch(epoch, {"train_loss": total / len(yt), "val_loss": val_loss})
            if val_loss < best_loss:
                best_loss, best_epoch = val_loss, epoch
                best_state = copy.deepcopy(network.state_dict())
            elif epoch - best_epoch >= config.patience:
                break
    finally:
        torch.use_deterministic_algorithms(deterministic)

    network.load_state_dict(best_state)
    meta = LTVModelMeta(
        feature_names=tuple(feature_names),
        config=config,
        scaler=scaler,
        horizon_days=horizon_days,
        train_seconds=time.perf_counter() - started,
        best_epoch=best_epoch,
    )
    return TrainedLTVModel(network, meta)
