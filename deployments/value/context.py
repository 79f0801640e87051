"""What a SyncValue replica works with: the use cases, over whichever scorer hosts the models
(the batched LTVScorer deployment under Serve, in-process otherwise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from actors.resilience import within
from kiki.value.service import ValueService


@dataclass(frozen=True)
class ValueContext:
    value: ValueService


class HandleScorer:
    """Scoring on the LTVScorer deployment, within a deadline."""

    def __init__(self, handle: Any, timeout_s: float) -> None:
        self.handle = handle
        self.timeout_s = timeout_s

    async def score(self, artifact_path: str, features: pd.DataFrame) -> dict[str, np.ndarray]:
        call = self.handle.predict.remote((artifact_path, features))
        return await within(call, self.timeout_s, "the LTV scorer")
