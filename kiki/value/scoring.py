"""Scoring customers' features with the LTV models: the `Scorer` the use cases call, and the
cache of loaded models that every scorer (in-process or a batched Serve deployment) shares."""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

import numpy as np
import pandas as pd

from kiki.artifacts import ArtifactStore
from kiki.value.ziln import TrainedLTVModel


class Scorer(Protocol):
    """The model outputs (`expected`, `p_purchase`, `p10`, `p50`, `p90`) for each row of
    `features`, by the model saved at `artifact_url`."""

    async def score(self, artifact_url: str, features: pd.DataFrame) -> dict[str, np.ndarray]: ...


class ModelCache:
    """Loaded models by artifact URL; a version's files never change once registered."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._models: dict[str, TrainedLTVModel] = {}

    def get(self, artifact_url: str) -> TrainedLTVModel:
        if artifact_url not in self._models:
            self._models[artifact_url] = self.store.load(artifact_url, TrainedLTVModel)
        return self._models[artifact_url]

    def predict_many(self, jobs: list[tuple[str, pd.DataFrame]]) -> list[dict[str, np.ndarray]]:
        """One forward pass per model for all the jobs that use it, split back per job."""
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, (path, _) in enumerate(jobs):
            by_model[path].append(i)
        answers: list[dict[str, np.ndarray]] = [{}] * len(jobs)
        for path, indices in by_model.items():
            frames = [jobs[i][1] for i in indices]
            out = self.get(path).predict(pd.concat(frames, ignore_index=True))
            start = 0
            for i, frame in zip(indices, frames, strict=True):
                answers[i] = {k: v[start : start + len(frame)] for k, v in out.items()}
                start += len(frame)
        return answers


class LocalScorer:
    """In-process scoring, for the app hosted outside Serve (the benchmark baseline)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.cache = ModelCache(store)

    async def score(self, artifact_url: str, features: pd.DataFrame) -> dict[str, np.ndarray]:
        return self.cache.predict_many([(artifact_url, features)])[0]
