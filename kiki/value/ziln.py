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
from scipy import special
from torch import nn
from torch.nn import functional as F

from kiki.value.features import FEATURE_NAMES

MIN_SIGMA = math.sqrt(1e-7)  # Keras' epsilon, as lifetime_value floors the scale
WEIGHTS_FILE = "weights.pt"
META_FILE = "model.json"

Features = pd.DataFrame | npt.NDArray[np.floating]
EpochCallback = Callable[[int, dict[str, float]], None]


class ZILNConfig(BaseModel):
    """Network shape and training schedule (what a hyper-parameter search varies)."""

    model_config = ConfigDict(frozen=True)

    hidden: tuple[int, ...] = (64, 32)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-5, ge=0.0)
    batch_size: int = Field(1024, ge=1)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(20, ge=1)  # epochs without a better validation loss before stopping
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # held out per member without X_val
    members: int = Field(1, ge=1)  # networks averaged, each from its own seed


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
    """log1p, z-score, then clip to the range seen in training, per feature.

    Spend and counts are heavy-tailed and non-negative, and the network trains well only on
    inputs of unit scale. The clip means the network never extrapolates: a customer older, or
    richer, than any training example is scored like the most extreme one seen (as a tree
    model would), not by extending a ReLU's straight line, whose exp(mu) could dwarf every
    other forecast. Kept with the weights.
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
            low=z.min(axis=0).tolist(),
            high=z.max(axis=0).tolist(),
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
    best_epochs: list[int] = []


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


def _quantiles(
    p: np.ndarray, mu: np.ndarray, sigma: np.ndarray, q: float
) -> npt.NDArray[np.float64]:
    """q-quantile per customer of the equal mixture of the members' ZILN distributions (arrays
    are members × customers): 0 while the zero mass covers q. One member has it in closed form,
    the log-normal quantile at the level (q − (1 − p)) / p; several are solved by bisection on
    log spend."""
    zero_mass = (1.0 - p).mean(axis=0)
    if p.shape[0] == 1:
        level = np.clip((q - zero_mass) / np.maximum(p[0], 1e-12), 1e-12, 1.0 - 1e-12)
        value = np.exp(mu[0] + sigma[0] * special.ndtri(level))
    else:
        low, high = (mu - 10 * sigma).min(axis=0), (mu + 10 * sigma).max(axis=0)
        for _ in range(60):
            mid = (low + high) / 2
            cdf = (1.0 - p + p * special.ndtr((mid - mu) / sigma)).mean(axis=0)
            low, high = np.where(cdf < q, mid, low), np.where(cdf < q, high, mid)
        value = np.exp((low + high) / 2)
    return np.where(q > zero_mass, value, 0.0)


class TrainedLTVModel:
    """Fitted ZILN networks (one or an averaged few) with their scaler: predicts spend
    distributions from features."""

    def __init__(self, networks: Sequence[ZILNModel], meta: LTVModelMeta):
        self.networks = [network.eval() for network in networks]
        self.meta = meta

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.meta.feature_names

    @property
    def horizon_days(self) -> int | None:
        return self.meta.horizon_days

    def logits(self, x: Features) -> npt.NDArray[np.float64]:
        """The raw outputs, members × rows × 3 (p logit, mu, pre-softplus sigma)."""
        inputs = torch.from_numpy(self.meta.scaler.transform(_matrix(x, self.feature_names)))
        with torch.no_grad():
            return torch.stack([network(inputs) for network in self.networks]).double().numpy()

    def _distributions(self, x: Features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each member's p, mu and sigma per row (members × rows)."""
        logits = self.logits(x)
        sigma = np.maximum(np.logaddexp(0.0, logits[..., 2]), MIN_SIGMA)
        return special.expit(logits[..., 0]), logits[..., 1], sigma

    @staticmethod
    def _expected(p: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> npt.NDArray[np.float64]:
        return (p * np.exp(mu + 0.5 * sigma**2)).mean(axis=0)

    def expected(self, x: Features) -> npt.NDArray[np.float64]:
        """Expected spend per row alone: what a whole book's scoring reads, without the
        quantiles' bisection (most of `predict`'s time for an ensemble)."""
        return self._expected(*self._distributions(x))

    def predict(self, x: Features) -> dict[str, npt.NDArray[np.float64]]:
        """Per row: p_purchase, expected spend p·exp(mu + sigma²/2), and p10/p50/p90 (members
        averaged as a mixture: the mean of their p and of their expected spend)."""
        p, mu, sigma = self._distributions(x)
        out = {"p_purchase": p.mean(axis=0), "expected": self._expected(p, mu, sigma)}
        for name, q in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9)):
            out[name] = _quantiles(p, mu, sigma, q)
        return out

    def save(self, directory: str | Path) -> Path:
        """Writes weights.pt (a state_dict per member) and model.json (features, config,
        scaler)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        torch.save([network.state_dict() for network in self.networks], path / WEIGHTS_FILE)
        (path / META_FILE).write_text(self.meta.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TrainedLTVModel:
        """Rebuilds a saved model from a local folder (weights_only: no pickled code runs)."""
        path = Path(directory)
        meta = LTVModelMeta.model_validate(json.loads((path / META_FILE).read_text()))
        networks = []
        for state in torch.load(path / WEIGHTS_FILE, weights_only=True):
            network = ZILNModel(len(meta.feature_names), meta.config.hidden, meta.config.dropout)
            network.load_state_dict(state)
            networks.append(network)
        return cls(networks, meta)


def _loss_of(network: ZILNModel, x: torch.Tensor, y: torch.Tensor) -> float:
    network.eval()
    with torch.no_grad():
        return float(ziln_loss(network(x), y))


def _fit_network(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    config: ZILNConfig,
    seed: int,
    report: Callable[[int, float, float], None],
) -> tuple[ZILNModel, int]:
    """One network: Adam on shuffled mini-batches, back to its best validation epoch at the end.
    Returns it with that epoch."""
    (xt, yt), (xv, yv) = train, val
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
        report(epoch, total / len(yt), val_loss)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(network.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    network.load_state_dict(best_state)
    return network.eval(), best_epoch


def _held_out(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A mask of the rows of a random `fraction` of the groups, so rows of one group (the
    stacked cuts of one customer) never sit on both sides of the split."""
    unique = np.unique(groups)
    chosen = np.random.default_rng(seed).choice(
        unique, size=max(1, round(len(unique) * fraction)), replace=False
    )
    return np.isin(groups, chosen)


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
    groups: npt.ArrayLike | None = None,
) -> TrainedLTVModel:
    """Fits `config.members` ZILN networks (seeds seed, seed + 1, …) with Adam, each kept at
    its epoch with the best validation loss. Averaging a few networks steadies the forecast:
    the log-normal mean exp(mu + sigma²/2) swings with small changes in sigma.

    Validation: X_val / y_val when given, shared by all members. Otherwise each member holds
    out its own random `config.val_fraction` of the `groups` (default: of the rows), so that
    together the members learn from every row. `on_epoch(epoch, {"member", "train_loss",
    "val_loss"})` runs after every epoch (how Ray Tune will hear of progress). `horizon_days`,
    the window the labels cover, is recorded with the model. Same seed, same data: same model.
    """
    config = config or ZILNConfig()
    started = time.perf_counter()
    x_all = _matrix(X, feature_names)
    y_all = np.array(y, dtype=np.float64).reshape(-1)  # a copy: torch needs it writable
    scaler = Standardizer.fit(x_all)
    inputs, targets = torch.from_numpy(scaler.transform(x_all)), torch.from_numpy(y_all)
    targets = targets.float()
    if X_val is not None and y_val is not None:
        shared = (
            torch.from_numpy(scaler.transform(_matrix(X_val, feature_names))),
            torch.from_numpy(np.asarray(y_val, np.float32).reshape(-1)),
        )
    group_of = np.arange(len(y_all)) if groups is None else np.asarray(groups)

    networks, best_epochs = [], []
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for member in range(config.members):
            if X_val is not None and y_val is not None:
                train, val = (inputs, targets), shared
            else:
                held = torch.from_numpy(_held_out(group_of, config.val_fraction, seed + member))
                train, val = (inputs[~held], targets[~held]), (inputs[held], targets[held])

            def report(
                epoch: int, train_loss: float, val_loss: float, member: int = member
            ) -> None:
                if on_epoch is not None:
                    metrics = {"member": member, "train_loss": train_loss, "val_loss": val_loss}
                    on_epoch(epoch, metrics)

            network, best_epoch = _fit_network(train, val, config, seed + member, report)
            networks.append(network)
            best_epochs.append(best_epoch)
    finally:
        torch.use_deterministic_algorithms(deterministic)

    meta = LTVModelMeta(
        feature_names=tuple(feature_names),
        config=config,
        scaler=scaler,
        horizon_days=horizon_days,
        train_seconds=time.perf_counter() - started,
        best_epochs=best_epochs,
    )
    return TrainedLTVModel(networks, meta)
