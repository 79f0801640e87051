"""The one Ray Tune (ASHA) search both models use: trials sized to the CPUs the cluster has
free and placed wherever it has room, results kept in the artifact store (so trials on any
node write to the same place), the best configuration handed back."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

if TYPE_CHECKING:
    from kiki.artifacts import ArtifactStore

MIN_TRIAL_CPUS = 0.1


def trial_cpus(requested: float | None) -> float:
    """CPUs Ray reserves per trial. Asked for none, take what is free now, split for two
    trials at a time and at most one CPU each: on a small machine the platform's replicas
    and actors hold most CPUs, and whole-CPU trials would wait for ever."""
    if requested is not None:
        return requested
    if ray.is_initialized():
        free = float(ray.available_resources().get("CPU", 0.0))
    else:  # Tune starts a local Ray with every CPU of this machine
        free = float(os.cpu_count() or 1)
    if free < MIN_TRIAL_CPUS:
        raise RuntimeError(
            f"the Ray cluster has {free:.2f} CPUs free, too few for a Tune trial; "
            "stop some apps or pass cpus_per_trial (--cpus-per-trial) explicitly"
        )
    return round(min(1.0, max(MIN_TRIAL_CPUS, free / 2)), 2)


def asha_search(
    trainable: Callable[[dict[str, Any], dict[str, Any]], None],
    data: dict[str, Any],
    space: dict[str, Any],
    *,
    metric: str,
    time_attr: str,
    max_t: int,
    grace_period: int,
    trials: int,
    name: str,
    seed: int = 0,
    storage: ArtifactStore | None = None,
    cpus_per_trial: float | None = None,
) -> dict[str, Any]:
    """Run `trials` samples of `space`, each `trainable(config, data)` reporting `metric`
    (lower is better) against `time_attr`; ASHA stops weak trials after `grace_period`. The
    configurations tried are drawn from `seed`, so a search can be run again.
    Each trial's results stay under the store's `tune/` (result.json, progress.csv); with no
    store, under this machine's temporary folder."""
    if storage is None:
        path, filesystem = str(Path(tempfile.gettempdir()) / "kiki-tune"), None
    else:
        path, filesystem = storage.tune_storage()
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(trainable, data=data), {"cpu": trial_cpus(cpus_per_trial)}
        ),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=metric,
            mode="min",
            num_samples=trials,
            search_alg=BasicVariantGenerator(random_state=seed),
            scheduler=ASHAScheduler(
                time_attr=time_attr, max_t=max_t, grace_period=min(grace_period, max_t)
            ),
        ),
        run_config=tune.RunConfig(
            storage_path=path,
            storage_filesystem=filesystem,
            name=f"{name}-{int(time.time())}",
            verbose=0,
        ),
    )
    best = tuner.fit().get_best_result()
    if best.config is None:
        raise RuntimeError("no Ray Tune trial finished; see the Tune logs")
    return best.config
