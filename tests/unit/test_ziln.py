"""The ZILN model: loss against a direct numpy computation, the predictive distribution,
persistence and a tiny training run on synthetic data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from kiki.value.ziln import (
    LTVModelMeta,
    Standardizer,
    TrainedLTVModel,
    ZILNConfig,
    ZILNModel,
    train_ziln,
    ziln_loss,
)

NAMES = ("x0", "x1", "x2")


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def test_ziln_loss_matches_a_direct_numpy_computation() -> None:
    logits = np.array([[0.5, 1.0, 0.2], [-1.0, 0.0, 1.5], [2.0, 3.0, -0.5], [0.3, -2.0, 0.0]])
    labels = np.array([0.0, 2.5, 20.0, 0.7])
    positive = labels > 0
    bce = np.where(positive, _softplus(-logits[:, 0]), _softplus(logits[:, 0]))
    mu, sigma = logits[:, 1], _softplus(logits[:, 2])
    safe = np.where(positive, labels, 1.0)
    log_pdf = (
        -np.log(safe)
        - np.log(sigma)
        - 0.5 * math.log(2 * math.pi)
        - (np.log(safe) - mu) ** 2 / (2 * sigma**2)
    )
    expected = np.mean(bce - positive * log_pdf)
    loss = ziln_loss(torch.tensor(logits), torch.tensor(labels))
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def _fixed(*members: list[list[float]]) -> TrainedLTVModel:
    """A model whose member m outputs members[m][i] on row i: no hidden layer, the wanted
    logits as weights on a one-hot row index."""
    n = len(members[0])
    networks = []
    for logits in members:
        network = ZILNModel(n, hidden=())
        with torch.no_grad():
            network.net[0].weight.copy_(torch.tensor(logits, dtype=torch.float32).T)
            network.net[0].bias.zero_()
        networks.append(network)
    scaler = Standardizer(mean=[0.0] * n, std=[1.0] * n, low=[-5.0] * n, high=[5.0] * n)
    names = tuple(f"row{i}" for i in range(n))
    config = ZILNConfig(hidden=(), members=len(members))
    return TrainedLTVModel(
        networks, LTVModelMeta(feature_names=names, config=config, scaler=scaler)
    )


def _one_hot(n: int) -> np.ndarray:
    # the scaler takes log1p first, so e − 1 becomes exactly 1 after it
    return np.eye(n) * (math.e - 1.0)


def test_expected_is_p_times_the_lognormal_mean() -> None:
    rows = [[2.0, 1.0, 0.3], [-1.0, 3.0, -1.0], [0.0, 0.5, 2.0]]
    out = _fixed(rows).predict(_one_hot(3))
    for i, (p_logit, mu, s_logit) in enumerate(rows):
        p, sigma = 1 / (1 + math.exp(-p_logit)), math.log1p(math.exp(s_logit))
        assert out["p_purchase"][i] == pytest.approx(p, rel=1e-5)
        assert out["expected"][i] == pytest.approx(p * math.exp(mu + sigma**2 / 2), rel=1e-5)


def test_quantiles_are_ordered_and_zero_where_the_zero_mass_covers_them() -> None:
    sure, coin, rare = math.log(0.95 / 0.05), 0.0, math.log(0.05 / 0.95)  # p = .95, .5, .05
    out = _fixed([[sure, 2.0, 0.0], [coin, 2.0, 0.0], [rare, 2.0, 0.0]]).predict(_one_hot(3))
    assert np.all(out["p10"] <= out["p50"]) and np.all(out["p50"] <= out["p90"])
    assert out["p10"][0] > 0  # 5 % zero mass lies below the 10th percentile
    assert out["p10"][1] == 0 and out["p50"][1] == 0 and out["p90"][1] > 0
    assert out["p90"][2] == 0  # 95 % zero mass covers every quantile
    sigma = math.log1p(1.0)
    lognormal = stats.lognorm(s=sigma, scale=math.exp(2.0))
    assert out["p90"][1] == pytest.approx(lognormal.ppf((0.9 - 0.5) / 0.5), rel=1e-4)
    assert out["p50"][0] == pytest.approx(lognormal.ppf((0.5 - 0.05) / 0.95), rel=1e-4)


def test_several_members_predict_their_mixture() -> None:
    one, other = [[1.0, 2.0, 0.0], [-2.0, 1.0, 0.5]], [[0.0, 3.0, -1.0], [-1.0, 0.0, 1.0]]
    x = _one_hot(2)
    both = _fixed(one, other).predict(x)
    apart = [_fixed(one).predict(x), _fixed(other).predict(x)]
    for key in ("p_purchase", "expected"):
        np.testing.assert_allclose(both[key], (apart[0][key] + apart[1][key]) / 2, rtol=1e-6)
    twins = _fixed(one, one).predict(x)  # two equal members: the single model's quantiles
    for key in ("p10", "p50", "p90"):
        np.testing.assert_allclose(twins[key], apart[0][key], rtol=1e-6)

    def mixture_cdf(value: float, row: int) -> float:
        cdf = 0.0
        for logits in (one, other):
            p_logit, mu, s_logit = logits[row]
            p, sigma = 1 / (1 + math.exp(-p_logit)), math.log1p(math.exp(s_logit))
            cdf += (1 - p) + p * stats.lognorm(s=sigma, scale=math.exp(mu)).cdf(value)
        return cdf / 2

    assert both["p90"][0] > 0
    assert mixture_cdf(both["p90"][0], 0) == pytest.approx(0.9, abs=1e-6)
    assert both["p50"][1] == 0  # both members mostly never buy


def _synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Spend that depends on the features: x0 drives whether, x1 how much."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.exponential(1.0, size=(n, 3)), columns=list(NAMES))
    p = 1 / (1 + np.exp(-(2 * x["x0"].to_numpy() - 2)))
    amount = np.exp(1 + x["x1"].to_numpy() + 0.5 * rng.standard_normal(n))
    return x, np.where(rng.random(n) < p, amount, 0.0)


CONFIG = ZILNConfig(hidden=(16,), max_epochs=15, patience=15, batch_size=256, learning_rate=1e-2)


def test_a_short_training_run_lowers_the_loss_and_is_deterministic() -> None:
    x, y = _synthetic(3000, seed=1)
    losses: list[float] = []
    model = train_ziln(
        x,
        y,
        CONFIG,
        seed=3,
        on_epoch=lambda _, m: losses.append(m["val_loss"]),
        feature_names=NAMES,
    )
    assert len(losses) == CONFIG.max_epochs
    assert min(losses) < losses[0] - 0.1
    again = train_ziln(x, y, CONFIG, seed=3, feature_names=NAMES)
    np.testing.assert_array_equal(model.predict(x)["expected"], again.predict(x)["expected"])
    ranked = model.predict(x)["p_purchase"]
    assert np.corrcoef(ranked, x["x0"])[0, 1] > 0.5  # it learnt who comes back


def test_save_and_load_give_identical_predictions(tmp_path: Path) -> None:
    x, y = _synthetic(500, seed=2)
    config = CONFIG.model_copy(update={"max_epochs": 2, "members": 2})
    model = train_ziln(x, y, config, feature_names=NAMES, horizon_days=30)
    loaded = TrainedLTVModel.load(model.save(tmp_path / "ltv"))
    assert (loaded.feature_names, loaded.horizon_days, len(loaded.networks)) == (NAMES, 30, 2)
    before, after = model.predict(x), loaded.predict(x)
    for key in ("p_purchase", "expected", "p10", "p50", "p90"):
        np.testing.assert_array_equal(before[key], after[key])


def test_missing_feature_columns_are_refused() -> None:
    x, y = _synthetic(200, seed=4)
    model = train_ziln(x, y, CONFIG.model_copy(update={"max_epochs": 1}), feature_names=NAMES)
    with pytest.raises(ValueError, match="x2"):
        model.predict(x.drop(columns="x2"))
