"""What a SyncValue replica works with: the use cases, over whichever scorer hosts the models
(the batched LTVScorer deployment under Serve, in-process otherwise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pandas as pd
from fastapi import Depends
from ray.serve.handle import DeploymentHandle

from actors.resilience import within
from deployments._serve import context_of
from kiki.value.service import ValueService


@dataclass(frozen=True)
class ValueContext:
    value: ValueService


# The routes' dependency: one function, so a test can stand in for it.
value_context = context_of(ValueContext)
Context = Annotated[ValueContext, Depends(value_context)]


class HandleScorer:
    """Scoring on the LTVScorer deployment, within a deadline."""

    def __init__(self, handle: DeploymentHandle, timeout_s: float) -> None:
        self.handle = handle
        self.timeout_s = timeout_s

    async def score(self, artifact_url: str, features: pd.DataFrame) -> dict[str, np.ndarray]:
        call = self.handle.predict.remote((artifact_url, features))
        return await within(call, self.timeout_s, "the LTV scorer")
